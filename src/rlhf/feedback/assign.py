"""Which task an annotator labels next: the rules as a pure function, and the same order as
a SQL expression so that the database hands over only the front of the queue.

Rules, in order:
- never a task the annotator has already answered or skipped (undone answers don't count);
- a regular task only while fewer than `overlap` distinct annotators have answered it;
- a gold task (known answer) whenever the annotator's share of gold answers is below
  `gold_share`, or when no regular task is left: gold items measure every annotator, so
  overlap does not cap them;
- among regular tasks, the one closest to its overlap first (finish tasks before opening new
  ones, so a full set of overlapping labels exists early), then an order private to each
  annotator (`spread`) so that people working at the same time spread over different tasks
  instead of colliding on the lowest id.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy

# spread(a, t) = (t * A + a * B) mod P: a cheap, stable pseudo-random order that differs per
# annotator; small enough for 64-bit integer arithmetic in SQLite and PostgreSQL alike.
_A, _B, _P = 2654435761, 40503, 1000003


@dataclass(frozen=True)
class TaskState:
    task_id: int
    is_gold: bool
    answers: int  # distinct annotators with a live, non-skip label on the task


def spread(annotator_id: int, task_id: int) -> int:
    """A stable pseudo-random order of tasks, different for each annotator."""
    return (task_id * _A + annotator_id * _B) % _P


def spread_sql(annotator_id: int, task_id_column):
    """`spread` as a SQL expression over a task id column (the database sorts by it); 64-bit
    throughout, as PostgreSQL would otherwise overflow a 32-bit integer."""
    big = sqlalchemy.BigInteger
    return (sqlalchemy.cast(task_id_column, big) * sqlalchemy.literal(_A, big)
            + sqlalchemy.literal(annotator_id * _B, big)) % sqlalchemy.literal(_P, big)


def choose_task(states: list[TaskState], annotator_id: int, seen: set[int], gold_answered: int,
                answered: int, overlap: int, gold_share: float) -> int | None:
    """The id of the next task for `annotator_id`, or None when nothing is left.

    states: the candidate tasks (all of them, or at least the front of each queue in order);
    seen: task ids the annotator answered or skipped; answered / gold_answered: how many of the
    annotator's live answers there are in all / on gold tasks."""
    open_tasks = [t for t in states if t.task_id not in seen]
    gold = [t for t in open_tasks if t.is_gold]
    regular = [t for t in open_tasks if not t.is_gold and t.answers < overlap]
    wants_gold = gold and gold_share > 0 and gold_answered < gold_share * (answered + 1)
    if gold and (wants_gold or not regular):
        return min(gold, key=lambda t: spread(annotator_id, t.task_id)).task_id
    if not regular:
        return None
    return min(regular, key=lambda t: (-t.answers, spread(annotator_id, t.task_id))).task_id
