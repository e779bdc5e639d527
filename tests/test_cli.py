import dataclasses
import inspect
import re
import subprocess
import sys

import pytest

from rlhf import config
from rlhf.cli import COMMANDS, main, parse
from rlhf.config import PretrainConfig, SFTConfig

# Fields whose flag tyro names otherwise (tyro.conf.arg(name=...), tyro.conf.Positional in rlhf.config),
# and repeatable fields (tyro.conf.UseAppendAction), whose row reads "(repeatable)" instead of a default.
OTHER_FLAGS = {("IterateConfig", "from_run"): "--from", ("LabelImportConfig", "file"): "FILE",
               ("LabelBackupConfig", "out"): "OUT", ("LabelRestoreConfig", "backup"): "BACKUP",
               ("LabelInviteConfig", "name"): "NAME"}
REPEATABLE = {("ServeConfig", "model")}


def help_rows(command, capsys, monkeypatch):
    """`rlhf COMMAND --help` as printed: {each flag (both of --x/--no-x) or positional metavar: its
    row's text on one line}. Printed in-process, wide enough that nothing wraps."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_info:
        parse(command, ["--help"])
    assert exit_info.value.code == 0
    lines = [re.sub(r"^│|│$", "", line.rstrip()).rstrip() for line in capsys.readouterr().out.splitlines()]
    indent = next(len(line) - len(line.lstrip()) for line in lines if line.lstrip().startswith("-h, --help"))
    rows, current = {}, None
    for line in lines:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth == indent:  # an option: its flags, two spaces, its text (or on the next lines)
            flags, _, text = line.strip().partition("  ")
            current = [text]
            for flag in flags.split(", "):
                rows[flag.split()[0]] = current
        elif line.strip() and depth > indent and current is not None:
            current.append(line.strip())
        else:  # a group's title or rule, a blank line
            current = None
    return {flag: " ".join(" ".join(parts).split()) for flag, parts in rows.items()}


def field_meanings(cls):
    """Each field's comment in rlhf.config (on its line, else the comment lines just above it)."""
    meanings = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            above = []
            for line in inspect.getsource(klass).splitlines():
                line = line.strip()
                if line.startswith("#"):
                    above.append(line.lstrip("# "))
                    continue
                field = re.match(r"(\w+): .*?(?:  # (.*))?$", line)
                if field:
                    meanings[field.group(1)] = field.group(2) or " ".join(above)
                above = []
    return meanings


def shown(value):
    """A default as --help prints it."""
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return "''" if value == "" else str(value)


@pytest.mark.parametrize("command", [name for name, (cls_name, _, _) in COMMANDS.items() if cls_name])
def test_help_shows_every_field_with_its_meaning_and_default(command, capsys, monkeypatch):
    cls = getattr(config, COMMANDS[command][0])
    rows, meanings = help_rows(command, capsys, monkeypatch), field_meanings(cls)
    for field in dataclasses.fields(cls):
        key = (cls.__name__, field.name)
        flag = OTHER_FLAGS.get(key, "--" + field.name.replace("_", "-"))
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if key in REPEATABLE:
            suffix = "(repeatable)"
        elif field.name in getattr(cls, "REQUIRED", ()):
            suffix = "(required)"
        else:
            suffix = f"(default: {shown(default)})"
        assert meanings.get(field.name), f"{cls.__name__}.{field.name} has no comment: no meaning in --help"
        assert flag in rows, f"rlhf {command} --help has no {flag} (field {field.name})"
        assert rows[flag] == " ".join(f"{meanings[field.name]} {suffix}".split()), field.name


def test_sft_help_shows_the_defaults_a_command_line_gets(capsys, monkeypatch):
    rows = help_rows("sft", capsys, monkeypatch)
    assert rows["--lora-r"] == "LoRA rank; 0 = full fine-tuning (default: 0)"
    assert rows["--lr"] == "peak learning rate (AdamW) (default: 0.0005)"
    assert rows["--epochs"] == "passes over the demonstrations when max_steps is -1 (default: 2.0)"
    assert rows["--resume"] == rows["--no-resume"] == "continue from the newest checkpoint in `out` (default: False)"
    assert rows["--model"] == "model directory in Hugging Face format (local; the Hub is never contacted) (required)"
    cfg = parse("sft", ["--model", "m", "--data", "d.jsonl"])
    assert (cfg.lora_r, cfg.lr, cfg.epochs, cfg.resume) == (0, 0.0005, 2.0, False)  # what --help said


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


@pytest.mark.parametrize("model", ["nosuch/dir", "runs/nosuch/model"])
def test_a_mistyped_model_is_named_before_torch_loads(model, tmp_path, demonstrations_file):
    """Issue 27 item 8: a bad --model took 5.2 s (torch and transformers imported to load a tokenizer)
    against 0.28 s for a missing data file. Where the model is neither a directory nor a Hub id in
    the cache, the CLI says so before importing torch, and writes nothing."""
    import os

    code = ("import sys; from rlhf.cli import main\n"
            f"code = main(['sft', '--model', {model!r}, '--data', {str(demonstrations_file)!r}, "
            f"'--out', {str(tmp_path / 'run')!r}])\n"
            "print(code, 'torch' in sys.modules)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.stdout.split() == ["1", "False"], result.stderr
    assert "--model: " in result.stderr and repr(model) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


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


def test_required_marks_in_help_leave_command_lines_alone(capsys, monkeypatch):
    assert help_rows("ppo", capsys, monkeypatch)["--model"].endswith("(required)")
    rest = ["--data", "p.txt", "--reward", "rlhf.demo.oracle:gold_reward"]
    assert parse("ppo", rest).model is None  # unset, not the marker --help printed "(required)" for
    assert parse("ppo", ["--model", "m", *rest]).model == "m"
    assert main(["ppo", *rest]) == 2
    assert capsys.readouterr().err.strip() == "rlhf ppo: missing required option(s) --model (see rlhf ppo --help)"


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


@pytest.mark.parametrize("command", ["eval", "eval rm", "eval policy"])
def test_eval_commands_show_progress_unless_no_progress(command, capsys, monkeypatch):
    rows = help_rows(command, capsys, monkeypatch)
    assert rows["--progress"] == rows["--no-progress"]
    assert rows["--progress"].startswith("show progress bars (") and rows["--progress"].endswith("(default: True)")
    given = (["--model", "rm", "--data", "c.jsonl"] if command == "eval rm" else
             ["--model", "m", "--reference", "r", "--data", "p.txt", "--judge", "rlhf.demo.oracle:gold_reward"])
    assert parse(command, given).progress is True
    assert parse(command, [*given, "--no-progress"]).progress is False
    assert parse(command, [*given, "--no-progress", "--progress"]).progress is True  # the last flag wins


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
