"""The monitoring page in a real browser (Playwright driving Debian's chromium): an admin signs
in and opens /admin/monitor on a simulated deployment whose newest version is worse. The alert
is the first thing on the page, the ranking puts the preferred version first, the per-day plot
loads under the app's Content-Security-Policy, and the page is saved as a screenshot
(RLHF_SCREENSHOTS=DIR keeps it there)."""

import datetime as dt
import os
from pathlib import Path

import pytest
from feedback_helpers import scripted_users

pytestmark = pytest.mark.chromium  # without Debian's chromium: reported as not run, with the install line (conftest)

A, B, C = "runs/round1/policy", "runs/round2/policy", "runs/round3/policy"


def test_the_admin_sees_the_ranking_the_plot_and_the_alert(chromium, server, admin_token, sessions, tmp_path):
    from playwright.sync_api import sync_playwright

    start = dt.datetime(2026, 12, 1, 8)
    scripted_users(sessions, {A: 0.5}, start, days=2, visits=30, battles=0, seed=1)
    scripted_users(sessions, {A: 0.5, B: 0.85}, start + dt.timedelta(days=2), days=4, visits=40, battles=20, seed=2)
    scripted_users(sessions, {B: 0.85, C: 0.3}, start + dt.timedelta(days=6), days=2, visits=40, battles=20, seed=3)
    shots = Path(os.environ.get("RLHF_SCREENSHOTS") or tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{server}/admin/login")
            page.fill("input[name=token]", admin_token)
            page.click("button[type=submit]")
            page.click("text=Monitor served models")
            alert = page.locator("#alert")
            assert alert.is_visible() and f"version {C} is worse than {B}" in alert.inner_text()
            assert alert.bounding_box()["y"] < page.locator("#ranking").bounding_box()["y"]  # first, above the tables
            rows = page.locator("#ranking tr").all_inner_texts()[1:]
            assert [row.split("\t")[1] for row in rows] == [B, A, C]
            assert page.evaluate("document.querySelector('main img').naturalWidth") > 400  # the plot drew
            assert not problems, problems  # no CSP violation, no missing asset
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "monitor.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "monitor.png").stat().st_size > 20_000
