"""What users think of each served version, as `rlhf serve --db` reports it: /metrics gauges read
from the feedback store at each scrape, the alert as a gauge and a log line, and
`--monitor-scorer` flagging the stored answers of the version whose answers are rude."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sys
import time
from pathlib import Path

import pytest

from .test_metrics import scrape, value

sys.path.insert(0, str(Path(__file__).parents[1] / "feedback"))  # the scripted users of the feedback tests
from feedback_helpers import scripted_users  # noqa: E402

SCORER = "rlhf.demo.oracle:gold_reward"  # VADER sentiment: a rude answer scores below 0


def test_gauges_per_version_the_alert_and_the_share_the_scorer_flags(tiny_model_dir, tmp_path, caplog):
    from rlhf.feedback import monitor
    from rlhf.feedback.store import open_store
    from rlhf.feedback.tables import Response
    from rlhf.models.load import resolve_model_dir

    from .conftest import start

    second = shutil.copytree(tiny_model_dir, tmp_path / "policy-b")
    paths = {"alpha": str(resolve_model_dir(str(tiny_model_dir))), "beta": str(resolve_model_dir(str(second)))}
    db = str(tmp_path / "feedback.db")
    sessions = open_store(db)
    start_day = dt.datetime(2026, 12, 1)
    scripted_users(sessions, {paths["alpha"]: 0.8}, start_day, days=2, visits=30, battles=0, seed=1)
    scripted_users(sessions, {paths["alpha"]: 0.8, paths["beta"]: 0.25}, start_day + dt.timedelta(days=2), days=2,
                   visits=40, battles=10, seed=2)  # beta, the newest version, is worse
    srv = start([f"alpha={tiny_model_dir}", f"beta={second}"], db=db, max_tokens=8, monitor_scorer=SCORER,
                monitor_threshold=0.0)
    try:
        with caplog.at_level(logging.WARNING, logger="rlhf.serve"):
            metrics = scrape(srv.url)
            scrape(srv.url)  # the alert is logged once, when it turns on
        with sessions() as s:
            counts = {r["version"]: r for r in monitor.feedback_counts(s)}
        assert sum(r["thumbs"] for r in counts.values()) == 140
        for name, path in paths.items():
            assert value(metrics, "rlhf_feedback_thumbs", version=path, model=name) == counts[path]["thumbs"] > 0
            assert value(metrics, "rlhf_feedback_thumbs_up_share", version=path, model=name) == \
                pytest.approx(counts[path]["up"] / counts[path]["thumbs"])
            assert value(metrics, "rlhf_feedback_thumbs_up_low", version=path, model=name) == \
                pytest.approx(counts[path]["up_low"])
        assert value(metrics, "rlhf_feedback_alert") == 1
        alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
        assert len(alerts) == 1 and f"version {paths['beta']} is worse than {paths['alpha']}" in alerts[0]

        deadline = time.time() + 60  # the scorer's thread scores what the store held when the server started
        with sessions() as s:
            answers = s.query(Response).count()
        while time.time() < deadline:
            with sessions() as s:
                flags = monitor.flagged_counts(s)
            if sum(f[SCORER]["scored"] for f in flags.values()) == answers:
                break
            time.sleep(0.2)
        assert flags[paths["beta"]][SCORER]["share"] == 1.0 and flags[paths["alpha"]][SCORER]["share"] == 0.0
        with sessions() as s:
            report = monitor.monitor(s)
        assert report["scorers"] == [SCORER]
        assert "flagged:" in monitor.text_report(report)
    finally:
        srv.stop()


def test_the_scorer_needs_the_store():
    from rlhf.config import ServeConfig

    with pytest.raises(ValueError, match="give --db as well"):
        ServeConfig(model=("m",), monitor_scorer=SCORER)


def test_a_failing_scorer_is_logged_and_tried_again_without_stopping_the_server(tmp_path, caplog):
    from rlhf.feedback import repo
    from rlhf.feedback.store import open_store
    from rlhf.rollout.scorers import Scorer
    from rlhf.serve.monitor_scorer import ScoringWorker

    sessions = open_store(str(tmp_path / "feedback.db"))
    with sessions() as s:
        project = repo.create_project(s, "chat-thumbs", "thumbs")
        repo.add_task(s, project, repo.add_prompt(s, project, [{"role": "user", "content": "hi"}], [("hello", "v1")]))
        s.commit()
    calls = []

    def broken(prompts, responses):
        calls.append(len(responses))
        raise RuntimeError("the judge is down")

    with caplog.at_level(logging.ERROR, logger="rlhf.serve.monitor"):
        worker = ScoringWorker(sessions, Scorer("broken", broken), 0.0, "chat", interval=0.05).start()
        deadline = time.time() + 10
        while len(calls) < 2 and time.time() < deadline:
            time.sleep(0.02)
        worker.stop()
    assert len(calls) >= 2 and not worker.thread.is_alive()  # tried again, then stopped when asked
    assert "the judge is down" in caplog.text
