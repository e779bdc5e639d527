"""`rlhf demo --quick` end to end: every step is a normal stage run, summary.json holds the
contract's keys, and report.html, opened in a real headless Chromium, shows every figure and the
same numbers as summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhf.cli import main
from rlhf.demo.report import format_number

METHODS = ("sft", "ppo", "rloo", "grpo", "dpo", "online_dpo")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    # --frontier: the sweep is a superset of the default demo's steps
    assert main(["demo", "--quick", "--frontier", "--out", str(out), "--no-progress"]) == 0
    return out


def _at(summary: dict, dotted: str):
    value = summary
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_summary_has_the_contract_keys(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert 0.0 <= summary["rm"]["accuracy_vs_gold"] <= 1.0 and summary["rm"]["n_vs_gold"] > 0
    for method in METHODS:
        row = summary[method]
        for key in ("gold_reward", "win_rate_vs_sft", "kl_to_ref", "wall_s"):
            assert math.isfinite(row[key]), (method, key)
        assert -1.0 <= row["gold_reward"] <= 1.0 and 0.0 <= row["win_rate_vs_sft"] <= 1.0
    assert summary["sft"]["win_rate_vs_sft"] == 0.5 and summary["sft"]["kl_to_ref"] == 0.0
    strengths = {m: sorted(p["kl_strength"] for p in summary["frontier"] if p["method"] == m) for m in ("ppo", "dpo")}
    assert len(strengths["ppo"]) >= 3 and len(strengths["dpo"]) >= 3
    assert summary["frontier_sweep"] is True and summary["machine"]["cpu"]
    # Every time-left estimate sits beside the time that was really left.
    estimates = summary["progress_estimates"]
    assert [e["step"] for e in estimates][:2] == ["data", "sft"] and estimates[-1]["step"] == "report"
    assert all(e["actual_left_s"] > 0 and math.isfinite(e["error"]) for e in estimates)


def test_the_default_demo_runs_one_ppo_and_one_dpo_and_the_sweep_adds_the_frontier():
    from rlhf.config import DemoConfig
    from rlhf.demo.pipeline import Demo

    default = [s.name for s in Demo(DemoConfig(quick=True)).steps()]
    swept = [s.name for s in Demo(DemoConfig(quick=True, frontier=True)).steps()]
    assert [n for n in default if n.startswith(("ppo-", "dpo-"))] == ["ppo-kl0.05", "dpo-beta0.05"]
    assert [n for n in swept if n.startswith("ppo-")] == ["ppo-kl0.02", "ppo-kl0.05", "ppo-kl0.15"]
    assert set(default) < set(swept)


def test_every_step_is_a_normal_run_directory(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    runs = ["sft", "rm"] + [p["dir"] for p in summary["frontier"]] + ["rloo", "grpo", "online_dpo"]
    for run in runs:
        for name in ("config.yaml", "metrics.jsonl", "summary.json", "model/config.json", "model/model.safetensors"):
            assert (demo_dir / run / name).is_file(), f"{run}/{name}"
        first = json.loads((demo_dir / run / "metrics.jsonl").read_text().splitlines()[0])
        assert {"step", "loss", "lr", "elapsed_s"} <= set(first) and math.isfinite(first["loss"]), run
    # The same labelled pairs feed the reward model and every DPO run (the same label budget).
    pairs = (demo_dir / "data" / "pairs-train.jsonl").read_text().splitlines()
    assert len(pairs) == summary["label_budget"]
    for point in summary["frontier"]:
        if point["method"] == "dpo":
            assert (demo_dir / point["dir"] / "config.yaml").read_text().count("pairs-train.jsonl") == 1


def test_resume_keeps_finished_steps(demo_dir, capsys):
    before = (demo_dir / "rm" / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--quick", "--frontier", "--out", str(demo_dir), "--resume", "--no-progress"]) == 0
    assert (demo_dir / "rm" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert main(["demo", "--quick", "--out", str(demo_dir), "--no-progress"]) == 1  # not empty, no --resume
    assert "--resume" in capsys.readouterr().err


@pytest.mark.chromium  # without Debian's chromium: reported as not run, with the install line (conftest)
def test_report_in_a_real_browser(chromium, demo_dir):
    from playwright.sync_api import sync_playwright

    summary = json.loads((demo_dir / "summary.json").read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking"])
        try:
            page = browser.new_page()
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((demo_dir / "report.html").resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")
            numbers = page.eval_on_selector_all("[data-key]", "els => els.map(e => [e.dataset.key, e.textContent.trim()])")
            page.screenshot(path=str(demo_dir / "report-screenshot.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 6
    for src, complete, width in images:
        assert complete and width > 0, f"figure {src} did not load"
    assert all(url.startswith("file://") for url in requests), "the report must not touch the network"
    keys = {key for key, _ in numbers}
    for method in METHODS:
        assert f"{method}.win_rate_vs_sft" in keys and f"{method}.gold_reward" in keys and f"{method}.kl_to_ref" in keys
    assert "rm.accuracy_vs_gold" in keys
    for key, text in numbers:
        assert text == format_number(_at(summary, key)), key
