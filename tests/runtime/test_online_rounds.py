"""Online DPO resumes at round boundaries through the runtime object's checkpoint, and checks the
rounds on disk before it deletes or redoes anything (issue 11, item 4)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file


def make_round(rounds_dir, r: int, finished: bool) -> None:
    round_dir = rounds_dir / f"round-{r}"
    round_dir.mkdir(parents=True)
    info = {"round": r, "labels": 4, "pairs": 2, "sample_s": 0.1, "label_s": 0.0}
    if finished:
        info.update(steps=3, train_tokens=10, train_s=0.1, round_s=0.2)
    (round_dir / "round.json").write_text(json.dumps(info))
    (round_dir / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    (round_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')


def test_rounds_that_continue_the_checkpoint_are_accepted(tmp_path):
    from rlhf.train.online_dpo import check_rounds

    rounds = tmp_path / "rounds"
    make_round(rounds, 0, finished=True)
    make_round(rounds, 1, finished=True)
    make_round(rounds, 2, finished=False)  # labelled, training interrupted
    check_rounds(rounds, finished=2, n_rounds=4)
    check_rounds(rounds, finished=2, n_rounds=2)  # all done: the run only finishes
    check_rounds(tmp_path / "none", finished=0, n_rounds=4)


@pytest.mark.parametrize("damage", ["figures missing", "gap", "later round started", "fewer rounds"])
def test_inconsistent_rounds_are_refused_and_nothing_is_touched(tmp_path, damage):
    """The checkpoint says two rounds are done; the rounds on disk must continue it."""
    from rlhf.train.online_dpo import check_rounds

    rounds = tmp_path / "rounds"
    make_round(rounds, 0, finished=damage != "gap")
    make_round(rounds, 1, finished=damage != "figures missing")
    make_round(rounds, 2, finished=False)
    if damage == "later round started":
        make_round(rounds, 3, finished=False)
    before = {p: p.read_bytes() for p in rounds.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="cannot resume the online run.*Nothing was changed"):
        check_rounds(rounds, finished=2, n_rounds=1 if damage == "fewer rounds" else 4)
    assert {p: p.read_bytes() for p in rounds.rglob("*") if p.is_file()} == before


def checkpoints(out) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_killed_after_the_round_figures_but_before_its_checkpoint_redoes_that_round(tmp_path, tiny_model_dir):
    """A kill between a round's round.json and the run's checkpoint after it: the round is not
    finished, so --resume trains it again from the previous round's weights and ends where an
    uninterrupted run ends; only the newest round checkpoint is kept."""
    from rlhf.config import DPOConfig
    from rlhf.train import dpo

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Once upon a time", "Tom had a red ball",
                                                                         "The dog was", "Sue and her cat"]))
    out = tmp_path / "online"
    common = dict(model=str(tiny_model_dir), data=str(prompts), out=str(out), online=True, labeler="oracle",
                  prompts_per_round=4, samples_per_prompt=2, max_new_tokens=6, max_length=32, batch_size=2, lr=1e-3,
                  save_every=0, kl_prompts=0, progress=False, precision="fp32")
    dpo.run(DPOConfig(**common, rounds=1))
    after_round0 = checkpoints(out)
    assert len(after_round0) == 1  # the step-0 checkpoint was replaced by the one after round 0
    saved = tmp_path / "after-round-0"
    shutil.copytree(out / "checkpoints", saved)
    finished = load_file(str(dpo.run(DPOConfig(**common, rounds=2, resume=True)) / "model.safetensors"))
    assert len(checkpoints(out)) == 1 and checkpoints(out) != after_round0

    # The state a kill leaves after round 1's figures are written, before the run's checkpoint.
    shutil.rmtree(out / "checkpoints")
    shutil.copytree(saved, out / "checkpoints")
    shutil.rmtree(out / "model")
    (out / "summary.json").unlink()

    resumed = load_file(str(dpo.run(DPOConfig(**common, rounds=2, resume=True)) / "model.safetensors"))
    for name in finished:
        torch.testing.assert_close(resumed[name], finished[name], rtol=0, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["processes"] == 1
    assert len(checkpoints(out)) == 1 and checkpoints(out) != after_round0


def test_killed_in_the_first_round_resumes_from_the_step_0_checkpoint_with_its_config_checked(
        tmp_path, tiny_model_dir, monkeypatch):
    """A kill while round 0 trains leaves the step-0 checkpoint and round 0's labelled pairs: a
    resume with another result-relevant value is refused, the same config ends where an
    uninterrupted run ends."""
    from rlhf.config import DPOConfig
    from rlhf.runtime import ResumeMismatch
    from rlhf.train import dpo, loop

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Once upon a time", "Tom had a red ball",
                                                                         "The dog was", "Sue and her cat"]))
    common = dict(model=str(tiny_model_dir), data=str(prompts), online=True, labeler="oracle", rounds=1,
                  prompts_per_round=4, samples_per_prompt=2, max_new_tokens=6, max_length=32, batch_size=2, lr=1e-3,
                  save_every=0, kl_prompts=0, progress=False, precision="fp32")
    straight = load_file(str(dpo.run(DPOConfig(**common, out=str(tmp_path / "straight"))) / "model.safetensors"))

    out = tmp_path / "killed"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "fit", killed)
        with pytest.raises(KeyboardInterrupt):
            dpo.run(DPOConfig(**common, out=str(out)))
    assert checkpoints(out) == ["step-0"] and (out / "rounds" / "round-0" / "pairs.jsonl").exists()

    with pytest.raises(ResumeMismatch, match="lr"):
        dpo.run(DPOConfig(**{**common, "lr": 2e-3}, out=str(out), resume=True))
    resumed = load_file(str(dpo.run(DPOConfig(**common, out=str(out), resume=True)) / "model.safetensors"))
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6)
