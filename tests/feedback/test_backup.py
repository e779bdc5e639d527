"""`rlhf label backup` / `rlhf label restore`: every label, annotator and lineage row comes back
(SQLite through its online backup API; PostgreSQL through pg_dump/pg_restore when RLHF_TEST_PG_URL
names one)."""

from __future__ import annotations

import json

import pytest
from feedback_helpers import PG_URL, write_jsonl
from sqlalchemy import select

from rlhf.config.feedback import LabelBackupConfig, LabelRestoreConfig
from rlhf.feedback import backup, repo
from rlhf.feedback.importer import import_file
from rlhf.feedback.store import make_engine
from rlhf.feedback.tables import Base


def fill(sessions, tmp_path) -> None:
    """Two projects, labels by two annotators, a training round that read some of them."""
    rows = [{"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i} <b>x</b>"} for i in range(5)]
    with sessions() as s:
        for name, who in (("alpha", "ann"), ("beta", "bob")):
            project = repo.create_project(s, name, "pairwise")
            import_file(s, project, write_jsonl(tmp_path / f"{name}.jsonl", rows), labels_as="annotator", annotator=who)
        s.commit()
        alpha = repo.project_by_name(s, "alpha")
        labels = [(label.id, alpha.id, True) for label in repo.live_labels(s, alpha)]
        repo.record_round(s, "series", 1, "/runs/round1", "/runs/round1/model", "/runs/sft/model", "dpo",
                          {"win_rate": 0.6}, labels)
        s.commit()


def every_row(url: str) -> dict[str, list[tuple]]:
    engine = make_engine(url)
    with engine.connect() as c:
        rows = {t.name: sorted(map(tuple, c.execute(select(t)).all()), key=repr) for t in Base.metadata.sorted_tables}
    engine.dispose()
    return rows


def test_backup_and_restore_bring_back_every_row(sessions, db_url, tmp_path, capsys):
    fill(sessions, tmp_path)
    before = every_row(db_url)
    assert len(before["labels"]) == 10 and len(before["annotators"]) == 2 and len(before["round_labels"]) == 5
    out = tmp_path / ("labels.dump" if PG_URL else "labels-backup.db")
    backup.run(LabelBackupConfig(out=str(out), db=db_url))
    assert "labels" in capsys.readouterr().out
    if PG_URL:  # restore over the emptied database
        engine = make_engine(PG_URL)
        Base.metadata.drop_all(engine)
        engine.dispose()
        target = PG_URL
    else:
        target = str(tmp_path / "restored" / "feedback.db")
    backup.run(LabelRestoreConfig(backup=str(out), db=target))
    assert every_row(target) == before


def test_a_store_with_labels_is_not_overwritten_unless_asked(sessions, db_url, tmp_path):
    if PG_URL:
        pytest.skip("SQLite only: the PostgreSQL round trip above restores over an emptied database")
    fill(sessions, tmp_path)
    out = tmp_path / "b.db"
    backup.run(LabelBackupConfig(out=str(out), db=db_url))
    with pytest.raises(FileExistsError, match="exists"):
        backup.run(LabelBackupConfig(out=str(out), db=db_url))
    with pytest.raises(FileExistsError, match="already holds"):
        backup.run(LabelRestoreConfig(backup=str(out), db=db_url))
    backup.run(LabelRestoreConfig(backup=str(out), db=db_url, overwrite=True))
    assert json.dumps(every_row(db_url), default=str) == json.dumps(every_row(str(out)), default=str)
