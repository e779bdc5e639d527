"""A YAML config file is typed and checked field by field, as the flags are."""

import pytest

from rlhf.cli import parse
from rlhf.config import EvalPolicyConfig, PPOConfig, SFTConfig, load_yaml


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_numbers_written_as_yaml_strings_become_floats(tmp_path):
    # PyYAML reads `1e-4` (no dot) as the string "1e-4"; the field is a float.
    values = load_yaml(write(tmp_path, "lr: 1e-4\nbatch_size: 3\nkl_target: 2e-2\n"), PPOConfig)
    assert values == {"lr": 1e-4, "batch_size": 3, "kl_target": 0.02}
    assert isinstance(values["lr"], float)
    cfg = parse("sft", ["--config", str(write(tmp_path, "lr: 1e-4\n"))])
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)


def test_literal_refused_naming_file_field_and_choices(tmp_path):
    path = write(tmp_path, "lr: 0.1\nprecision: fp16\n")
    with pytest.raises(ValueError) as err:
        load_yaml(path, SFTConfig)
    message = str(err.value)
    assert str(path) in message and "precision" in message and "fp16" in message
    assert "fp32" in message and "bf16" in message
    assert ":2:" in message  # the line of the field


@pytest.mark.parametrize("text, field", [
    ("batch_size: 2.5\n", "batch_size"),   # int
    ("lr: fast\n", "lr"),                  # float
    ("resume: maybe\n", "resume"),         # bool
    ("resume: 1\n", "resume"),             # bool: a number is not a yes/no
    ("out: null\n", "out"),                # not optional
    ("out: [a, b]\n", "out"),              # one value, not a list
    ("lr: {a: 1}\n", "lr"),                # a mapping is never a field value
])
def test_wrong_types_are_refused(tmp_path, text, field):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        load_yaml(path, SFTConfig)
    assert str(path) in str(err.value) and field in str(err.value)


def test_bools_optionals_and_tuples(tmp_path):
    values = load_yaml(write(tmp_path, "resume: yes\nprogress: false\nmodel: null\n"), SFTConfig)
    assert values == {"resume": True, "progress": False, "model": None}
    values = load_yaml(write(tmp_path, "scorers: [a:b, c:d]\nmax_prompts: 4\n"), EvalPolicyConfig)
    assert values == {"scorers": ("a:b", "c:d"), "max_prompts": 4}
    assert load_yaml(write(tmp_path, "scorers: a:b\n"), EvalPolicyConfig) == {"scorers": ("a:b",)}


def test_invalid_value_from_the_file_names_the_file(tmp_path):
    path = write(tmp_path, "batch_size: 0\n")
    with pytest.raises(ValueError, match="c.yaml.*batch_size=0"):
        parse("sft", ["--config", str(path)])


def test_empty_file_sets_nothing(tmp_path):
    assert load_yaml(write(tmp_path, "# nothing yet\n"), SFTConfig) == {}


def test_unparsable_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "lr: [0.1\n")
    with pytest.raises(ValueError, match="c.yaml"):
        load_yaml(path, SFTConfig)


@pytest.mark.parametrize("cfg", [SFTConfig(model="m", lr=3e-5), PPOConfig(model="m", kl_target=0.1, algo="grpo"),
                                 EvalPolicyConfig(model="m")])
def test_a_written_config_reads_back_the_same(tmp_path, cfg):
    # A run's config.yaml (to_yaml) is enough to rerun it: every value survives the typed reading.
    from rlhf.config import to_yaml

    values = load_yaml(write(tmp_path, to_yaml(cfg)), type(cfg))
    assert type(cfg)(**values) == cfg
