"""`rlhf label monitor` on a simulated deployment: two model versions served side by side to
scripted users whose thumbs and arena votes follow a known preference, stored as the chat page
stores them (projects chat-thumbs and chat-pairs, each answer with the version that wrote it)."""

from __future__ import annotations

import datetime as dt
import random

from rlhf.config.feedback import LabelMonitorConfig
from rlhf.feedback import monitor, repo

GOOD, BAD = "runs/round1/policy", "runs/round2/policy"


def deploy(sessions, satisfaction: dict[str, float], thumbs: int, arena: int, regenerations: dict[str, int],
           start: dt.datetime, seed: int = 0) -> None:
    """Scripted users: a thumb up with probability satisfaction[version]; in the arena the more
    satisfying version wins with probability 0.8; some regenerate-and-pick pairs."""
    rng = random.Random(seed)
    with sessions() as s:
        projects = {mode: repo.project_by_name(s, f"chat-{name}") or repo.create_project(s, f"chat-{name}", mode)
                    for mode, name in (("thumbs", "thumbs"), ("pairwise", "pairs"))}
        users = {mode: repo.annotator_by_name(s, p, "chat", create=True) for mode, p in projects.items()}

        def answer(mode, responses, when, **label):
            task = repo.add_task(s, projects[mode], repo.add_prompt(s, projects[mode], [{"role": "user",
                                                                                          "content": "hi"}], responses))
            saved, _ = repo.save_label(s, users[mode], task, f"r{rng.random()}", **label)
            saved.created_at = when

        for i, version in enumerate(v for v in satisfaction for _ in range(thumbs)):
            answer("thumbs", [(f"answer {i} " * (3 if version == GOOD else 5), version)],
                   start + dt.timedelta(hours=i), outcome="thumbs", thumbs=rng.random() < satisfaction[version])
        better = max(satisfaction, key=satisfaction.get)
        versions = list(satisfaction)
        for i in range(arena):
            a, b = versions if i % 2 else versions[::-1]
            winner_first = (a == better) == (rng.random() < 0.8)
            task = repo.add_task(s, projects["pairwise"], repo.add_prompt(s, projects["pairwise"], "q",
                                                                          [(f"arena {i} a", a), (f"arena {i} b", b)]))
            saved, _ = repo.save_label(s, users["pairwise"], task, f"a{i}", outcome="win",
                                       winner_id=task.response_ids[0 if winner_first else 1], strength=2)
            saved.created_at = start
        for version, n in regenerations.items():
            for i in range(n):
                task = repo.add_task(s, projects["pairwise"], repo.add_prompt(s, projects["pairwise"], "q",
                                                                              [(f"first {i}", version),
                                                                               (f"again {i}", version)]))
                saved, _ = repo.save_label(s, users["pairwise"], task, f"g{version}{i}", outcome="win",
                                           winner_id=task.response_ids[1], strength=1)
                saved.created_at = start
        s.commit()


def test_versions_ranked_with_intervals_and_a_worse_one_raises_the_alert(sessions, db_url, tmp_path):
    day = dt.datetime(2026, 12, 1, 9)
    deploy(sessions, {GOOD: 0.8}, thumbs=60, arena=0, regenerations={GOOD: 6}, start=day)
    with sessions() as s:
        first = monitor.monitor(s, "chat", min_feedback=20)
    assert [r["version"] for r in first["versions"]] == [GOOD] and first["alert"] is None

    deploy(sessions, {BAD: 0.35, GOOD: 0.8}, thumbs=60, arena=40, regenerations={BAD: 20},
           start=day + dt.timedelta(days=3), seed=1)
    with sessions() as s:
        report = monitor.monitor(s, "chat", min_feedback=20, db=db_url)
    rows = {r["version"]: r for r in report["versions"]}
    assert [r["version"] for r in report["versions"]] == [GOOD, BAD]  # in the order they were served
    good, bad = rows[GOOD], rows[BAD]
    assert good["thumbs"] == 120 and bad["thumbs"] == 60
    assert good["up_low"] <= good["up_share"] <= good["up_high"] and bad["up_high"] < good["up_low"]
    assert 0.65 < good["up_share"] < 0.95 and 0.2 < bad["up_share"] < 0.5
    assert bad["regenerate_rate"] == 20 / 80 and good["regenerate_rate"] == 6 / 126
    assert report["leaderboard"][0]["model"] == GOOD and report["leaderboard"][0]["bt_low"] > report["leaderboard"][1]["bt"]
    assert good["mean_words"] < bad["mean_words"]
    assert len(good["days"]) >= 2
    assert report["alert"] and BAD in report["alert"] and "rlhf iterate" in report["alert"]

    out = tmp_path / "monitor.html"
    monitor.run(LabelMonitorConfig(db=db_url, out=str(out)))
    page = out.read_text()
    assert 'role="alert"' in page and "Arena (Bradley-Terry)" in page


def test_too_few_thumbs_or_a_better_version_raise_no_alert(sessions, db_url):
    start = dt.datetime(2026, 12, 1)
    deploy(sessions, {BAD: 0.35}, thumbs=40, arena=0, regenerations={}, start=start)
    deploy(sessions, {GOOD: 0.8}, thumbs=40, arena=0, regenerations={}, start=start + dt.timedelta(days=2), seed=2)
    with sessions() as s:
        assert monitor.monitor(s, "chat", min_feedback=20)["alert"] is None  # the newer one is better
        assert monitor.monitor(s, "chat", min_feedback=50)["alert"] is None
