"""`rlhf report RUN_DIR`: the HTML report of a single run directory (a tiny real `rlhf ppo` run,
and a made-up run whose texts look like HTML)."""

import html
import json

from rlhf import cli
from rlhf.eval.run_report import write_run_report

GOLD = "rlhf.demo.oracle:gold_reward"


def test_report_of_a_tiny_ppo_run_has_curves_and_the_guard(tiny_model_dir, tmp_path):
    from rlhf.config import PPOConfig
    from rlhf.train import ppo

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nThe dog was\n", encoding="utf-8")
    out = tmp_path / "ppo"
    ppo.run(PPOConfig(model=str(tiny_model_dir), data=str(prompts), out=str(out), reward=GOLD, gold=GOLD,
                      algo="reinforce", max_steps=3, batch_size=2, minibatch_size=2, max_new_tokens=8, max_length=32,
                      precision="fp32", save_every=0, samples_every=1, progress=False, guard_window=1,
                      guard_save_best=False))
    page = write_run_report(out).read_text(encoding="utf-8")
    for figure in ("figures/curves-policy.png", "figures/guard-signals.png", "figures/guard-measures.png",
                   "figures/proxy-vs-gold.png"):
        assert f'src="{figure}"' in page and (out / figure).stat().st_size > 1000, figure
    assert 'id="guard"' in page and "Over-optimisation guard" in page and "Training curves" in page
    assert "eos_drop" in page  # the thresholds table names every signal
    summary = json.loads((out / "summary.json").read_text())
    assert f"best guard score {summary['guard']['best_score']:.3f}" in page or summary["guard"]["best_score"] is None
    first_response = json.loads((out / "samples.jsonl").read_text().splitlines()[0])["response"]
    assert f"<td class=text>{html.escape(first_response)}</td>" in page  # the samples are shown


def test_everything_shown_is_escaped_and_the_cli_writes_the_report(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    hostile = "<script>alert('x')</script><b>bold</b>"
    rows = [{"step": s, "loss": 1.0 / s, "lr": 1e-5, "reward": 0.1 * s, "gold": 0.5, "guard/eos_drop": 0.1 * s,
             "guard/score": 1.0 - 0.1 * s, "guard/length": 10 + s} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = {"stage": "ppo", "steps": 5, "note": hostile,
               "stopped_early": {"step": 4, "signal": "eos_drop", "reason": hostile},
               "guard": {"enabled": True, "window": 2, "patience": 1, "thresholds": {"eos_drop": 0.25},
                         "warnings": [{"step": 3, "signal": "eos_drop", "value": 0.3, "threshold": 0.25,
                                       "message": hostile}], "first_warning_step": 3, "best_step": 2,
                         "best_score": 0.8, "stopped_early": None}}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (run / "config.yaml").write_text(f"model: {hostile}\n", encoding="utf-8")
    (run / "samples.jsonl").write_text(json.dumps({"step": 1, "prompt": hostile, "response": hostile}) + "\n",
                                       encoding="utf-8")
    assert cli.main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>bold" not in page
    assert page.count("&lt;script&gt;") >= 5  # sample prompt and response, warning, stop reason, config, summary
    assert "Stopped early at step 4" in page and (run / "figures" / "guard-signals.png").exists()
    assert "report.html" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "missing")]) == 1
    assert cli.main(["report"]) == 2


def test_a_demo_directory_gets_the_demo_report(tmp_path, monkeypatch):
    import pytest

    from rlhf.demo import report

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "summary.json").write_text(json.dumps({"steps": [{"name": "sft", "dir": "sft", "wall_s": 1.0}]}))
    called = []
    monkeypatch.setattr(report, "write_report", lambda path: called.append(path) or path / "report.html")
    assert cli.main(["report", str(demo)]) == 0 and called == [demo]
    with pytest.raises(ValueError, match="demo directory"):  # the stage report refuses it: the CLI picks the demo's
        write_run_report(demo)


def test_samples_kl_and_steps_read_plainly(tmp_path):
    """Issue 27 item 6: sample scores with 16 digits, "first and last logged steps (1 and 1)", and a
    summary `kl -0.033` with no word that it is the k1 estimate (KL itself is never negative)."""
    import re

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 1, "loss": 0.5, "reward": 0.1, "gold": 0.2, "kl": -0.033, "kl_k3": 0.031}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (run / "summary.json").write_text(json.dumps({"stage": "ppo", "steps": 1, "kl": -0.033, "kl_estimator": "k1"}))
    samples = [{"step": 1, "prompt": "Once", "response": " upon", "score": 0.6726133227348328, "ended": False}]
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    page = write_run_report(run).read_text(encoding="utf-8")
    assert "0.6726133227348328" not in page and "<td class=text>0.673</td>" in page
    assert "<td class=text>no</td>" in page  # ended: False, as the page writes booleans
    assert "(1 and 1)" not in page and "at step 1, the only step that logged samples" in page
    kl_row = re.search(r"<tr><td>kl</td>.*?</tr>", page).group(0)
    assert "-0.033" in kl_row and "k1 estimator" in kl_row and "KL itself never is" in kl_row
    assert "k3 on the same step, never negative: 0.031" in kl_row
