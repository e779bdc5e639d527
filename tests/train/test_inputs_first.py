"""A stage checks its inputs before it loads a model or creates its run directory: a broken data
file fails fast with the file and line named, and leaves nothing behind to --overwrite."""

import pytest

from rlhf.config import DPOConfig, RewardConfig, SFTConfig


@pytest.fixture
def no_model_loads(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the data were checked")

    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification):
        monkeypatch.setattr(auto, "from_pretrained", refuse)


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_a_broken_data_file_fails_before_the_model_loads(stage, tiny_model_dir, tmp_path, no_model_loads):
    from rlhf.train import dpo, reward, sft

    broken = tmp_path / "broken.jsonl"
    good = '{"prompt": "p", "completion": " c"}\n' if stage == "sft" else '{"prompt": "p", "chosen": " a", "rejected": " b"}\n'
    broken.write_text(good * 3 + '{"prompt": "unclosed\n')
    out = tmp_path / "run"
    common = dict(model=str(tiny_model_dir), data=str(broken), out=str(out), progress=False, max_steps=1)
    run, cfg = {"sft": (sft.run, SFTConfig), "rm": (reward.run, RewardConfig), "dpo": (dpo.run, DPOConfig)}[stage]
    with pytest.raises(ValueError) as err:
        run(cfg(**common))
    assert "broken.jsonl:4: invalid JSON" in str(err.value)
    assert not out.exists()  # no run directory to --overwrite after fixing the file
