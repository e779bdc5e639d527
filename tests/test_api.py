"""The Python API (rlhf.api): the commands as functions, on the CLI's code path."""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path / "cache"))


def demonstrations(n: int = 16) -> list[dict]:
    return [{"prompt": f"Story {i}: Once upon a time", "completion": " there was a happy dog."} for i in range(n)]


def test_sft_from_a_list_of_dicts_writes_the_run_and_the_rows_it_read(tmp_path, tiny_model_dir):
    import rlhf

    rows = demonstrations()
    steps = []
    result = rlhf.sft(model=str(tiny_model_dir), data=rows, out=str(tmp_path / "sft"), max_steps=3, batch_size=4,
                      max_length=32, progress=False, save_every=0, log_every=1, on_step=steps.append)
    assert result.out == tmp_path / "sft" and result.model_dir == tmp_path / "sft" / "model"
    assert (result.model_dir / "model.safetensors").exists()
    assert result.summary["stage"] == "sft" and result.summary["steps"] == 3 and result.summary["processes"] == 1
    # the callback saw exactly what metrics.jsonl holds
    logged = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert steps == logged and [r["step"] for r in steps] == [1, 2, 3]
    # config.yaml names a file holding the rows the run read, in order
    data_path = yaml.safe_load((result.out / "config.yaml").read_text())["data"]
    assert [json.loads(line) for line in open(data_path)] == rows
    assert result.config.data == data_path


def test_a_config_object_and_keywords_keywords_win(tmp_path, tiny_model_dir):
    import rlhf

    cfg = rlhf.SFTConfig(model=str(tiny_model_dir), max_steps=5, batch_size=4, max_length=32, progress=False,
                         save_every=0)
    result = rlhf.sft(cfg, data=demonstrations(), out=str(tmp_path / "sft"), max_steps=2)
    assert result.summary["steps"] == 2 and result.config.batch_size == 4


def test_a_callback_stops_the_run_cleanly(tmp_path, tiny_model_dir):
    import rlhf

    saved = []
    result = rlhf.sft(model=str(tiny_model_dir), data=demonstrations(), out=str(tmp_path / "sft"), max_steps=6,
                      batch_size=4, max_length=32, progress=False, save_every=1, log_every=1,
                      on_step=lambda record: record["step"] < 2, on_checkpoint=lambda step, path: saved.append(step))
    assert result.summary["steps"] == 2 and result.summary["stopped_by_callback"] is True
    assert (result.model_dir / "model.safetensors").exists()
    assert saved == [1, 2]  # checkpoints up to the step it stopped at: --resume can continue it


def test_a_bad_row_names_the_cached_file_and_line_before_anything_is_written(tmp_path, tiny_model_dir):
    import rlhf

    rows = demonstrations(4) + [{"prompt": "no completion"}]
    with pytest.raises(ValueError, match=r"\.jsonl:5:.*completion"):
        rlhf.sft(model=str(tiny_model_dir), data=rows, out=str(tmp_path / "sft"), max_steps=1)
    assert not (tmp_path / "sft").exists()


def test_dpo_on_a_list_of_pairs_then_eval(tmp_path, tiny_model_dir):
    import rlhf

    pairs = [{"prompt": f"Story {i}:", "chosen": " a happy day.", "rejected": " a sad day."} for i in range(16)]
    result = rlhf.dpo(rlhf.DPOConfig(model=str(tiny_model_dir), beta=0.1), data=pairs, eval_data=pairs[:8],
                      out=str(tmp_path / "dpo"), max_steps=2, batch_size=4, max_length=32, progress=False,
                      save_every=0)
    assert result.summary["stage"] == "dpo" and "eval_reward_accuracy" in result.summary
    report = rlhf.evaluate(model=str(result.model_dir), reference=str(tiny_model_dir), data=[{"prompt": "Story:"}] * 4,
                           judge="rlhf.demo.oracle:gold_reward", out=str(tmp_path / "eval.json"), max_new_tokens=4,
                           progress=False)
    assert report.out == tmp_path / "eval.json" and "win_rate" in report.summary


def test_unknown_fields_and_wrong_configs_are_refused():
    import rlhf

    with pytest.raises(TypeError, match="no field"):
        rlhf.sft(model="m", data="d.jsonl", learning_rate=1.0)
    with pytest.raises(TypeError, match="SFTConfig"):
        rlhf.sft(rlhf.DPOConfig())


def test_ppo_from_python_with_a_callback_that_stops_it(tmp_path, tiny_model_dir):
    import rlhf

    prompts = [{"prompt": f"Story {i}: Once upon a time"} for i in range(8)]
    seen = []
    result = rlhf.ppo(model=str(tiny_model_dir), data=prompts, reward="rlhf.demo.oracle:gold_reward", algo="grpo",
                      out=str(tmp_path / "grpo"), max_steps=4, batch_size=2, max_new_tokens=4, max_length=32,
                      progress=False, save_every=0, log_every=1,
                      on_step=lambda record: seen.append(record["step"]) or record["step"] < 2)
    assert seen == [1, 2] and result.summary["steps"] == 2 and result.summary["stopped_by_callback"] is True
    assert result.summary["algo"] == "grpo" and (result.model_dir / "model.safetensors").exists()
