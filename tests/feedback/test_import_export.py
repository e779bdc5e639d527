"""`rlhf label import` and `rlhf label export`: every kind of file in, files the toolkit's
readers (what `rlhf rm`, `rlhf dpo` and `--loss kto` read) accept out."""

import gzip
import json
from pathlib import Path

import pytest
from feedback_helpers import candidates, write_jsonl

from rlhf.cli import main
from rlhf.config.feedback import LabelExportConfig
from rlhf.data.formats import read_binary_feedback, read_comparisons, read_rankings
from rlhf.feedback import dashboard, repo
from rlhf.feedback.export import export_rows
from rlhf.feedback.importer import import_file
from rlhf.feedback.stats import cohen_kappa
from rlhf.feedback.tables import Label, Task

PANDALM = Path(__file__).resolve().parents[1] / "assets" / "pandalm" / "testset-v1.json.gz"  # tests/assets/README.md
CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Tell me a story"}]


def _label_all(s, project, annotators, choose):
    """Give each task one answer per annotator: choose(task, annotator index) -> label fields."""
    for task in s.query(Task).filter_by(project_id=project.id):
        for k, a in enumerate(annotators):
            s.add(Label(task_id=task.id, annotator_id=a.id, request_id=f"t{task.id}-{k}", reason="",
                        **choose(task, k)))
    s.commit()


@pytest.mark.parametrize("mode, tasks", [("pairwise", 4), ("ranking", 2), ("thumbs", 8)])
def test_generate_output_becomes_tasks_by_mode(sessions, tmp_path, mode, tasks):
    path = candidates(tmp_path, n=2, k=4)
    with sessions() as s:
        project = repo.create_project(s, "p", mode)
        assert import_file(s, project, path).tasks == tasks
        shown = s.query(Task).first()
        assert [r.source for r in repo.responses_of(s, shown)][:1] == ["model-0"]


def test_comparisons_in_and_out_through_the_cli(db_url, tmp_path, capsys):
    rows = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)]
    rows.append({"prompt": CONVERSATION, "chosen": "Once upon a time", "rejected": "No."})
    src = write_jsonl(tmp_path / "prefs.jsonl", rows)
    assert main(["label", "import", "--db", db_url, "--project", "hh", "--labels-as", "annotator",
                 "--annotator", "expert", str(src)]) == 0
    out = tmp_path / "out.jsonl"
    assert main(["label", "export", "--db", db_url, "--project", "hh", "--out", str(out)]) == 0
    assert "6 rows" in capsys.readouterr().out
    back = read_comparisons(out)
    assert sorted((c.chosen, c.rejected) for c in back) == sorted((r["chosen"], r["rejected"]) for r in rows)
    assert any(isinstance(c.prompt, tuple) and c.prompt[-1].content == "Tell me a story" for c in back)
    binary = tmp_path / "kto.jsonl"
    assert main(["label", "export", "--db", db_url, "--project", "hh", "--format", "binary", "--out", str(binary)]) == 0
    assert sorted(b.label for b in read_binary_feedback(binary)) == [False] * 6 + [True] * 6


def test_a_malformed_file_names_its_line(db_url, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "responses": ["x", "y"]}\n{"prompt": "b", "responses": "oops"}\n')
    assert main(["label", "import", "--db", db_url, "--project", "p", str(bad)]) == 1
    assert f"{bad}:2:" in capsys.readouterr().err
    assert main(["label", "import", "--db", db_url, "--project", "p", "--skip-bad-rows", str(bad)]) == 0
    assert "1 bad rows skipped" in capsys.readouterr().out


def test_a_file_of_the_wrong_kind_is_refused(sessions, tmp_path):
    src = write_jsonl(tmp_path / "thumbs.jsonl", [{"prompt": "p", "completion": "c", "label": True}])
    with sessions() as s, pytest.raises(ValueError, match="thumbs.jsonl: row 1: a BinaryFeedback cannot go into a pairwise"):
        import_file(s, repo.create_project(s, "p", "pairwise"), src)


