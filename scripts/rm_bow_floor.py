"""The bag-of-words floor for the reward-model tables of docs/benchmarks.md: TF-IDF of the two
answers (1-2 grams; the vectoriser fitted on the training answers only), a logistic regression
on the difference of the two vectors (each pair seen in both orders, so there is no bias term to
learn), a pair scored right when the chosen answer's score is higher.

    python scripts/rm_bow_floor.py TRAIN.jsonl.gz DEV.jsonl.gz [--ngrams 2 --c 1.0]   # fit on train, score dev
    python scripts/rm_bow_floor.py TRAIN.jsonl.gz --folds 5 [--seed 0]                # pooled k-fold CV on train

The folds are those of `scripts/rm_data.py folds` (the same seeded shuffle, row i in fold i mod k).
Needs scikit-learn.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rlhf.data.formats import read_comparisons  # noqa: E402


def accuracy(train, test, ngrams: int, c: float) -> tuple[int, int]:
    """(pairs of `test` scored right, pairs) after fitting on `train`."""
    from scipy.sparse import vstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectoriser = TfidfVectorizer(ngram_range=(1, ngrams), sublinear_tf=True, min_df=1)
    vectoriser.fit([p.chosen for p in train] + [p.rejected for p in train])
    diff = vectoriser.transform([p.chosen for p in train]) - vectoriser.transform([p.rejected for p in train])
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=2000)
    model.fit(vstack([diff, -diff]), [1] * len(train) + [0] * len(train))
    test_diff = vectoriser.transform([p.chosen for p in test]) - vectoriser.transform([p.rejected for p in test])
    return int((model.decision_function(test_diff) > 0).sum()), len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train")
    parser.add_argument("dev", nargs="?")
    parser.add_argument("--folds", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ngrams", type=int, default=2)
    parser.add_argument("--c", type=float, default=1.0)
    args = parser.parse_args()
    train = list(read_comparisons(args.train))
    if args.folds:
        order = list(range(len(train)))  # rm_data.py folds shuffles the rows with this seed
        random.Random(args.seed).shuffle(order)
        rows = [train[i] for i in order]
        right = 0
        for k in range(args.folds):
            fit = [r for j, r in enumerate(rows) if j % args.folds != k]
            held = rows[k :: args.folds]
            right += accuracy(fit, held, args.ngrams, args.c)[0]
        print(f"{args.folds}-fold CV on {len(rows)} pairs: {right / len(rows):.3f}")
    if args.dev:
        right, n = accuracy(train, list(read_comparisons(args.dev)), args.ngrams, args.c)
        print(f"dev: {right}/{n} = {right / n:.3f}")


if __name__ == "__main__":
    main()
