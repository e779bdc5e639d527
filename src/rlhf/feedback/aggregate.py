"""From the labels of each task to training examples: the aggregation rules, as pure functions.

A `Vote` is one live answer. Rules:

- every: each answer is its own example (ties and both-bad give no comparison);
- majority: one example per task, from the answer most annotators gave, when it is unique,
  has at least `min_votes` votes counted, and holds at least `min_agreement` of them. Tie and
  both-bad votes are counted as "no preference", which can win (then no example) and lowers the
  winner's agreement; `drop_ties` leaves them out of the count instead.
  A ranking's majority is the Borda order (mean position, ties broken by stored order); its
  agreement is the mean share of response pairs each vote orders the same way.

Annotators can be left out beforehand by their accuracy on gold items (`gold_accuracy`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations

NO_PREFERENCE = ("tie", "both_bad")


@dataclass(frozen=True)
class Vote:
    task_id: int
    annotator_id: int
    outcome: str  # win | tie | both_bad | ranking | thumbs
    winner_id: int | None = None
    strength: int | None = None  # 1 slightly, 2 better, 3 much better
    ranking: tuple[int, ...] | None = None  # response ids, best first
    thumbs: bool | None = None


@dataclass(frozen=True)
class Pair:
    task_id: int
    chosen: int  # response id
    rejected: int
    strength: float  # mean strength of the votes behind it (1 when none was given)


def answer_key(answer) -> object:
    """What two answers must share to agree: the winner, "none" for tie/both-bad, the ranking
    or the thumb. Works on Votes and on gold dicts (label-shaped)."""
    get = answer.get if isinstance(answer, dict) else lambda k: getattr(answer, k)
    outcome = get("outcome")
    if outcome == "win":
        return ("win", get("winner_id"))
    if outcome in NO_PREFERENCE:
        return ("none",)
    if outcome == "ranking":
        return ("ranking", tuple(get("ranking")))
    return ("thumbs", bool(get("thumbs")))


def category(vote: Vote, response_ids: list[int]) -> object:
    """The answer as a category comparable across tasks, for agreement statistics: positions
    in the task's stored order instead of response ids (which differ on every task, so would
    make chance agreement vanish and kappa equal raw agreement)."""
    key = answer_key(vote)
    if key[0] == "win":
        return ("win", response_ids.index(key[1]))
    if key[0] == "ranking":
        return ("ranking", tuple(response_ids.index(r) for r in key[1]))
    return key


def gold_accuracy(votes: list[Vote], gold: dict[int, dict]) -> dict[int, tuple[int, int]]:
    """annotator id -> (answers agreeing with gold, gold answers given)."""
    out: dict[int, list[int]] = {}
    for v in votes:
        if v.task_id in gold:
            right_total = out.setdefault(v.annotator_id, [0, 0])
            right_total[0] += answer_key(v) == answer_key(gold[v.task_id])
            right_total[1] += 1
    return {a: (r, t) for a, (r, t) in out.items()}


def trusted(votes: list[Vote], gold: dict[int, dict], min_accuracy: float) -> list[Vote]:
    """Votes of annotators whose gold accuracy is at least `min_accuracy` (or who answered no gold)."""
    if min_accuracy <= 0:
        return votes
    accuracy = gold_accuracy(votes, gold)
    bad = {a for a, (right, total) in accuracy.items() if right / total < min_accuracy}
    return [v for v in votes if v.annotator_id not in bad]


def _by_task(votes: list[Vote]) -> dict[int, list[Vote]]:
    out: dict[int, list[Vote]] = {}
    for v in votes:
        out.setdefault(v.task_id, []).append(v)
    return out


def _majority(keys: list, min_votes: int, min_agreement: float):
    """The unique most common key meeting both thresholds, else None."""
    if len(keys) < min_votes or not keys:
        return None
    (top, n), *rest = Counter(keys).most_common() + [(None, 0)]
    if rest[0][1] == n or n / len(keys) < min_agreement:
        return None
    return top


def pairs(votes: list[Vote], tasks: dict[int, list[int]], rule: str, drop_ties: bool = False,
          min_agreement: float = 0.0, min_votes: int = 1) -> list[Pair]:
    """Comparisons from pairwise votes; `tasks` maps task id -> its two response ids."""
    def loser(task_id, winner):
        return next(r for r in tasks[task_id] if r != winner)

    wins = [v for v in votes if v.outcome == "win"]
    if rule == "every":
        return [Pair(v.task_id, v.winner_id, loser(v.task_id, v.winner_id), float(v.strength or 1)) for v in wins]
    out = []
    for task_id, task_votes in sorted(_by_task(votes).items()):
        counted = [v for v in task_votes if v.outcome == "win" or (v.outcome in NO_PREFERENCE and not drop_ties)]
        top = _majority([answer_key(v) for v in counted], min_votes, min_agreement)
        if top is None or top[0] != "win":
            continue
        behind = [v.strength or 1 for v in counted if answer_key(v) == top]
        out.append(Pair(task_id, top[1], loser(task_id, top[1]), sum(behind) / len(behind)))
    return out


def thumbs(votes: list[Vote], tasks: dict[int, list[int]], rule: str, min_agreement: float = 0.0,
           min_votes: int = 1) -> list[tuple[int, int, bool]]:
    """(task id, response id, label) from thumbs votes."""
    ups = [v for v in votes if v.outcome == "thumbs"]
    if rule == "every":
        return [(v.task_id, tasks[v.task_id][0], bool(v.thumbs)) for v in ups]
    out = []
    for task_id, task_votes in sorted(_by_task(ups).items()):
        top = _majority([answer_key(v) for v in task_votes], min_votes, min_agreement)
        if top is not None:
            out.append((task_id, tasks[task_id][0], top[1]))
    return out


def borda(rankings: list[tuple[int, ...]], order: list[int]) -> tuple[int, ...]:
    """Responses by mean position over the rankings (best first); ties keep `order`."""
    position = {r: sum(rk.index(r) for rk in rankings) for r in order}
    return tuple(sorted(order, key=lambda r: (position[r], order.index(r))))


def concordance(ranking: tuple[int, ...], reference: tuple[int, ...]) -> float:
    """Share of response pairs that `ranking` orders as `reference` does."""
    pairs_ = list(combinations(reference, 2))
    return sum(ranking.index(a) < ranking.index(b) for a, b in pairs_) / len(pairs_)


def rankings(votes: list[Vote], tasks: dict[int, list[int]], rule: str, min_agreement: float = 0.0,
             min_votes: int = 1) -> list[tuple[int, tuple[int, ...]]]:
    """(task id, response ids best first) from ranking votes."""
    ranked = [v for v in votes if v.outcome == "ranking"]
    if rule == "every":
        return [(v.task_id, tuple(v.ranking)) for v in ranked]
    out = []
    for task_id, task_votes in sorted(_by_task(ranked).items()):
        if len(task_votes) < min_votes:
            continue
        consensus = borda([tuple(v.ranking) for v in task_votes], tasks[task_id])
        agreement = sum(concordance(tuple(v.ranking), consensus) for v in task_votes) / len(task_votes)
        if agreement >= min_agreement:
            out.append((task_id, consensus))
    return out
