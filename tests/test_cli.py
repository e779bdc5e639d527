import dataclasses
import subprocess
import sys

import pytest

from rlhf.cli import main, parse
from rlhf.config import PretrainConfig, SFTConfig


def test_help_lists_every_field_with_default(capsys):
    with pytest.raises(SystemExit):
        parse("sft", ["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(SFTConfig):
        assert "--" + field.name.replace("_", "-") in text
    assert "default" in text and "LoRA rank" in text


def test_common_flags_exist_on_training_commands():
    common = ["model", "data", "eval_data", "out", "seed", "max_steps", "epochs", "batch_size", "grad_accum", "lr",
              "max_length", "precision", "resume", "lora_r"]
    for cls in (PretrainConfig, SFTConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(common) <= names


def test_yaml_config_and_flags_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nbatch_size: 3\nmax-steps: 7\n")
    cfg = parse("sft", ["--config", str(path), "--lr", "0.5"])
    assert (cfg.lr, cfg.batch_size, cfg.max_steps) == (0.5, 3, 7)


def test_yaml_with_unknown_field_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.01\n")
    with pytest.raises(ValueError, match="learning_rate"):
        parse("sft", ["--config", str(path)])


def test_invalid_values_and_unknown_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "batch_size=0" in capsys.readouterr().err
    assert main(["fly"]) == 2


def test_console_script_reports_missing_model_cleanly(tmp_path, demonstrations_file):
    result = subprocess.run([sys.executable, "-m", "rlhf.cli", "sft", "--model", "gpt2", "--data", str(demonstrations_file),
                             "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Hub" in result.stderr and "Traceback" not in result.stderr


def test_console_script_reports_bad_data_with_file_and_line(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n')
    result = subprocess.run([sys.executable, "-m", "rlhf.cli", "sft", "--model", str(tiny_model_dir), "--data", str(bad),
                             "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 1 and "bad.jsonl:2" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command,cls_name", [("ppo", "PPOConfig"), ("generate", "GenerateConfig"),
                                              ("eval policy", "EvalPolicyConfig")])
def test_rl_commands_list_every_field(command, cls_name, capsys):
    from rlhf import config

    with pytest.raises(SystemExit):
        parse(command, ["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(getattr(config, cls_name)):
        assert "--" + field.name.replace("_", "-") in text
