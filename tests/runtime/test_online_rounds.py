"""Online DPO checks the rounds on disk before it deletes or redoes anything (issue 11, item 4)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file


def make_round(rounds_dir, r: int, finished: bool, end_state: bool = False) -> None:
    round_dir = rounds_dir / f"round-{r}"
    round_dir.mkdir(parents=True)
    info = {"round": r, "labels": 4, "pairs": 2, "sample_s": 0.1, "label_s": 0.0}
    if finished:
        info.update(steps=3, train_tokens=10, train_s=0.1, round_s=0.2)
    (round_dir / "round.json").write_text(json.dumps(info))
    (round_dir / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    (round_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
    if end_state:
        torch.save({"w": torch.zeros(1)}, round_dir / "end.pt")


def test_consistent_rounds_resume_after_the_newest_finished_one(tmp_path):
    from rlhf.train.online_dpo import resume_point

    rounds = tmp_path / "rounds"
    make_round(rounds, 0, finished=True)
    make_round(rounds, 1, finished=True, end_state=True)
    make_round(rounds, 2, finished=False)  # labelled, training interrupted
    assert resume_point(rounds, n_rounds=4) == (2, rounds / "round-1" / "end.pt")
    assert resume_point(tmp_path / "none", n_rounds=4) == (0, None)


@pytest.mark.parametrize("damage", ["missing end state", "gap", "later round started", "fewer rounds"])
def test_inconsistent_rounds_are_refused_and_nothing_is_touched(tmp_path, damage):
    from rlhf.train.online_dpo import resume_point

    rounds = tmp_path / "rounds"
    make_round(rounds, 0, finished=damage != "gap")
    make_round(rounds, 1, finished=True, end_state=damage != "missing end state")
    make_round(rounds, 2, finished=False)
    if damage == "later round started":
        make_round(rounds, 3, finished=False)
    before = {p: p.read_bytes() for p in rounds.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="cannot resume the online run.*Nothing was changed"):
        resume_point(rounds, n_rounds=1 if damage == "fewer rounds" else 4)
    assert {p: p.read_bytes() for p in rounds.rglob("*") if p.is_file()} == before


def test_killed_after_the_round_weights_but_before_its_figures_redoes_that_round(tmp_path, tiny_model_dir):
    """A kill between a round's end.pt and its round.json: the round is not finished, so --resume
    trains it again from the previous round's weights (old code took it as finished and failed)."""
    from rlhf.config import DPOConfig
    from rlhf.train import dpo
    from rlhf.train.online_dpo import END_STATE

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Once upon a time", "Tom had a red ball",
                                                                         "The dog was", "Sue and her cat"]))
    out = tmp_path / "online"
    common = dict(model=str(tiny_model_dir), data=str(prompts), out=str(out), online=True, labeler="oracle",
                  prompts_per_round=4, samples_per_prompt=2, max_new_tokens=6, max_length=32, batch_size=2, lr=1e-3,
                  save_every=0, kl_prompts=0, progress=False, precision="fp32")
    dpo.run(DPOConfig(**common, rounds=1))
    round0_end = tmp_path / "round-0-end.pt"
    shutil.copy(out / "rounds" / "round-0" / END_STATE, round0_end)
    finished = load_file(str(dpo.run(DPOConfig(**common, rounds=2, resume=True)) / "model.safetensors"))

    # The state a kill leaves after round 1's end.pt is written, before its figures and the cleanup.
    shutil.copy(round0_end, out / "rounds" / "round-0" / END_STATE)
    info = json.loads((out / "rounds" / "round-1" / "round.json").read_text())
    labelled = {k: info[k] for k in ("round", "labels", "pairs", "sample_s", "label_s")}
    (out / "rounds" / "round-1" / "round.json").write_text(json.dumps(labelled))
    shutil.rmtree(out / "model")
    (out / "summary.json").unlink()

    resumed = load_file(str(dpo.run(DPOConfig(**common, rounds=2, resume=True)) / "model.safetensors"))
    for name in finished:
        torch.testing.assert_close(resumed[name], finished[name], rtol=0, atol=1e-6)
    assert json.loads((out / "summary.json").read_text())["rounds"] == 2
    assert not (out / "rounds" / "round-0" / END_STATE).exists()
