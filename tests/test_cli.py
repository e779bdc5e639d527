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


@pytest.mark.parametrize("command", ["sft", "ppo", "eval policy", "eval rm"])
def test_help_explains_config_file(command, capsys):
    with pytest.raises(SystemExit):
        parse(command, ["--help"])
    text = capsys.readouterr().out
    assert "--config FILE.yaml" in text and "YAML" in text


def test_required_options_read_as_required(capsys):
    with pytest.raises(SystemExit):
        parse("eval", ["--help"])
    text = capsys.readouterr().out
    judge = text[text.index("--judge"):text.index("--scorers")]
    assert "(required)" in judge and "default: None" not in judge
    with pytest.raises(SystemExit):
        parse("pretrain", ["--help"])
    assert "(required)" not in capsys.readouterr().out  # pretrain needs neither model nor data
    from rlhf.config import PPOConfig

    assert PPOConfig().model is None and PPOConfig(model="m").model == "m"  # Python callers (the demo) unaffected


def test_required_options_from_a_yaml_file_are_no_longer_required(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("model: runs/sft/model\n")
    with pytest.raises(SystemExit):
        parse("sft", ["--config", str(path), "--help"])
    text = capsys.readouterr().out
    model = text[text.index("--model"):text.index("--data")]
    data = text[text.index("--data"):text.index("--eval-data")]
    assert "(required)" not in model and "runs/sft/model" in model
    assert "(required)" in data  # still missing: the file did not give it


def test_missing_required_option_is_one_line_before_any_import(tmp_path):
    code = ("import sys; from rlhf.cli import main\n"
            "code = main(['eval', '--model', 'm', '--reference', 'r', '--data', 'd'])\n"
            "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.split() == ["2", "False"]
    assert result.stderr.strip().splitlines() == ["rlhf eval: missing required option(s) --judge (see rlhf eval --help)"]


def test_eval_commands_accept_no_progress():
    assert parse("eval", ["--no-progress"]).progress is False
    assert parse("eval rm", ["--no-progress"]).progress is False
    assert parse("eval policy", []).progress is True


def test_eval_progress_bars_follow_the_flag(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Once upon a time\nThe dog\n")
    args = ["eval", "--model", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--data", str(prompts),
            "--judge", "rlhf.demo.oracle:gold_reward", "--max-new-tokens", "3", "--precision", "fp32"]
    assert main(args) == 0
    assert "sampling the policy" in capsys.readouterr().err
    assert main(args + ["--no-progress"]) == 0
    assert "sampling the" not in capsys.readouterr().err


def test_eval_rm_scores_in_the_same_batches_with_a_progress_bar(capsys):
    from types import SimpleNamespace

    import torch

    from rlhf.eval.reward import score_with_progress

    class LengthModel:  # scores an example by its length, and records the batches it is given
        batches = []

        def score_examples(self, examples, batch_size):
            self.batches.append(sorted(len(e.input_ids) for e in examples))
            return torch.tensor([float(len(e.input_ids)) for e in examples])

    examples = [SimpleNamespace(input_ids=[0] * n) for n in (5, 1, 4, 2, 3)]
    rewards = score_with_progress(LengthModel(), examples, 2, progress=True)
    assert rewards.tolist() == [5.0, 1.0, 4.0, 2.0, 3.0]
    assert LengthModel.batches == [[1, 2], [3, 4], [5]]  # sorted by length, as RewardModel.score_examples does
    assert "scoring" in capsys.readouterr().err