def test_rankings_and_thumbs_export_read_back(sessions, tmp_path):
    with sessions() as s:
        ranked = repo.create_project(s, "r", "ranking")
        import_file(s, ranked, candidates(tmp_path, n=3, k=3))
        people = [repo.annotator_by_name(s, ranked, n, create=True) for n in ("a", "b", "c")]
        _label_all(s, ranked, people, lambda t, k: {"outcome": "ranking", "ranking": t.response_ids[::-1]})
        rows = export_rows(s, ranked, LabelExportConfig(project="r", format="rankings"))
        out = write_jsonl(tmp_path / "rank.jsonl", rows)
        assert [r.ranking for r in read_rankings(out)] == [(2, 1, 0)] * 3

        thumbs = repo.create_project(s, "t", "thumbs")
        import_file(s, thumbs, candidates(tmp_path, n=2, k=2))
        people = [repo.annotator_by_name(s, thumbs, n, create=True) for n in ("a", "b", "c")]
        _label_all(s, thumbs, people, lambda t, k: {"outcome": "thumbs", "thumbs": k != 2 or t.id % 2 == 0})
        out = write_jsonl(tmp_path / "kto.jsonl", export_rows(s, thumbs, LabelExportConfig(project="t", format="binary")))
        assert [b.label for b in read_binary_feedback(out)] == [True] * 4


def test_gold_items_measure_annotators_and_filter_the_export(sessions, tmp_path):
    gold_file = write_jsonl(tmp_path / "gold.jsonl", [{"prompt": f"g{i}", "chosen": "right", "rejected": "wrong"}
                                                      for i in range(4)])
    with sessions() as s:
        project = repo.create_project(s, "p", "pairwise", overlap=2)
        import_file(s, project, candidates(tmp_path, n=3))
        import_file(s, project, gold_file, labels_as="gold")
        good, careless = (repo.annotator_by_name(s, project, n, create=True) for n in ("good", "careless"))
        texts = {}

        def choose(task, k):
            responses = repo.responses_of(s, task)
            texts.update({r.id: r.text for r in responses})
            if task.gold is not None:  # good finds the right one, careless the wrong one
                pick = task.gold["winner_id"] if k == 0 else next(r.id for r in responses if r.id != task.gold["winner_id"])
            else:
                pick = responses[k].id  # they disagree on every regular task
            return {"outcome": "win", "winner_id": pick}

        _label_all(s, project, [good, careless], choose)
        d = dashboard.build(s, project, rounds=0)
        assert {a["name"]: a["gold_accuracy"] for a in d.annotators} == {"good": 1.0, "careless": 0.0}
        assert export_rows(s, project, LabelExportConfig(project="p")) == []  # 1-1 splits: no majority
        trusted = export_rows(s, project, LabelExportConfig(project="p", min_gold_accuracy=0.5))
        assert len(trusted) == 3 and all(r["chosen"].endswith("take 0") for r in trusted)
        with_gold = export_rows(s, project, LabelExportConfig(project="p", rule="every", include_gold=True))
        assert sum(r["chosen"] == "right" for r in with_gold) == 4


def test_pandalm_three_annotators_agree(db_url, tmp_path, capsys):
    testset = tmp_path / "testset-v1.json"  # the file as PandaLM publishes it
    testset.write_bytes(gzip.decompress(PANDALM.read_bytes()))
    assert main(["label", "import", "--db", db_url, "--project", "pandalm", "--format", "pandalm", str(testset)]) == 0
    from rlhf.feedback.store import open_store

    with open_store(db_url)() as s:
        d = dashboard.build(s, repo.project_by_name(s, "pandalm"), rounds=20)
    assert [k["n"] for k in d.kappa] == [999, 999, 999]
    # the same figure straight from the file's labels (1, 2 or 0 per annotator), and the published range
    items = json.loads(testset.read_text())
    for row, (i, j) in zip(d.kappa, ((1, 2), (1, 3), (2, 3))):
        assert (row["a"], row["b"]) == (f"annotator{i}", f"annotator{j}")
        assert row["kappa"] == pytest.approx(cohen_kappa([x[f"annotator{i}"] for x in items],
                                                        [x[f"annotator{j}"] for x in items]), abs=1e-12)
        assert 0.85 <= row["kappa"] <= 0.88  # PandaLM's paper: 0.85 to 0.88
    assert [r["model"] for r in d.leaderboard][0] == "llama-7b" and len(d.leaderboard) == 5
