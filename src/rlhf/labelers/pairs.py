"""Comparisons from sampled responses: each prompt's k responses form k // 2 disjoint pairs, and a
labeler decides each pair.

A labeler is named by `--label`: a registered name (`rlhf.labelers.registry`, where `rlhf.demo`
registers its oracle, which so stays in `rlhf.demo`) or any scorer (`module:function` or a
reward-model directory), whose higher score wins; a pair the scorer scores equal says nothing
about which is better, so it is skipped and counted, never labelled as if the first response had
won.
"""

from __future__ import annotations

from ..data.records import prompt_as_json
from ..rollout.scorers import load_callable, load_scorer
from .registry import build_labeler, is_registered

# `prefix:SPEC` -> `module:function` taking (SPEC, device) and returning an object with
# prefer(prompts, a, b) -> [0 | 1 | None (a tie)]: `judge:DIR` or `judge:URL?model=NAME` (the AI judge)
LABELER_PREFIXES = {"judge": "rlhf.labelers.judge:labeler"}


def is_named_labeler(label: str) -> bool:
    """True for a registered name (`oracle`) or a registered `prefix:SPEC` (`judge:...`), not a scorer."""
    return is_registered(label) or label.partition(":")[0] in LABELER_PREFIXES


def load_labeler(label: str, oracle_temperature: float, seed: int, device="cpu"):
    """The labeler a registered name or prefix names (see is_named_labeler)."""
    if is_registered(label):
        return build_labeler(label, oracle_temperature, seed)
    prefix, _, spec = label.partition(":")
    return load_callable(LABELER_PREFIXES[prefix])(spec, device)


def label_pairs(prompts: list, responses: list[list[str]], label: str, oracle_temperature: float, seed: int,
                device="cpu") -> tuple[list[dict], int]:
    """(comparisons `{"prompt", "chosen", "rejected"}`, ties skipped) from k responses per prompt,
    labelled by `label`; pairs a scorer scores equal are the ties, left out of the comparisons."""
    pairs = [(p, rs[j], rs[j + 1]) for p, rs in zip(prompts, responses) for j in range(0, len(rs) - 1, 2)]
    firsts, seconds = [a for _, a, _ in pairs], [b for _, _, b in pairs]
    texts = [p for p, _, _ in pairs]
    if is_named_labeler(label):
        labeler = load_labeler(label, oracle_temperature, seed, device)
        picks = labeler.prefer(texts, firsts, seconds)  # 0: a preferred; None: a tie
    else:
        scorer = load_scorer(label, device)
        score_a, score_b = scorer(texts, firsts), scorer(texts, seconds)
        picks = [None if a == b else 0 if a > b else 1 for a, b in zip(score_a.tolist(), score_b.tolist())]
    rows = [{"prompt": prompt_as_json(p), "chosen": a if pick == 0 else b, "rejected": b if pick == 0 else a}
            for (p, a, b), pick in zip(pairs, picks) if pick is not None]
    return rows, len(pairs) - len(rows)
