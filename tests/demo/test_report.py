"""The demo's HTML report on a small fabricated demo directory: figures, escaping, numbers equal to summary.json."""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rlhf.demo.report import format_number, load_runs, lookup, render, write_report

SCRIPT = "<script>alert(1)</script>"
POLICY_RUNS = ["ppo-kl0.02", "ppo-kl0.05", "ppo-kl0.1", "rloo", "grpo"]
DPO_RUNS = ["dpo-beta0.05", "dpo-beta0.1", "dpo-beta0.3"]


def _run_dir(root: Path, name: str, stage: str, metrics: list[dict], eval_report: dict | None = None) -> None:
    run = root / name
    run.mkdir(parents=True)
    run.joinpath("config.yaml").write_text(f"out: {name}\nseed: 0\nlr: 5.0e-05\nnote: '{SCRIPT}'\n", encoding="utf-8")
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics), encoding="utf-8")
    run.joinpath("summary.json").write_text(json.dumps({"stage": stage}), encoding="utf-8")
    if eval_report is not None:
        run.joinpath("eval.json").write_text(json.dumps(eval_report), encoding="utf-8")


def _rows(steps: int, **series) -> list[dict]:
    """Rows with the common keys plus each series as start + slope * step."""
    return [{"step": s, "loss": 1.0 / s, "lr": 1e-4, "tokens_per_s": 100.0, "elapsed_s": float(s),
             **{key: start + slope * s for key, (start, slope) in series.items()}} for s in range(1, steps + 1)]


def _eval_report(score: float) -> dict:
    prompts = ["Once upon a time", "The dog ran", "Tom had a ball."]
    samples = [{"prompt": p, "policy": f" a happy end {i}", "reference": f" a plain end {i}",
                "policy_score": score, "reference_score": 0.3} for i, p in enumerate(prompts)]
    samples[1]["policy"] = f" and then {SCRIPT} happened"
    return {"win_rate": 0.9, "ci_low": 0.8, "ci_high": 1.0, "n": 3, "wins": 3, "ties": 0, "losses": 0,
            "kl_to_reference": 5.0, "policy_score": score, "reference_score": 0.3, "policy_length": 10.0,
            "reference_length": 9.0, "seconds": 0.1, "samples": samples}


def make_demo_dir(root: Path) -> Path:
    """A demo directory of the layout `rlhf demo` writes, with a few metric rows per run."""
    (root / "data").mkdir(parents=True)
    _run_dir(root, "sft", "sft", _rows(4))
    _run_dir(root, "rm", "rm", _rows(4, accuracy=(0.5, 0.05), margin=(0.0, 0.1)))
    policy = dict(reward=(-1.0, 0.2), reward_normalized=(0.0, 0.1), gold=(0.3, 0.1), kl=(0.0, 1.0),
                  kl_coef=(0.05, 0.0), entropy=(3.0, -0.1), response_length=(40.0, 1.0), eos_rate=(0.4, 0.0),
                  clipfrac=(0.1, -0.01), approx_kl=(0.01, 0.0))
    for i, name in enumerate(POLICY_RUNS):
        extra = dict(value_loss=(0.3, -0.05), explained_variance=(-0.2, 0.2)) if name.startswith("ppo") else {}
        _run_dir(root, name, "ppo", _rows(5, **policy, **extra), _eval_report(0.9 - 0.01 * i))
    for name in DPO_RUNS:
        _run_dir(root, name, "dpo", _rows(3, reward_chosen=(0.0, 0.1), reward_rejected=(0.0, -0.1),
                                           reward_accuracy=(0.5, 0.1), reward_margin=(0.0, 0.2),
                                           logp_chosen=(-50.0, -1.0), logp_rejected=(-60.0, -2.0)),
                 _eval_report(0.7))
    calibration = [{"lo": 0.5 + 0.1 * b, "hi": 0.6 + 0.1 * b, "n": 10 * b, "confidence": 0.55 + 0.1 * b if b else None,
                    "accuracy": 0.5 + 0.1 * b if b else None} for b in range(5)]
    gold = {"n": 100, "accuracy": 0.81, "mean_margin": 1.2, "loss": 0.45, "ece": 0.04, "calibration": calibration,
            "by_prompt_length": [{"lo": 3, "hi": 9, "n": 50, "accuracy": 0.8}, {"lo": 10, "hi": 30, "n": 50, "accuracy": 0.82}]}
    (root / "rm" / "eval_gold.json").write_text(json.dumps(gold), encoding="utf-8")

    def method(gold_reward, kl, directory, strength=None):
        return {"gold_reward": gold_reward, "win_rate_vs_sft": 0.9612, "ci_low": 0.92, "ci_high": 0.99,
                "kl_to_ref": kl, "wall_s": 120.04, "dir": directory, **({"kl_strength": strength} if strength else {})}

    summary = {
        "quick": True, "wall_s": 950.1, "label_budget": 3000, "oracle_temperature": 0.1, "eval_prompts": 3,
        # As `rlhf demo` lists them: steps without a run of their own ("data", "labels"), evaluations that
        # write into the policy's run directory, and the report in the demo directory itself.
        "steps": [{"name": name, "dir": directory, "wall_s": 10.0 + i} for i, (name, directory) in enumerate(
            [("data", "data"), ("sft", "sft"), ("labels", "data"), ("rm", "rm"), *((r, r) for r in POLICY_RUNS),
             *((r, r) for r in DPO_RUNS), *((f"eval-{r}", r) for r in POLICY_RUNS + DPO_RUNS), ("report", ".")])],
        "rm": {"accuracy_vs_gold": 0.81, "n_vs_gold": 100, "accuracy_vs_labels": 0.7, "wall_s": 80.0, "dir": "rm"},
        "sft": {"gold_reward": 0.29, "win_rate_vs_sft": 0.5, "kl_to_ref": 0.0, "wall_s": 22.3, "dir": "sft"},
        "ppo": method(0.9, 11.4, "ppo-kl0.05", 0.05), "rloo": method(0.8, 6.2, "rloo"),
        "grpo": method(0.78, 5.1, "grpo"), "dpo": method(0.6, 4.0, "dpo-beta0.1", 0.1),
        "frontier": [{"method": name.split("-")[0], "kl_strength": float(name.split("kl" if "kl" in name else "beta")[1]),
                      "dir": name, "kl_to_ref": 14.0 - 2 * i, "gold_reward": 0.95 - 0.05 * i, "win_rate_vs_sft": 0.9}
                     for i, name in enumerate(["ppo-kl0.02", "ppo-kl0.05", "ppo-kl0.1", *DPO_RUNS])],
    }
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


