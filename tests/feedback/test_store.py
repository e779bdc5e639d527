"""The store: Alembic builds exactly the models' schema, SQLite runs in WAL mode, labels are
idempotent by request id, undo keeps the withdrawn label, and a training round reads every label
no earlier round of its series read."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from feedback_helpers import PG_URL

from rlhf.feedback import repo
from rlhf.feedback.store import database_url, migrate
from rlhf.feedback.tables import Base, Label


def test_migrations_build_the_models_schema(sessions):
    engine = sessions.kw["bind"]
    migrate(engine)  # a second run is a no-op
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"tables.py and the migrations disagree: {diff}"


@pytest.mark.skipif(bool(PG_URL), reason="SQLite only")
def test_sqlite_runs_in_wal_mode(sessions, tmp_path):
    with sessions.kw["bind"].connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "feedback.db").exists()
    assert database_url("x/y.db").startswith("sqlite:////") and database_url("postgresql://h/db") == "postgresql://h/db"


def _project_with_tasks(s, n=3):
    project = repo.create_project(s, "p", "pairwise", overlap=2)
    tasks = [repo.add_task(s, project, repo.add_prompt(s, project, f"q{i}", [("x", "m1"), ("y", "m2")]))
             for i in range(n)]
    alice = repo.annotator_by_name(s, project, "alice", create=True)
    s.commit()
    return project, tasks, alice


def test_a_retried_request_stores_one_label(sessions):
    with sessions() as s:
        project, (task, *_), alice = _project_with_tasks(s)
        first, created = repo.save_label(s, alice, task, "req-0001", outcome="win", winner_id=task.response_ids[0])
        again, created_again = repo.save_label(s, alice, task, "req-0001", outcome="tie")
        assert created and not created_again and again.id == first.id and again.outcome == "win"
        assert len(repo.live_labels(s, project)) == 1


def test_undo_withdraws_the_newest_label_and_keeps_it(sessions):
    with sessions() as s:
        project, tasks, alice = _project_with_tasks(s)
        for i, task in enumerate(tasks[:2]):
            repo.save_label(s, alice, task, f"req-{i:04d}", outcome="tie")
        undone = repo.undo_last(s, alice)
        assert undone.task_id == tasks[1].id and undone.undone_at is not None
        assert [l.task_id for l in repo.live_labels(s, project)] == [tasks[0].id]
        assert s.query(Label).count() == 2  # kept, marked undone
        # the undone task is open to alice again
        q = repo.queue(s, alice, project)
        assert q.seen == {tasks[0].id} and q.left == 2 and repo.can_open(s, alice, tasks[1])


def test_a_label_committed_out_of_id_order_is_read_by_the_next_round(sessions):
    # On PostgreSQL the label with id 1 can commit after a round already read id 2 (two annotators'
    # transactions); "id above the watermark" would skip it for good, "not read by any round" does not
    with sessions() as s:
        project, tasks, alice = _project_with_tasks(s)
        late, early, third = (repo.save_label(s, alice, task, f"req-{i:04d}", outcome="win",
                                              winner_id=task.response_ids[0])[0] for i, task in enumerate(tasks))
        assert [l.id for l in repo.labels_unread(s, project, "series")] == [late.id, early.id, third.id]
        repo.record_round(s, "series", 1, "runs/r1", "p1", "p0", "dpo", None, [(early.id, project.id, True)])
        s.commit()
        assert repo.watermarks(s, "series") == {project.id: early.id}
        assert [l.id for l in repo.labels_unread(s, project, "series")] == [late.id, third.id]
        assert [l.id for l in repo.labels_unread(s, project, "another")] == [late.id, early.id, third.id]


def test_admin_token_is_shown_once_and_stored_hashed(sessions):
    with sessions() as s:
        token = repo.issue_admin_token(s)
        assert repo.issue_admin_token(s) is None and repo.is_admin(s, token)
        assert token not in repo.setting(s, repo.ADMIN_TOKEN)
        rotated = repo.issue_admin_token(s, rotate=True)
        assert repo.is_admin(s, rotated) and not repo.is_admin(s, token) and not repo.is_admin(s, None)


def test_opening_the_store_logs_no_alembic_info(tmp_path, caplog):
    """Issue 27 item 8: under a server's INFO logging, Alembic's "Context impl SQLiteImpl." and
    "Will assume non-transactional DDL." printed at every start."""
    import logging

    from rlhf.feedback.store import open_store

    caplog.set_level(logging.INFO)
    open_store(str(tmp_path / "new.db"))  # creates the schema
    open_store(str(tmp_path / "new.db"))  # already at head
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []
    assert logging.getLogger("alembic").level == logging.NOTSET  # restored: the app's own settings stand


def test_a_server_logging_at_info_prints_no_alembic_line_at_start(tmp_path):
    """Alembic's plugin set-up logs seven INFO lines ("setup plugin alembic.autogenerate...") when it is
    imported: a server that configured INFO logging first (rlhf serve --db) printed them at start."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from rlhf.feedback.store import open_store\n"
            f"open_store({str(tmp_path / 'new.db')!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "alembic" not in done.stderr and (tmp_path / "new.db").exists()
