"""`rlhf ppo`'s algorithm registry and options: every record's names resolve to the math in
rlhf.algos, --help lists each algorithm with its description, each algorithm's options resolve to
hand-written values; every algorithm's first update at learning rate 0 has ratio 1 and
nothing clipped; dynamic sampling, overlong shaping, truncation masking, the entropy bonus and
verifiable rewards with per-part logging; truncated importance sampling by hand, and the gap that
bf16 rollouts beside fp32 training open (--rollout-precision)."""

import dataclasses
import json
import math
import typing

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

import rlhf.algos
from rlhf import cli
from rlhf.config import PPOConfig
from rlhf.config.algorithms import (
    ALGORITHM_NAMES,
    ALGORITHMS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    RATIO_LEVELS,
)
from rlhf.config.fields import field_types
from rlhf.data.records import Rollout
from rlhf.train import ppo
from rlhf.rollout.experience import Sampled, concat_rollouts
from rlhf.rollout.kv_sampler import dynamic_sampling, rollout_precision
from rlhf.runtime import bf16_supported
from rlhf.train.ppo_update import Experience, advantages_of, loss_mask_of, policy_loss_of

RULE = "ppo_variant_rewards:length"  # varies even on the tiny model's gibberish, so advantages are not 0
RULE_SOURCE = """
def length(prompts, responses):
    return [len(r) / 10 for r in responses]


def length_if_answered(prompts, responses, answers):
    return [len(r) / 10 + (a is not None) for r, a in zip(responses, answers)]
"""
PROMPTS = ["Once upon a time", "The dog was", "Tom had a red ball.", "Sue liked"]


