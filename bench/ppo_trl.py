"""The TRL side of bench/ppo.py: workers for TRL's RLOOTrainer / GRPOTrainer (the installed TRL)
and TRL 1.12's experimental PPOTrainer, each counting what it samples with a step clock.

Each worker takes the spec bench/ppo.py writes (model, prompts, reward, algo, kl, sizes) and
returns {"records": [{"step", "t", "samples", "tokens", ...}], "rewards", peak memory, "trl"}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import PhasePeak
import ppo_verifiable as verifiable


def _clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """(step, time, samples, tokens) at the start of training and after each step."""

        def __init__(self):
            self.records, self.tokens, self.samples = [], 0, 0
            self.counters = dict.fromkeys(verifiable.COUNTERS, 0)  # filled by worker_trl's reward hook

        def on_train_begin(self, args, state, control, **kwargs):
            self.records.append({"step": 0, "t": time.perf_counter(), "samples": 0, "tokens": 0, **self.counters})

        def on_step_end(self, args, state, control, **kwargs):
            self.records.append({"step": state.global_step, "t": time.perf_counter(), "samples": self.samples,
                                 "tokens": self.tokens, **self.counters})

    return StepClock()


def _relative(records: list[dict]) -> list[dict]:
    t0 = records[0]["t"]
    return [{**r, "t": r["t"] - t0} for r in records]


def _count_completions(clock, completion_ids, eos_id: int) -> None:
    """Add a batch of generated ids (N, T) to the clock: N samples and their tokens up to and including EOS."""
    import torch

    is_eos = completion_ids == eos_id
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.int().argmax(1) + 1, torch.full_like(has_eos, completion_ids.shape[1], dtype=torch.long))
    clock.samples += completion_ids.shape[0]
    clock.tokens += int(first.sum())


def worker_trl(spec: dict) -> dict:
    """TRL's RLOOTrainer / GRPOTrainer (installed TRL) on the same prompts, reward and settings
    (grpo-ds: GRPOTrainer as for grpo; TRL has no dynamic sampling)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    import trl

    algo, k = spec["algo"], spec["k"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], local_files_only=True)
    grpo = algo in ("grpo", "grpo-ds")
    Trainer, Config = (trl.GRPOTrainer, trl.GRPOConfig) if grpo else (trl.RLOOTrainer, trl.RLOOConfig)
    clock = _clock()

    class CountingTrainer(Trainer):
        def _generate_single_turn(self, *args, **kwargs):
            out = super()._generate_single_turn(*args, **kwargs)
            # GRPO returns (completion_ids, logprobs), RLOO completion_ids: token lists cut after the first EOS
            completion_ids = out[0] if isinstance(out, tuple) else out
            clock.samples += len(completion_ids)
            clock.tokens += sum(len(c) for c in completion_ids)
            return out

        def _calculate_rewards(self, *args, **kwargs):
            per_function = super()._calculate_rewards(*args, **kwargs)  # (N, reward functions), as TRL sums them
            rewards = (per_function * self.reward_weights.to(per_function.device)).nansum(dim=1)
            verifiable.count_batch(clock.counters, rewards.tolist(), k)
            return per_function

    extra = {"beta": spec["kl"]}
    if grpo:
        extra.update(scale_rewards="group", loss_type="dapo")
    args = Config(
        output_dir=spec["out"], seed=spec["seed"], max_steps=spec["steps"], per_device_train_batch_size=spec["samples"],
        num_generations=k, steps_per_generation=1, gradient_accumulation_steps=1, num_iterations=1,
        max_completion_length=spec["max_new_tokens"], temperature=1.0, top_k=0, top_p=1.0, epsilon=0.2,
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
        adam_beta2=0.95, max_grad_norm=1.0, gradient_checkpointing=False, bf16=spec["precision"] == "bf16", fp16=False,
        use_cpu=True, report_to="none", dataloader_num_workers=0, save_strategy="no", logging_steps=1,
        disable_tqdm=True, disable_dropout=True, **extra,
    )
    rows = [json.loads(line) for line in Path(spec["prompts"]).read_text().splitlines()]  # arithmetic: with "answer"
    reward = verifiable.trl_reward_function() if spec["task"] == "arithmetic" else spec["reward"]
    peak = PhasePeak()
    peak.start()
    trainer = CountingTrainer(model=spec["model"], reward_funcs=reward, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    peak.stop()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    # TRL's own share of groups with zero reward std per step: a check on the counts of the reward hook
    zero_std = [h["frac_reward_zero_std"] for h in trainer.state.log_history if "frac_reward_zero_std" in h]
    return {"records": _relative(clock.records), "rewards": rewards, "frac_reward_zero_std": zero_std,
            **peak.as_dict(), "trl": trl.__version__, "threads": torch.get_num_threads()}


def worker_trl_ppo(spec: dict) -> dict:
    """TRL 1.12's experimental PPOTrainer: policy, reference, reward model and value model from the same dirs."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    import trl
    import trl.experimental.ppo.ppo_trainer as ppo_module
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    clock = _clock()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], local_files_only=True)
    generate = ppo_module.batch_generation

    def counted_generation(model, queries, local_rollout_forward_batch_size, pad_token_id, generation_config):
        query_responses, logits = generate(model, queries, local_rollout_forward_batch_size, pad_token_id,
                                           generation_config)
        _count_completions(clock, query_responses[:, queries.shape[1]:], tokenizer.eos_token_id)
        return query_responses, logits

    ppo_module.batch_generation = counted_generation
    prompts = [json.loads(line)["prompt"] for line in Path(spec["prompts"]).read_text().splitlines()]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]})
    args = PPOConfig(
        output_dir=spec["out"], seed=spec["seed"], per_device_train_batch_size=spec["samples"],
        gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=4, total_episodes=spec["samples"] * spec["steps"],
        response_length=spec["max_new_tokens"], stop_token="eos", temperature=1.0, kl_coef=spec["kl"], kl_estimator="k1",
        cliprange=0.2, cliprange_value=0.2, learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, gradient_checkpointing=False,
        bf16=spec["precision"] == "bf16", fp16=False, use_cpu=True, report_to="none", dataloader_num_workers=0,
        save_strategy="no", logging_steps=1, num_sample_generations=0, local_rollout_forward_batch_size=spec["samples"],
        missing_eos_penalty=None, disable_tqdm=True,
    )
    peak = PhasePeak()
    peak.start()
    load = dict(local_files_only=True, dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], **load)
    ref = AutoModelForCausalLM.from_pretrained(spec["model"], **load)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], num_labels=1, **load)
    value = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], num_labels=1, **load)
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                         train_dataset=dataset, value_model=value, callbacks=[clock])
    trainer.train()
    peak.stop()
    rewards = [h["objective/scores"] for h in trainer.state.log_history if "objective/scores" in h]
    return {"records": _relative(clock.records), "rewards": rewards, **peak.as_dict(), "trl": trl.__version__,
            "threads": torch.get_num_threads()}
