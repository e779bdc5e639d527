"""The monitoring page /admin/monitor on a simulated deployment: model versions served side by
side to scripted users whose thumbs and arena votes follow a known preference (seeded noise).
The page ranks the versions as the users' preference does, with intervals that separate them,
and a worse newest version raises the alert on the page and in the log. Also `rlhf label stats`."""

from __future__ import annotations

import datetime as dt
import html
import logging
import re

from feedback_helpers import scripted_users

from rlhf.cli import main
from rlhf.feedback import monitor

A, B, C = "runs/round1/policy", "runs/round2/policy", "runs/round3/policy"
START = dt.datetime(2026, 12, 1, 8)


def ranking(page: str) -> list[tuple[str, float, float, float]]:
    """(version, thumbs-up share, low, high) of the page's ranking table, top first."""
    table = page.split('id="ranking"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<td>\d+</td><td class="text">([^<]+)</td><td>\d+</td><td>([\d.]+)</td>\s*'
                      r'<td>([\d.]+) to ([\d.]+)</td>', table)
    return [(v, float(share), float(low), float(high)) for v, share, low, high in rows]


def test_the_page_ranks_versions_by_what_users_think_and_raises_the_alert_for_a_worse_newest_one(
        admin, app, sessions, caplog):
    scripted_users(sessions, {A: 0.5}, START, days=2, visits=30, battles=0, seed=1)
    scripted_users(sessions, {A: 0.5, B: 0.85}, START + dt.timedelta(days=2), days=4, visits=40, battles=20, seed=2)
    page = admin.get("/admin/monitor").text
    ranked = ranking(page)
    assert [v for v, *_ in ranked] == [B, A]  # B preferred, so ranked first
    (_, b_share, b_low, b_high), (_, a_share, a_low, a_high) = ranked
    assert b_low <= b_share <= b_high and a_low <= a_share <= a_high
    assert b_low > a_high  # the intervals separate them: the users' preference is seen, not noise
    assert 'id="no-alert"' in page and 'role="alert"' not in page  # the newer one is the better one
    arena = page.split('id="arena"', 1)[1].split("</table>", 1)[0]
    assert arena.index(B) < arena.index(A)  # the Bradley-Terry leaderboard agrees
    assert page.count("data:image/png;base64,") == 1  # the per-day plot, drawn inline

    scripted_users(sessions, {B: 0.85, C: 0.3}, START + dt.timedelta(days=6), days=2, visits=40, battles=20, seed=3)
    with caplog.at_level(logging.WARNING, logger="rlhf.feedback.monitor"):
        page = admin.get("/admin/monitor?project=chat&min_feedback=20").text
    assert [v for v, *_ in ranking(page)] == [B, A, C]
    alert = page.split('role="alert"', 1)[1].split("</div>", 1)[0]
    store = sessions.kw["bind"].url.render_as_string(hide_password=True)  # SQLite, or PostgreSQL in CI's second run
    assert f"version {C} is worse than {B}" in alert and f"rlhf iterate --db {store} " in html.unescape(alert)
    assert any("ALERT" in r.getMessage() and C in r.getMessage() for r in caplog.records)
    assert 'id="no-alert"' not in page


def test_the_page_is_for_the_admin_only_and_says_when_there_is_nothing_yet(admin, app, sessions):
    from fastapi.testclient import TestClient

    empty = admin.get("/admin/monitor")
    assert empty.status_code == 200 and "No thumbs yet" in empty.text and "No arena battles" in empty.text
    scripted_users(sessions, {A: 0.5}, START, days=1, visits=3, battles=0)
    anonymous = TestClient(app)
    answer = anonymous.get("/admin/monitor")
    assert answer.status_code == 401 and A not in answer.text


def test_the_cheap_counts_equal_the_full_report(sessions):
    scripted_users(sessions, {A: 0.6, B: 0.4}, START, days=3, visits=25, battles=5, seed=4)
    with sessions() as s:
        full = monitor.monitor(s, "chat")["versions"]
        cheap = monitor.feedback_counts(s, "chat")
    assert [(r["version"], r["up"], r["thumbs"], r["up_low"]) for r in cheap] == \
        [(r["version"], r["up"], r["thumbs"], r["up_low"]) for r in full]
    assert sum(r["thumbs"] for r in cheap) == 75


def test_label_stats_by_project_and_by_model(sessions, db_url, capsys):
    scripted_users(sessions, {A: 0.9}, START, days=1, visits=30, battles=0, seed=5)
    scripted_users(sessions, {A: 0.9, C: 0.2}, START + dt.timedelta(days=1), days=2, visits=40, battles=10, seed=6)
    assert main(["label", "stats", "--db", db_url]) == 0
    projects = capsys.readouterr().out
    assert re.search(r"chat-thumbs\s+thumbs\s+110\s+110\s+1", projects)
    assert re.search(r"chat-pairs\s+pairwise\s+20\s+20\s+1", projects)
    assert main(["label", "stats", "--db", db_url, "--by-model"]) == 0
    by_model = capsys.readouterr().out
    assert by_model.index(A) < by_model.index(C) and "arena:" in by_model
    assert f"ALERT: version {C} is worse than {A}" in by_model