class _Page(HTMLParser):
    """Collects <img src>, every src/href, and the text of each element carrying data-key."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.keyed = [], [], []
        self._open: list[list] = []  # [key, tag, text] of data-key elements being read

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src"))
        self.links += [attrs[a] for a in ("src", "href") if attrs.get(a)]
        if "data-key" in attrs:
            self._open.append([attrs["data-key"], tag, ""])

    def handle_endtag(self, tag):
        if self._open and self._open[-1][1] == tag:
            key, _, text = self._open.pop()
            self.keyed.append((key, text))

    def handle_data(self, data):
        for element in self._open:
            element[2] += data


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = make_demo_dir(tmp_path_factory.mktemp("demo"))
    report = write_report(root)
    page = _Page()
    page.feed(report.read_text(encoding="utf-8"))
    return root, report, page


def test_every_image_is_a_png_beside_the_page(demo):
    root, report, page = demo
    assert report == root / "report.html" and report.is_file()
    assert len(page.images) >= 7
    for src in page.images:
        path = root / src
        assert src.startswith("figures/") and path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert "figures/frontier.png" in page.images and "figures/proxy-vs-gold.png" in page.images
    assert "figures/rm-calibration.png" in page.images
    assert {"figures/curves-sft.png", "figures/curves-rm.png", "figures/curves-policy.png",
            "figures/curves-dpo.png"} <= set(page.images)


def test_no_script_and_nothing_from_the_network(demo):
    _, report, page = demo
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the sample and config.yaml, escaped
    assert all(not link.startswith(("http:", "https:", "//")) for link in page.links)


def test_every_keyed_number_is_the_summary_value_formatted(demo):
    root, _, page = demo
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    for key, text in page.keyed:
        assert text == format_number(lookup(summary, key)), key
    shown = {key for key, _ in page.keyed}
    for m in ("sft", "ppo", "rloo", "grpo", "dpo"):
        assert {f"{m}.gold_reward", f"{m}.win_rate_vs_sft", f"{m}.kl_to_ref", f"{m}.wall_s"} <= shown
    assert {"ppo.ci_low", "ppo.ci_high", "rm.accuracy_vs_gold", "frontier.5.gold_reward", "steps.20.wall_s"} <= shown


def test_format_number_rule():
    assert [format_number(v) for v in (0.96123, 11.4052, 950.1, 1234.5, 3000, None, True, -0.0001, "ppo")] == \
        ["0.961", "11.41", "950.1", "1234", "3000", "–", "yes", "0.000", "ppo"]


def test_missing_optional_keys_show_a_dash_and_missing_run_dir_is_named(tmp_path):
    root = make_demo_dir(tmp_path / "demo")
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    del summary["ppo"]["ci_low"], summary["rm"]["accuracy_vs_labels"], summary["grpo"]
    page = _Page()
    page.feed(render(summary, load_runs(root, summary), {}, None))
    assert "ppo.ci_low" not in {key for key, _ in page.keyed}
    assert all(text == format_number(lookup(summary, key)) for key, text in page.keyed)

    shutil.rmtree(root / "rloo")
    with pytest.raises(FileNotFoundError, match="'rloo'"):
        write_report(root)


def test_quick_mode_and_chance_level_numbers_are_called_noise(demo):
    """Issue 27 item 6: a quick run's reward model at 0.500 and win-rate intervals of 0.17-0.72 carried
    no word that they are noise."""
    from rlhf.demo.report import noise_notes

    _, report, _ = demo
    page = report.read_text(encoding="utf-8")
    assert 'class="note noise">Quick mode' in page and "read the numbers below as noise" in page
    quick = {"quick": False, "rm": {"accuracy_vs_gold": 0.5, "n_vs_gold": 30},
             "ppo": {"ci_low": 0.17, "ci_high": 0.72}, "rloo": {"ci_low": 0.3, "ci_high": 0.76}}
    notes = noise_notes(quick)
    assert len(notes) == 2 and "0.500 on 30 pairs" in notes[0] and "not distinguishable from chance" in notes[0]
    assert "holds 0.5" in notes[1] and "0.550" in notes[1]  # the widest interval's span
    clear = {"rm": {"accuracy_vs_gold": 0.81, "n_vs_gold": 100}, "ppo": {"ci_low": 0.6, "ci_high": 0.9},
             "rloo": {"ci_low": 0.3, "ci_high": 0.7}}
    assert noise_notes(clear) == []  # one interval clear of 0.5 is a result
