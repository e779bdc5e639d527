"""The README's test command (`python -m pytest -q`) on a clone runs every test, or says loudly what it
did not run and how to run it (issue 27 item 7): the data the tests read is in the repository
(tests/assets, with its provenance and licence), and a missing chromium is a "NOT RUN" section with
the install line, or an error where it is required."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
BROWSER_TESTS = {"tests/serve/test_chat_browser.py": "test_keyboard_user_signs_in_by_invite_and_gives_feedback_that_is_exported",
                 "tests/feedback/test_browser.py": "test_admin_invites_two_annotators_who_label_with_the_keyboard",
                 "tests/feedback/test_monitor_browser.py": "test_the_admin_sees_the_ranking_the_plot_and_the_alert",
                 "tests/demo/test_demo.py": "test_report_in_a_real_browser"}
N = len(BROWSER_TESTS)


def test_no_test_reads_data_from_outside_the_repository():
    outside = ('"shared"', "'shared'", "../shared")  # ../shared/data beside the clone: a user's clone has none
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "tests").rglob("*.py")) if path != Path(__file__)
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if any(s in line for s in outside)]
    assert found == []
    for folder in ("hh-rlhf", "pandalm"):  # what the data is, where it comes from, under which licence
        assert (ASSETS / folder / "PROVENANCE.md").is_file() and (ASSETS / folder / "LICENSE").is_file()
    assert sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) < 500_000  # small: subsampled where it can be


def test_the_browser_tests_listed_here_are_every_browser_test():
    marked = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
              if p != Path(__file__) and "mark.chromium" in p.read_text(encoding="utf-8")}
    assert marked == set(BROWSER_TESTS)  # a browser test added or renamed: list it above


def run_browser_tests(tmp_path, **env) -> subprocess.CompletedProcess:
    """The browser tests in a pytest of their own, with no chromium on the PATH."""
    env = {**{k: v for k, v in os.environ.items() if k != "RLHF_TEST_REQUIRE_CHROMIUM"}, "PATH": str(tmp_path), **env}
    nodeids = [f"{path}::{name}" for path, name in BROWSER_TESTS.items()]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *nodeids], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_missing_chromium_is_listed_as_not_run_with_the_install_line(tmp_path):
    run = run_browser_tests(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    section = out[out.index(f"{N} tests NOT RUN"):]  # a section of its own, after the counts
    assert f"{N} not run: Debian's chromium is not installed: apt-get install chromium" in section
    for path, name in BROWSER_TESTS.items():
        assert f"    {path}::{name}" in section
    assert "sudo apt-get install chromium" in section
    rerun = section[section.index("then: python -m pytest -q "):].splitlines()[0]
    assert all(f"{path}::{name}" in rerun for path, name in BROWSER_TESTS.items())

    required = run_browser_tests(tmp_path, RLHF_TEST_REQUIRE_CHROMIUM="1")  # CI: a missing chromium is an error
    assert required.returncode == 1 and f"{N} errors" in required.stdout
    assert "apt-get install chromium (RLHF_TEST_REQUIRE_CHROMIUM is set)" in required.stdout
