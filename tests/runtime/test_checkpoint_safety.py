"""Checkpoints load without unpickling code, and a resume checks what it continues (issue 11, items 2-3)."""

from __future__ import annotations

import builtins
import json
import random

import numpy as np
import pytest
import torch


class WritesMarker:
    """Unpickling this calls open(marker, "w"): what a crafted checkpoint could do instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def test_crafted_state_pt_is_refused_and_runs_no_code(tmp_path):
    from rlhf.config import TrainConfig
    from rlhf.runtime import RunDir, load_latest_checkpoint

    out, marker = tmp_path / "run", tmp_path / "code-ran"
    step_dir = out / "checkpoints" / "step-5"
    step_dir.mkdir(parents=True)
    torch.save({"model": {}, "step": 5, "payload": WritesMarker(str(marker))}, step_dir / "state.pt")
    run = RunDir(TrainConfig(out=str(out), resume=True))

    with pytest.raises(ValueError, match="could run code: refused"):
        load_latest_checkpoint(run)
    assert not marker.exists()


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), float(torch.rand(1))


def test_rng_state_loads_weights_only_and_restores_every_generator(tmp_path):
    from rlhf.runtime import rng_state, set_rng_state

    random.seed(11), np.random.seed(12), torch.manual_seed(13)
    random.gauss(0, 1), np.random.randn()  # leave cached Gaussians in the states: they must survive too
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_fit_checkpoint_holds_plain_values_and_its_config(tmp_path, linear_fit):
    from rlhf.runtime import list_checkpoints

    _, run = linear_fit(tmp_path / "run")
    state = torch.load(list_checkpoints(run)[-1] / "state.pt", weights_only=True)
    assert state["step"] == 2
    assert state["config"]["lr"] == 0.01 and "out" not in state["config"] and len(state["config_hash"]) == 16


def test_resume_with_a_changed_config_is_refused_naming_the_fields(tmp_path, linear_fit):
    out = tmp_path / "run"
    linear_fit(out, max_steps=6, save_every=4)  # checkpoint at step 4

    with pytest.raises(ValueError, match=r"lr \(checkpoint 0.01, now 0.02\).*seed \(checkpoint 0, now 1\)"):
        linear_fit(out, max_steps=6, save_every=4, resume=True, lr=2e-2, seed=1)
    # How often it logs, saves or shows progress does not change the result: no refusal.
    linear_fit(out, max_steps=6, save_every=3, log_every=2, resume=True)


def test_resume_force_continues_despite_the_difference(tmp_path, linear_fit, capsys):
    out = tmp_path / "run"
    linear_fit(out, max_steps=6, save_every=4)
    linear_fit(out, max_steps=6, save_every=4, resume=True, resume_force=True, lr=2e-2)
    assert "--resume-force" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_loads_weights_strictly(tmp_path, linear_fit):
    out = tmp_path / "run"
    linear_fit(out)
    other = torch.nn.Sequential(torch.nn.Linear(3, 1))  # same weights under other names: "0.weight"
    with pytest.raises(RuntimeError, match="Missing key"):
        linear_fit(out, model=other, resume=True)


def test_resume_keeps_the_original_config_and_says_where_it_continues(tmp_path, linear_fit, capsys):
    out = tmp_path / "run"
    linear_fit(out, log_every=1)
    original = (out / "config.yaml").read_text()
    capsys.readouterr()
    linear_fit(out, log_every=2, resume=True)
    assert (out / "config.yaml").read_text() == original
    assert "log_every: 2" in (out / "config.resume-1.yaml").read_text()
    assert "from step 2" in capsys.readouterr().err


def test_resume_before_the_first_checkpoint_starts_over_with_empty_logs(tmp_path, linear_fit, capsys):
    out = tmp_path / "run"
    linear_fit(out, save_every=0)  # no checkpoint, four logged steps
    (out / "samples.jsonl").write_text('{"step": 1, "response": "hi"}\n')
    linear_fit(out, save_every=0, max_steps=4, resume=True)
    assert "no checkpoint" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # not [1, 2, 3, 4, 1, 2, 3, 4]
    assert (out / "samples.jsonl").read_text() == ""


def test_lora_checkpoint_resumes_with_the_same_keys(tmp_path, tiny_model_dir, demonstrations_file):
    from rlhf.config import SFTConfig
    from rlhf.train import sft

    common = dict(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(tmp_path / "lora"), lora_r=2,
                  max_steps=3, save_every=2, batch_size=4, max_length=32, precision="fp32", progress=False)
    sft.run(SFTConfig(**common))
    state = torch.load(tmp_path / "lora" / "checkpoints" / "step-2" / "state.pt", weights_only=True)
    assert any("lora_" in k for k in state["model"]) and any("lora_" not in k for k in state["model"])
    sft.run(SFTConfig(**common, resume=True))  # strict load: raises on any missing or unexpected key
