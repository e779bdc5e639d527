"""The sizes of `rlhf demo`: how much of each stage the full demo and `--quick` run.

Kept apart from the orchestration in `rlhf.demo.pipeline` so the numbers that trade quality for time sit
together in one readable table. `seconds` are the measured seconds of each step, run alone with
both cores of a 2-core AMD EPYC with AVX2 only, in fp32, on 2026-12-02 (the steps that run side by
side: their time there divided by `rlhf.runtime.steps.SHARED_CORE_SLOWDOWN`; the first two of them
carry a worker's start-up), used only to estimate the time left in the progress display, which
scales them by how fast this machine has been so far.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoPlan:
    demonstrations: int  # SFT examples (openings of training stories with their own continuations)
    sft_epochs: float
    train_prompts: int  # distinct training openings sampled for labelling and RL
    label_budget: int  # oracle-labelled pairs: the reward model and DPO both train on exactly these
    heldout_pairs: int  # noiselessly labelled pairs on held-out prompts: reward-model accuracy vs gold
    eval_prompts: int  # held-out prompts for win rate and KL against SFT
    rm_epochs: float
    rm_lr: float  # reward model from the SFT policy
    rm_lr_encoder: float  # reward model from the MiniLM encoder
    rm_context_turns: int  # 0: the continuation alone, what the oracle judges (0.791 against gold, 19% fewer tokens than -1, prompt and continuation: 0.775)
    ppo_kl_coefs: tuple[float, ...]  # with --frontier, one PPO run per KL coefficient: the reward-vs-KL frontier
    ppo_kl_headline: float  # the run reported as "ppo" in summary.json
    ppo_steps: int
    ppo_batch: int  # prompts per rollout step
    ppo_lr: float
    ppo_update_epochs: int  # passes over each rollout
    ppo_missing_eos_penalty: float  # subtracted from the reward of a PPO response that does not end (stories must end)
    group_steps: int  # RLOO and GRPO rollout steps
    group_batch: int  # prompts per step (each sampled `group_samples` times)
    group_samples: int
    group_lr: float  # GRPO
    rloo_lr: float  # RLOO: its advantages are not divided by the group's std, so its steps are smaller at one rate
    group_kl_coef: float
    dpo_betas: tuple[float, ...]  # with --frontier, one DPO run per beta
    dpo_beta_headline: float
    dpo_epochs: float
    dpo_lr: float
    dpo_batch: int  # pairs per optimiser step
    online_rounds: int  # online DPO: label_budget // online_rounds prompts labelled per round
    max_new_tokens: int
    sample_batch: int  # sequences decoded together when labelling and evaluating (larger batches use the CPU better)
    seconds: dict  # expected wall time per step kind (progress estimate only)


FULL = DemoPlan(
    demonstrations=1200, sft_epochs=1.0, train_prompts=847, label_budget=2000, heldout_pairs=256,
    eval_prompts=128, rm_epochs=1.0, rm_lr=1e-4, rm_lr_encoder=8e-5, rm_context_turns=0,
    ppo_kl_coefs=(0.02, 0.05, 0.15), ppo_kl_headline=0.05, ppo_steps=20, ppo_batch=32, ppo_lr=5e-5, ppo_update_epochs=4,
    ppo_missing_eos_penalty=0.0,
    group_steps=20, group_batch=16, group_samples=4, group_lr=5e-5, rloo_lr=1e-4, group_kl_coef=0.05,
    dpo_betas=(0.02, 0.05, 0.2), dpo_beta_headline=0.05, dpo_epochs=1.0, dpo_lr=1e-4, dpo_batch=8, online_rounds=4,
    max_new_tokens=48, sample_batch=256,
    seconds={"data": 1, "sft": 39, "label": 63, "rm": 196, "ppo": 184, "rloo": 95, "grpo": 95, "dpo": 161,
             "online_dpo": 203, "eval": 6, "report": 10},
)

QUICK = DemoPlan(
    demonstrations=128, sft_epochs=1.0, train_prompts=48, label_budget=96, heldout_pairs=32,
    eval_prompts=16, rm_epochs=1.0, rm_lr=1e-4, rm_lr_encoder=5e-5, rm_context_turns=0,
    ppo_kl_coefs=(0.02, 0.05, 0.15), ppo_kl_headline=0.05, ppo_steps=2, ppo_batch=8, ppo_lr=5e-5, ppo_update_epochs=2,
    ppo_missing_eos_penalty=0.0,
    group_steps=2, group_batch=4, group_samples=2, group_lr=5e-5, rloo_lr=1e-4, group_kl_coef=0.05,
    dpo_betas=(0.02, 0.05, 0.2), dpo_beta_headline=0.05, dpo_epochs=1.0, dpo_lr=5e-5, dpo_batch=8, online_rounds=2,
    max_new_tokens=16, sample_batch=64,
    seconds={"data": 0.6, "sft": 4.0, "label": 2.3, "rm": 11.5, "ppo": 2.3, "rloo": 1.4, "grpo": 1.3, "dpo": 9.1,
             "online_dpo": 5.6, "eval": 0.8, "report": 8},
)