@pytest.fixture(autouse=True)
def rule_reward_module(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "variant-rule-reward"
    root.mkdir(exist_ok=True)
    (root / "ppo_variant_rewards.py").write_text(RULE_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("variant-prompts") / "prompts.jsonl"
    rows = [{"prompt": p, "answer": str(i)} for i, p in enumerate(PROMPTS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def config(model, prompts, out, **overrides):
    base = dict(model=str(model), data=str(prompts), out=str(out), reward=RULE, max_steps=1, batch_size=2,
                minibatch_size=4, max_new_tokens=6, max_length=48, lr=0.0, precision="fp32", save_every=0,
                progress=False, samples_every=0, seed=3, kl_coef=0.1)
    return PPOConfig(**{**base, **overrides})


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- the registry


def test_every_record_names_real_math_in_algos():
    # The registry is torch-free and names its math; each name must be a function of rlhf.algos,
    # and the tables the config writes by hand must match the ones rlhf.algos writes.
    assert set(ALGORITHMS) == set(EXPECTED_OPTIONS)  # a new algorithm needs its expected options below
    for name, algo in ALGORITHMS.items():
        assert callable(rlhf.algos.ADVANTAGE_ESTIMATORS.get(algo.advantage)), (name, algo.advantage)
        assert callable(rlhf.algos.POLICY_LOSSES.get(algo.policy_loss)), (name, algo.policy_loss)
        assert algo.uses_critic == (algo.advantage == "gae"), name  # only GAE reads the critic's values
        assert algo.default_samples >= algo.min_samples, name
    assert set(rlhf.algos.POLICY_LOSSES) == set(POLICY_LOSSES)
    assert set(rlhf.algos.LOSS_AGGREGATIONS) == set(LOSS_AGGREGATIONS)
    assert set(rlhf.algos.LOG_RATIOS) == set(RATIO_LEVELS)
    assert typing.get_args(typing.get_args(field_types(PPOConfig)["loss_agg"])[0]) == tuple(LOSS_AGGREGATIONS)


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_min_samples_is_what_the_estimator_needs(name):
    # a group estimator refuses k = 1; min_samples must say so, or the config lets a run through that fails
    algo = ALGORITHMS[name]
    score, mask = torch.tensor([1.0, 2.0]), torch.ones(2, 3)
    estimator = rlhf.algos.ADVANTAGE_ESTIMATORS[algo.advantage]
    values = torch.zeros(2, 3) if algo.uses_critic else None
    if algo.min_samples > 1:
        with pytest.raises(ValueError, match="k >= 2"):
            estimator(score, torch.zeros(2, 3), mask, values, rlhf.algos.EstimatorSettings(k=1))
    else:
        advantages, _ = estimator(score, torch.zeros(2, 3), mask, values, rlhf.algos.EstimatorSettings(k=1))
        assert advantages.shape == (2, 3)


def test_help_lists_every_algorithm_with_its_description(capsys):
    with pytest.raises(SystemExit):
        cli.main(["ppo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, algo in ALGORITHMS.items():
        assert f"{name}: {' '.join(algo.description.split())} [advantage={algo.advantage}, " \
               f"loss={algo.policy_loss}, k={algo.default_samples}" in text, name
    for name in (*POLICY_LOSSES, *LOSS_AGGREGATIONS, *RATIO_LEVELS):
        assert f"{name}:" in text, name
    for flag in ("--clip-high", "--loss-agg", "--dynamic-sampling", "--overlong-buffer", "--mask-truncated",
                 "--entropy-coef"):
        assert flag in text


# Written by hand from the papers, not from the registry: what `--algo NAME` with every other flag at
# its default (clip 0.2) resolves to.
#   (advantage, policy loss, k, epochs, kl in reward, kl estimator, clip low, clip high, ratio level,
#    loss aggregation, divide by the group std, dynamic sampling)
EXPECTED_OPTIONS = {
    "ppo": ("gae", "clipped", 1, 4, True, "k1", 0.2, 0.2, "token", "token-mean", True, False),
    "rloo": ("rloo", "clipped", 4, 1, True, "k1", 0.2, 0.2, "token", "token-mean", True, False),
    "grpo": ("grpo", "clipped", 4, 1, False, "k3", 0.2, 0.2, "token", "token-mean", True, False),
    "reinforce": ("reinforce", "pg", 1, 1, True, "k1", 0.2, 0.2, "token", "token-mean", True, False),
    "reinforce++": ("reinforce++", "clipped", 1, 1, True, "k1", 0.2, 0.2, "token", "token-mean", True, False),
    "reinforce++-baseline": ("reinforce++-baseline", "clipped", 4, 1, False, "k3", 0.2, 0.2, "token", "token-mean",
                             True, False),
    "dapo": ("grpo", "clipped", 4, 1, False, "k3", 0.2, 0.28, "token", "token-mean", True, True),
    "dr-grpo": ("grpo", "clipped", 4, 1, False, "k3", 0.2, 0.2, "token", "seq-mean-token-sum-norm", False, False),
    "gspo": ("grpo", "clipped", 4, 1, False, "k3", 3e-4, 4e-4, "sequence", "seq-mean-token-mean", True, False),
    "cispo": ("grpo", "cispo", 4, 1, False, "k3", 1.0, 0.28, "token", "token-mean", True, False),
}


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_each_algorithm_resolves_to_its_papers_options(name):
    o = ppo.resolve_options(PPOConfig(algo=name))
    assert (o.advantage, o.policy_loss, o.k, o.epochs, o.kl_in_reward, o.kl_estimator, o.clip, o.clip_high,
            o.ratio_level, o.loss_agg, o.grpo_scale_by_std, o.dynamic_sampling) == EXPECTED_OPTIONS[name]


def test_flags_win_over_the_algorithms_options():
    assert ppo.resolve_options(PPOConfig(algo="gspo", clip_high=1e-3)).clip_high == 1e-3
    assert ppo.resolve_options(PPOConfig(algo="gspo", loss_agg="token-mean")).loss_agg == "token-mean"
    plain = ppo.resolve_options(PPOConfig(algo="grpo", clip=0.1))  # --clip is the symmetric shorthand
    assert (plain.clip, plain.clip_high, plain.ratio_level, plain.loss_agg) == (0.1, 0.1, "token", "token-mean")
    assert ppo.resolve_options(PPOConfig(algo="dapo", clip=0.1)).clip == 0.2  # the record's clip_low is set
    # the switches that are what an algorithm is stay on; the flags turn them on anywhere
    assert not ppo.resolve_options(PPOConfig(algo="dr-grpo", grpo_scale_by_std=True)).grpo_scale_by_std
    assert not ppo.resolve_options(PPOConfig(algo="grpo", grpo_scale_by_std=False)).grpo_scale_by_std
    assert ppo.resolve_options(PPOConfig(algo="grpo", dynamic_sampling=True)).dynamic_sampling
    assert ppo.resolve_options(PPOConfig(algo="grpo", kl_in="reward", num_samples=2)).k == 2


def test_config_refuses_contradictions():
    with pytest.raises(ValueError, match="plain policy gradient"):
        PPOConfig(algo="reinforce", clip_high=0.3)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        PPOConfig(algo="reinforce++", dynamic_sampling=True)
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        PPOConfig(algo="dapo", num_samples=1)
    with pytest.raises(ValueError, match="overlong_buffer"):
        PPOConfig(overlong_buffer=60, max_new_tokens=48)
    with pytest.raises(ValueError, match="clip_low"):
        PPOConfig(clip_low=1.5)


# ---------------------------------------------------------------- estimators by hand


def _experience(score, mask, ended=None):
    b, t = mask.shape
    ended = mask.sum(1) < t if ended is None else ended
    rollout = Rollout(torch.ones(b, 1, dtype=torch.long), torch.ones(b, 1, dtype=torch.long),
                      torch.ones(b, t, dtype=torch.long), mask, torch.zeros(b, t), ended)
    zeros = torch.zeros(b, t)
    return Experience(rollout, zeros, zeros, None, score, zeros)


def test_reinforce_pp_puts_the_kl_in_the_token_reward():
    # score 2, KL 0.5 per token at beta 0.1: rewards [-0.05, -0.05, 1.95] -> returns [1.85, 1.9, 1.95];
    # mean 1.9, unbiased std 0.05 -> A = [-1, 0, 1]
    opts = ppo.resolve_options(PPOConfig(algo="reinforce++"))
    exp = _experience(torch.tensor([2.0]), torch.ones(1, 3, dtype=torch.long), torch.tensor([True]))
    adv, ret = advantages_of(exp, torch.full((1, 3), 0.5), 0.1, opts)
    assert ret is None
    assert_close(adv, torch.tensor([[-1.0, 0.0, 1.0]]), rtol=1e-4, atol=1e-4)


def test_reinforce_pp_baseline_removes_the_group_mean_first():
    # scores [1, 3 | 2, 2], k = 2, KL as a loss (not in the reward): [-1, 1, 0, 0] / sqrt(2/3)
    opts = dataclasses.replace(ppo.resolve_options(PPOConfig(algo="reinforce++-baseline")), k=2)
    exp = _experience(torch.tensor([1.0, 3.0, 2.0, 2.0]), torch.ones(4, 1, dtype=torch.long))
    adv, _ = advantages_of(exp, None, 0.1, opts)
    s = math.sqrt(2 / 3)
    assert_close(adv.flatten(), torch.tensor([-1 / s, 1 / s, 0.0, 0.0]), rtol=1e-5, atol=1e-6)


def test_truncated_responses_carry_no_gradient():
    opts = dataclasses.replace(ppo.resolve_options(PPOConfig(algo="grpo", mask_truncated=True)))
    mask = torch.ones(2, 3, dtype=torch.long)
    exp = _experience(torch.zeros(2), mask, ended=torch.tensor([True, False]))
    loss_mask = loss_mask_of(exp, opts)
    assert loss_mask.tolist() == [[1, 1, 1], [0, 0, 0]]
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss_of(logp, torch.zeros(2, 3), torch.ones(2), loss_mask, opts)
    loss.backward()
    assert logp.grad[1].abs().sum() == 0 and logp.grad[0].abs().sum() > 0
    assert loss_mask_of(exp, dataclasses.replace(opts, mask_truncated=False)).tolist() == mask.tolist()


# ---------------------------------------------------------------- dynamic sampling


def _sampled(scores, width):
    b = len(scores)
    rollout = Rollout(torch.full((b, 2), 5), torch.ones(b, 2, dtype=torch.long), torch.full((b, width), 7),
                      torch.ones(b, width, dtype=torch.long), torch.zeros(b, width), torch.ones(b, dtype=torch.bool))
    score = torch.tensor(scores)
    return Sampled(rollout, [f"p{i // 2}" for i in range(b)], [None] * b, [f"r{i}" for i in range(b)], score,
                   score, {"part": score * 10})


def test_dynamic_sampling_keeps_informative_groups_and_samples_more():
    first = _sampled([1.0, 1.0, 0.0, 1.0], width=3)  # groups of k=2: equal, informative
    second = _sampled([2.0, 2.0, 3.0, 4.0], width=5)  # equal, informative
    calls = []
    batch, stats = dynamic_sampling(first, lambda r: calls.append(r) or second, groups=2, k=2, max_rounds=4, pad_id=0)
    assert calls == [1]
    assert batch.score.tolist() == [0.0, 1.0, 3.0, 4.0]  # the informative groups, in sampling order
    assert batch.parts["part"].tolist() == [0.0, 10.0, 30.0, 40.0]
    assert batch.rollout.response_ids.shape == (4, 5)  # padded to the widest round
    assert batch.rollout.response_mask.sum(1).tolist() == [3, 3, 5, 5]
    assert stats == {"dropped_group_share": 0.5, "sampling_rounds": 2, "filled_groups": 0,
                     "reward_sampled": pytest.approx(14 / 8)}  # (1+1+0+1 + 2+2+3+4) / 8


def test_dynamic_sampling_fills_a_short_batch_after_the_last_round():
    first = _sampled([1.0, 1.0, 0.0, 1.0], width=3)
    batch, stats = dynamic_sampling(first, None, groups=2, k=2, max_rounds=4, pad_id=0)
    assert batch.score.tolist() == [0.0, 1.0, 1.0, 1.0]  # the informative group first, then a dropped one
    assert (stats["sampling_rounds"], stats["filled_groups"]) == (1, 1)


def test_concat_rollouts_pads_prompts_left_and_responses_right():
    a, b = _sampled([0.0], 2).rollout, _sampled([0.0], 3).rollout
    b.prompt_ids, b.prompt_mask = torch.full((1, 4), 5), torch.ones(1, 4, dtype=torch.long)
    joined = concat_rollouts([a, b], pad_id=0)
    assert joined.prompt_ids.tolist() == [[0, 0, 5, 5], [5, 5, 5, 5]]
    assert joined.prompt_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert joined.response_ids.tolist() == [[7, 7, 0], [7, 7, 7]]


# ---------------------------------------------------------------- every algorithm at learning rate 0


@pytest.mark.parametrize("algo", ALGORITHM_NAMES)
def test_first_update_at_lr0_has_ratio_one_and_nothing_clipped(algo, tiny_model_dir, prompts_file, tmp_path):
    # 8 rows (2 prompts x k=4, or 4 prompts x 1 sample) in minibatches of 4, two epochs (ppo: its 4 epochs
    # of 2): log pi_old comes from the rollout's forward, and the ratio compares two separate forwards
    k = ppo.resolve_options(PPOConfig(algo=algo)).k
    cfg = config(tiny_model_dir, prompts_file, tmp_path, algo=algo, batch_size=8 // max(k, 2),
                 minibatch_size=2 if algo == "ppo" else 4, update_epochs=0 if algo == "ppo" else 2,
                 entropy_coef=0.01 if algo == "dapo" else 0.0)
    ppo.run(cfg)
    (line,) = metrics(tmp_path)
    assert line["ratio_first"] == 1.0 and line["ratio_mean"] == 1.0, line
    assert line.get("clipfrac", 0.0) == 0.0 and line["approx_kl"] == 0.0
    assert line["advantage_std"] > 0  # advantages are not all 0, so a clip could have shown
    if ppo.resolve_options(cfg).dynamic_sampling:
        assert 0 <= line["dropped_group_share"] <= 1 and line["sampling_rounds"] >= 1


def test_entropy_bonus_enters_the_gradient(tiny_model_dir, prompts_file, tmp_path):
    runs = {}
    for coef in (0.0, 1.0):
        out = tmp_path / str(coef)
        ppo.run(config(tiny_model_dir, prompts_file, out, algo="grpo", entropy_coef=coef))
        runs[coef] = metrics(out)[0]
    assert runs[1.0]["reward"] == runs[0.0]["reward"]  # the same samples
    assert runs[1.0]["entropy_bonus"] == pytest.approx(runs[1.0]["entropy"], rel=1e-4)  # token mean of the entropy
    # The tiny model's policy is near uniform, where the entropy is near its maximum and its gradient
    # small: the norms differ by 0.02-0.2% depending on the samples (seeds 1-4), against ~1e-7 of
    # rounding between the two forward paths had the bonus no gradient.
    assert runs[1.0]["grad_norm"] != pytest.approx(runs[0.0]["grad_norm"], rel=1e-5)


def test_verifiable_reward_parts_and_overlong_penalty_logged(tiny_model_dir, prompts_file, tmp_path):
    cfg = config(tiny_model_dir, prompts_file, tmp_path, algo="grpo", reward="rlhf.rewards.verifiable:correct_with_format",
                 overlong_buffer=6, overlong_penalty=0.5, mask_truncated=True, normalize_reward=False)
    ppo.run(cfg)
    (line,) = metrics(tmp_path)
    assert {"reward/exact_match", "reward/answer_format"} <= set(line)
    assert line["reward"] == pytest.approx(line["reward/exact_match"] + 0.1 * line["reward/answer_format"], abs=1e-6)
    # buffer = max_new_tokens: every response of n tokens loses 0.5 * n / 6 (0.5 when it reaches 6)
    lengths_penalty = 0.5 * line["response_length"] / 6
    assert line["reward_normalized"] == pytest.approx(line["reward"] - lengths_penalty, abs=1e-5)


def test_gold_scorer_gets_each_rows_answer(tiny_model_dir, prompts_file, tmp_path):
    # --gold with a program that checks answers (the arithmetic task's over-optimisation runs) reads the
    # prompt rows' "answer" as the reward does; before, the gold scorer was called without them and failed.
    # The gold is the reward (response length / 10) plus 1 where the row's answer reached it.
    cfg = config(tiny_model_dir, prompts_file, tmp_path, algo="grpo", gold="ppo_variant_rewards:length_if_answered",
                 normalize_reward=False)
    ppo.run(cfg)
    (line,) = metrics(tmp_path)
    assert line["gold"] == pytest.approx(line["reward"] + 1.0, abs=1e-5)


def test_cispo_trains_through_its_clipped_weights(tiny_model_dir, prompts_file, tmp_path):
    # 2 prompts x 4 samples, minibatches of 4, two epochs at a large learning rate: the later minibatches
    # see ratios away from 1, some past 1 + clip_high, and still move the weights (their tokens keep a gradient)
    cfg = config(tiny_model_dir, prompts_file, tmp_path, algo="cispo", batch_size=2, minibatch_size=4,
                 update_epochs=2, lr=0.05, max_steps=2, clip_high=0.01)
    model_dir = ppo.run(cfg)
    lines = metrics(tmp_path)
    assert all(math.isfinite(line["loss"]) for line in lines)
    assert any(line["clipfrac"] > 0 for line in lines) and any(line["ratio_mean"] != 1.0 for line in lines)
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(model_dir / "model.safetensors"))
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_truncated_importance_sampling_weights_each_tokens_term():
    # pi = pi_old everywhere (ratio 1, A = 1: the clipped surrogate is -1 per token); the sampler's
    # log-probs differ: log pi_old - log pi_sampler = (0, +1, -1 | 0, +1, padding)
    opts = ppo.resolve_options(PPOConfig(algo="grpo", tis_cap=2.0))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    old = torch.zeros(2, 3)
    sampler = torch.tensor([[0.0, -1.0, 1.0], [0.0, -1.0, 0.0]])
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss_of(logp, old, torch.ones(2), mask, opts, sampler_logp=sampler)
    # weights min(ratio, 2): 1, 2 (e^1 capped), e^-1 | 1, 2; token mean over 5 tokens
    assert_close(loss, -torch.tensor((1 + 2 + math.exp(-1) + 1 + 2) / 5))
    plain, _ = policy_loss_of(logp, old, torch.ones(2), mask, dataclasses.replace(opts, tis_cap=0.0),
                              sampler_logp=sampler)
    assert_close(plain, torch.tensor(-1.0))  # --tis-cap 0: no correction
    dropped, _ = policy_loss_of(logp, old, torch.ones(2), mask, dataclasses.replace(opts, tis_level="sequence"),
                                sampler_logp=sampler)
    # sequence ratios e^0 (kept) and e^1 > 2 (dropped): row 0's three tokens of the five count
    assert_close(dropped, torch.tensor(-3 / 5))


def test_a_run_logs_the_sampler_trainer_gap(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "grpo"
    ppo.run(config(tiny_model_dir, prompts_file, out, algo="grpo", tis_level="sequence", max_steps=1))
    last = metrics(out)[-1]
    assert {"tis/gap_max", "tis/capped_share", "tis/dropped_share", "logprob_gap"} <= set(last)
    assert 0 <= last["tis/capped_share"] <= 1 and last["tis/gap_max"] >= last["logprob_gap"] >= 0


def test_rollout_precision_auto_follows_the_trainer_in_the_built_in_sampler_and_is_fp32_in_an_engine():
    assert rollout_precision(PPOConfig(precision="bf16"), engine="rlhf") == "bf16"
    assert rollout_precision(PPOConfig(precision="fp32"), engine="rlhf") == "fp32"
    assert rollout_precision(PPOConfig(precision="bf16"), engine="vllm") == "fp32"
    assert rollout_precision(PPOConfig(precision="fp32", rollout_precision="bf16"), engine="vllm") == "bf16"


def test_bf16_rollouts_beside_fp32_training_open_the_gap_tis_sees(tiny_model_dir, prompts_file, tmp_path):
    """One step (its samples drawn by the weights it trains): the gap is the numerics' alone."""
    runs = {}
    for name, extra in (("fp32", {}), ("bf16", {"rollout_precision": "bf16"})):
        ppo.run(config(tiny_model_dir, prompts_file, tmp_path / name, algo="grpo", max_new_tokens=12, **extra))
        runs[name] = metrics(tmp_path / name)[0], json.loads((tmp_path / name / "summary.json").read_text())
    (same, same_summary), (mixed, mixed_summary) = runs["fp32"], runs["bf16"]
    assert same_summary["rollout_precision"] == "fp32" and same["logprob_gap"] < 1e-5  # two fp32 kernels
    if bf16_supported(torch.device("cpu")):
        # bf16's 8-bit mantissa against fp32 (measured on the tiny model, 2-core EPYC with
        # avx512_bf16: mean 5.6e-4, max 2.9e-3 per token, against 2e-7 with fp32 rollouts)
        assert mixed_summary["rollout_precision"] == "bf16"
        assert 1e-4 < mixed["logprob_gap"] < 0.1 and mixed["logprob_gap"] > 100 * same["logprob_gap"]
    else:  # no avx512_bf16 / amx_bf16: a bf16 decode would be emulated, so the sampler stays fp32 and says so
        assert mixed_summary["rollout_precision"] == "fp32" and mixed["logprob_gap"] < 1e-5
