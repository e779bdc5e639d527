"""Data preparation for the reward-model experiments of the README ("Reward models").

    python scripts/rm_data.py split  HH.jsonl.gz OUT_DIR [--val 200 --seed 0]   # OUT_DIR/{train,val}.jsonl
    python scripts/rm_data.py folds  HH.jsonl.gz OUT_DIR [--k 5 --seed 0]       # OUT_DIR/fold-I/{train,val}.jsonl
    python scripts/rm_data.py corpus HH.jsonl.gz OUT.jsonl                       # chat-format text for `rlhf pretrain`
    python scripts/rm_data.py pandalm testset-v1.json OUT.jsonl [--unanimous]     # PandaLM pairs as comparisons

split: a seeded split of comparison rows, to choose hyperparameters on `val` and never on a
set reported as held out.
folds: k-fold cross-validation of the same rows: each row is in exactly one fold's `val`, so
pooling the k held-out scores measures a setting on every row (a 200-row `val` is +-0.07).
corpus: every chosen and every rejected transcript as one document {"text"}, written in the
chat format of the embedded default tokenizer (`<|user|>\\n...<|end|><|assistant|>\\n...<|end|>`,
`rlhf.models.tiny.CHAT_TEMPLATE`), so a model pretrained on it has seen exactly the layout that
`rlhf sft` and `rlhf rm` feed it.
pandalm: PandaLM's human-labelled test set as comparisons for `rlhf eval rm`: the prompt is one
user turn (instruction, then the input if any, separated by a blank line); the label is the
majority of the three annotators (6 responses stored as JSON booleans or numbers become text, "True"); pairs whose majority is a tie (0), or that have no majority,
are left out (their count is printed). With --unanimous, only pairs all three agree on.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rlhf.data.formats import read_comparisons  # noqa: E402
from rlhf.data.records import is_conversation  # noqa: E402


def _rows(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line for line in f if line.strip()]


def split(args) -> None:
    rows = _rows(Path(args.data))
    random.Random(args.seed).shuffle(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "val.jsonl").write_text("".join(rows[: args.val]), encoding="utf-8")
    (out / "train.jsonl").write_text("".join(rows[args.val :]), encoding="utf-8")
    print(f"{len(rows) - args.val} train, {args.val} val rows -> {out}")


def folds(args) -> None:
    rows = _rows(Path(args.data))
    random.Random(args.seed).shuffle(rows)
    for i in range(args.k):
        out = Path(args.out) / f"fold-{i}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "val.jsonl").write_text("".join(rows[i :: args.k]), encoding="utf-8")
        (out / "train.jsonl").write_text("".join(r for j, r in enumerate(rows) if j % args.k != i), encoding="utf-8")
    print(f"{len(rows)} rows in {args.k} folds -> {args.out}/fold-0..{args.k - 1}")


def chat_text(messages) -> str:
    """Messages in the embedded default's chat format (each turn closed by <|end|>)."""
    return "".join(f"<|{m.role}|>\n{m.content}<|end|>" for m in messages)


def corpus(args) -> None:
    from rlhf.data.records import Message

    documents = []
    for pair in read_comparisons(args.data):
        if not is_conversation(pair.prompt):
            raise ValueError("corpus expects conversational comparisons (HH transcripts)")
        for reply in (pair.chosen, pair.rejected):
            documents.append(chat_text(pair.prompt + (Message("assistant", reply),)))
    Path(args.out).write_text("".join(json.dumps({"text": d}) + "\n" for d in documents), encoding="utf-8")
    print(f"{len(documents)} documents, {sum(map(len, documents)):,} characters -> {args.out}")


def pandalm(args) -> None:
    records = json.loads(Path(args.data).read_text(encoding="utf-8"))
    kept, dropped = [], collections.Counter()
    for r in records:
        votes = collections.Counter(r[f"annotator{i}"] for i in (1, 2, 3))
        label, count = votes.most_common(1)[0]
        if args.unanimous and count < 3:
            dropped["not unanimous"] += 1
            continue
        if count < 2 or label == 0:
            dropped["tie" if label == 0 and count >= 2 else "no majority"] += 1
            continue
        prompt = r["instruction"] + (f"\n\n{r['input']}" if r["input"].strip() else "")
        # 6 responses are stored as JSON true/false/numbers (a model that answered "True"): kept as text.
        first, second = (x if isinstance(x, str) else str(x) for x in (r["response1"], r["response2"]))
        better, worse = (first, second) if label == 1 else (second, first)
        kept.append({"prompt": [{"role": "user", "content": prompt}], "chosen": better, "rejected": worse,
                     "idx": r["idx"]})
    Path(args.out).write_text("".join(json.dumps(k) + "\n" for k in kept), encoding="utf-8")
    print(f"{len(kept)} pairs -> {args.out}; left out: {dict(dropped)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split")
    s.add_argument("data"), s.add_argument("out")
    s.add_argument("--val", type=int, default=200), s.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("folds")
    f.add_argument("data"), f.add_argument("out")
    f.add_argument("--k", type=int, default=5), f.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("corpus")
    c.add_argument("data"), c.add_argument("out")
    d = sub.add_parser("pandalm")
    d.add_argument("data"), d.add_argument("out"), d.add_argument("--unanimous", action="store_true")
    args = p.parse_args(argv)
    {"split": split, "folds": folds, "corpus": corpus, "pandalm": pandalm}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
