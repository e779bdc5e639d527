"""The fields several configs share are declared once (SamplingFields), and every config reports
invalid values the same way (check_fields)."""

import dataclasses

import pytest

from rlhf.config import EvalPolicyConfig, GenerateConfig, PPOConfig, ServeConfig
from rlhf.config.base import SamplingFields, check_fields

SAMPLING = [f.name for f in dataclasses.fields(SamplingFields)]


@pytest.mark.parametrize("cls", [PPOConfig, GenerateConfig, EvalPolicyConfig])
def test_sampling_configs_share_the_fields_and_their_checks(cls):
    assert issubclass(cls, SamplingFields)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    assert {n: defaults[n] for n in SAMPLING} == {"max_new_tokens": 48, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    with pytest.raises(ValueError, match=r"invalid value for max_new_tokens=256, top_p=0\.0"):
        cls(max_new_tokens=256, max_length=256, top_p=0.0)


def test_only_ppo_refuses_greedy_sampling():
    assert GenerateConfig(temperature=0.0).temperature == 0.0
    with pytest.raises(ValueError, match="temperature=0.0"):
        PPOConfig(temperature=0.0)


def test_check_fields_names_every_bad_value_and_the_hint():
    with pytest.raises(ValueError, match=r"^invalid value for port=-1, max_n=0$"):
        ServeConfig(port=-1, max_n=0)
    cfg = ServeConfig()
    check_fields(cfg, {"port": True})  # nothing raised
    with pytest.raises(ValueError, match=r"^invalid value for port=8000 \(why\)$"):
        check_fields(cfg, {"port": False}, "why")
