"""Aggregation rules and task assignment: pure functions on small hand-made cases."""

from rlhf.feedback.aggregate import Vote, borda, category, concordance, gold_accuracy, pairs, rankings, thumbs, trusted
from rlhf.feedback.assign import TaskState, choose_task, spread, spread_sql

TASKS = {1: [10, 11], 2: [20, 21]}


def win(task, annotator, winner, strength=2):
    return Vote(task, annotator, "win", winner_id=winner, strength=strength)


def tie(task, annotator):
    return Vote(task, annotator, "tie")


def test_majority_every_and_ties():
    votes = [win(1, 1, 10, 3), win(1, 2, 10, 1), win(1, 3, 11), win(2, 1, 20), tie(2, 2), Vote(2, 3, "both_bad")]
    majority = pairs(votes, TASKS, "majority")
    assert [(p.task_id, p.chosen, p.rejected, p.strength) for p in majority] == [(1, 10, 11, 2.0)]
    # with ties left out of the count, task 2 has one vote and it wins
    dropped = pairs(votes, TASKS, "majority", drop_ties=True)
    assert [(p.task_id, p.chosen) for p in dropped] == [(1, 10), (2, 20)]
    assert len(pairs(votes, TASKS, "every")) == 4  # four wins, ties give no comparison
    # task 1 agrees 2/3: kept at 0.6, dropped at 0.7; min_votes 4 drops everything
    assert len(pairs(votes, TASKS, "majority", min_agreement=0.6)) == 1
    assert pairs(votes, TASKS, "majority", min_agreement=0.7) == []
    assert pairs(votes, TASKS, "majority", min_votes=4) == []


def test_a_split_vote_has_no_majority():
    assert pairs([win(1, 1, 10), win(1, 2, 11)], TASKS, "majority") == []


def test_gold_accuracy_and_trusted_annotators():
    gold = {1: {"outcome": "win", "winner_id": 10}, 2: {"outcome": "tie"}}
    votes = [win(1, 1, 10), Vote(2, 1, "both_bad"), win(1, 2, 11), tie(2, 2), win(1, 3, 10)]
    assert gold_accuracy(votes, gold) == {1: (2, 2), 2: (1, 2), 3: (1, 1)}
    assert {v.annotator_id for v in trusted(votes + [win(9, 4, 1)], gold, 0.75)} == {1, 3, 4}  # 4 has no gold: kept


def test_thumbs_and_rankings():
    ups = [Vote(1, a, "thumbs", thumbs=t) for a, t in ((1, True), (2, True), (3, False))]
    assert thumbs(ups, {1: [10]}, "majority") == [(1, 10, True)]
    assert len(thumbs(ups, {1: [10]}, "every")) == 3
    # Borda: positions summed over (10,11,12), (11,10,12), (10,12,11) -> 10:1, 11:3, 12:4
    ranked = [Vote(5, a, "ranking", ranking=r) for a, r in ((1, (10, 11, 12)), (2, (11, 10, 12)), (3, (10, 12, 11)))]
    assert borda([v.ranking for v in ranked], [10, 11, 12]) == (10, 11, 12)
    assert concordance((11, 10, 12), (10, 11, 12)) == 2 / 3
    assert rankings(ranked, {5: [10, 11, 12]}, "majority") == [(5, (10, 11, 12))]
    assert rankings(ranked, {5: [10, 11, 12]}, "majority", min_agreement=0.9) == []  # mean concordance 7/9


def test_assignment_fills_overlap_and_mixes_in_gold():
    states = [TaskState(1, False, 1), TaskState(2, False, 0), TaskState(3, True, 0)]
    # the task one short of its overlap goes first
    assert choose_task(states, 5, set(), 0, 0, overlap=2, gold_share=0.0) == 1
    # with overlap 1 task 1 is full; no gold wanted yet at share 0 -> task 2
    assert choose_task(states, 5, set(), 0, 0, overlap=1, gold_share=0.0) == 2
    # a gold share of 0.5 and no gold answered yet -> the gold task
    assert choose_task(states, 5, set(), 0, 0, overlap=1, gold_share=0.5) == 3
    # seen tasks never come back; with nothing regular left gold is served; then nothing
    assert choose_task(states, 5, {2}, 0, 1, overlap=1, gold_share=0.0) == 3
    assert choose_task(states, 5, {2, 3}, 0, 1, overlap=1, gold_share=0.0) is None


def test_concurrent_annotators_spread_over_tasks():
    states = [TaskState(i, False, 0) for i in range(100)]
    firsts = {choose_task(states, a, set(), 0, 0, overlap=1, gold_share=0) for a in range(20)}
    assert len(firsts) >= 15  # a private order per annotator, not everyone on task 0


def test_agreement_categories_are_positions_not_ids():
    # response ids differ on every task; kappa needs categories shared across tasks
    assert category(win(1, 1, 10), [10, 11]) == category(win(2, 1, 20), [20, 21]) == ("win", 0)
    assert category(tie(1, 1), [10, 11]) == category(Vote(1, 2, "both_bad"), [10, 11]) == ("none",)
    assert category(Vote(5, 1, "ranking", ranking=(12, 10, 11)), [10, 11, 12]) == ("ranking", (2, 0, 1))


def test_the_sql_order_is_the_python_order():
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://")
    with engine.connect() as c:
        ids = sa.column("id")
        query = sa.select(ids).select_from(sa.text("(WITH RECURSIVE r(id) AS (SELECT 1 UNION ALL SELECT id + 1 "
                                                   "FROM r WHERE id < 500) SELECT id FROM r)"))
        for annotator in (1, 7, 12345):
            in_sql = [row[0] for row in c.execute(query.order_by(spread_sql(annotator, ids)))]
            assert in_sql == sorted(range(1, 501), key=lambda t: spread(annotator, t))
