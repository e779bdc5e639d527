"""The runtime object (`rt = runtime.init(cfg)`): resume loads every state holder in place and
returns the plain values, a checkpoint without a holder is refused, `finish` writes model/ and
summary.json, and `init` never writes into another run's directory."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch


def cfg(out, **fields):
    from rlhf.config import TrainConfig

    return TrainConfig(out=str(out), precision="fp32", device="cpu", progress=False, **fields)


def trainable(seed: int):
    """A model, its AdamW and two chained schedulers, all drawn from `seed`."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    schedulers = [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
                  torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)]
    return model, optimizer, schedulers


def train(model, optimizer, schedulers, steps: int) -> None:
    x = torch.linspace(-1, 1, 12).view(4, 3)
    for _ in range(steps):
        model(x).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        for scheduler in schedulers:
            scheduler.step()


def assert_states_equal(a, b) -> None:
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_states_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_states_equal(x, y)
    else:
        assert a == b


def snapshot(path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_resume_loads_every_holder_in_place_and_returns_the_plain_values(tmp_path):
    from rlhf.runtime import init

    out = tmp_path / "run"
    rt = init(cfg(out))
    model, optimizer, schedulers = trainable(seed=0)
    train(model, optimizer, schedulers, steps=3)
    rt.checkpoint(3, model=model, optimizer=optimizer, schedulers=schedulers, tokens=96, wall_s=1.5)
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "schedulers": [s.state_dict() for s in schedulers]})
    after_checkpoint = torch.rand(4)  # the random stream continues from the checkpoint's state

    # Another process: other weights, a fresh optimiser and schedulers at step 0.
    model2, optimizer2, schedulers2 = trainable(seed=1)
    assert not torch.equal(model2.weight, model.weight) and schedulers2[0].last_epoch == 0
    resumed = init(cfg(out, resume=True)).resume(model=model2, optimizer=optimizer2, schedulers=schedulers2)

    assert resumed.step == 3
    assert resumed.values == {"tokens": 96, "wall_s": 1.5} and resumed.get("tokens") == 96
    assert_states_equal(model2.state_dict(), saved["model"])
    assert_states_equal(optimizer2.state_dict(), saved["optimizer"])
    assert_states_equal([s.state_dict() for s in schedulers2], saved["schedulers"])
    assert [s.last_epoch for s in schedulers2] == [3, 3]
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * 0.9**3)  # StepLR once, then 0.9 thrice
    torch.testing.assert_close(torch.rand(4), after_checkpoint, rtol=0, atol=0)

    # Both continue alike: the same next steps give the same weights.
    train(model, optimizer, schedulers, steps=2)
    train(model2, optimizer2, schedulers2, steps=2)
    assert_states_equal(model2.state_dict(), model.state_dict())


def test_a_run_without_resume_starts_from_step_0(tmp_path):
    from rlhf.runtime import init

    model, optimizer, _ = trainable(seed=0)
    before = copy.deepcopy(model.state_dict())
    assert init(cfg(tmp_path / "run")).resume(model=model, optimizer=optimizer) is None
    assert_states_equal(model.state_dict(), before)


def test_a_checkpoint_lacking_a_holder_is_refused_before_anything_loads(tmp_path):
    from rlhf.runtime import NonFiniteGuard, init

    out = tmp_path / "run"
    model, optimizer, schedulers = trainable(seed=0)
    train(model, optimizer, schedulers, steps=1)
    init(cfg(out)).checkpoint(1, model=model, optimizer=optimizer)

    model2, optimizer2, schedulers2 = trainable(seed=1)
    before = copy.deepcopy(model2.state_dict())
    rt = init(cfg(out, resume=True))
    with pytest.raises(ValueError, match=r"holds no 'schedulers', 'guard'.*another --out"):
        rt.resume(model=model2, optimizer=optimizer2, schedulers=schedulers2, guard=NonFiniteGuard(5))
    assert_states_equal(model2.state_dict(), before)  # the model it does hold was not loaded either
    assert optimizer2.state_dict()["state"] == {}


def test_finish_writes_a_transformers_model_and_the_summary(tmp_path, tiny_model_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.load import load_causal_lm, load_tokenizer
    from rlhf.runtime import init

    out = tmp_path / "run"
    t0 = time.perf_counter()
    rt = init(cfg(out))
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # not the weights it was loaded with
    figure = plt.figure()
    model_dir = rt.finish(model, tokenizer, {"stage": "test", "steps": 7}, figures={"curve": figure})
    wall = time.perf_counter() - t0
    plt.close(figure)

    assert model_dir == out / "model"
    loaded = AutoModelForCausalLM.from_pretrained(model_dir)  # transformers alone, no rlhf code
    assert_states_equal(loaded.state_dict(), model.state_dict())
    assert AutoTokenizer.from_pretrained(model_dir)("Once upon a time")["input_ids"] == \
        tokenizer("Once upon a time")["input_ids"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "test" and summary["steps"] == 7
    assert summary["processes"] == 1 and summary["precision"] == "fp32"
    assert 0 < summary["wall_s"] <= wall and summary["peak_memory_mb"] > 0
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_init_on_another_runs_directory_raises_before_writing_anything(tmp_path):
    from rlhf.runtime import RunDirNotEmpty, init

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (out / "summary.json").write_text('{"steps": 1}\n')
    before = snapshot(out)
    with pytest.raises(RunDirNotEmpty, match="--resume.*--overwrite"):
        init(cfg(out))
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "summary.json"]  # no config.yaml, no .lock


def test_init_sets_the_collective_timeout_before_the_process_group_starts(tmp_path):
    from rlhf.config import TrainConfig
    from rlhf.runtime import dist, init

    before = dist._TIMEOUT_S
    try:
        init(TrainConfig(out=str(tmp_path / "run"), dist_timeout=42.0, device="cpu"))
        assert dist._TIMEOUT_S == 42.0
    finally:
        dist.set_timeout(before)
