"""Configs of the stages that sample from a policy: ppo, generate, eval policy, demo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .algorithms import ALGORITHMS, AlgoName, LossAggName, RatioLevelName, help_text
from .base import SamplingFields, TrainConfig, check_fields


@dataclass(frozen=True)
class PPOConfig(SamplingFields, TrainConfig):
    """`rlhf ppo`: online RL from a reward (a reward model or any `module:function` scorer):
    PPO with a critic, or the critic-free RLOO, GRPO and REINFORCE, with a KL penalty to the
    reference (the starting policy)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "data", "reward")  # --help says (required); rlhf ppo refuses a run without them

    model: str | None = None  # the policy to train (e.g. runs/sft/model); also the reference unless --reference
    data: str | None = None  # prompts: {"prompt"} rows (text or conversation) or a .txt with one per line
    eval_data: str | None = None  # held-out prompts: at the end (and every eval_every steps), win rate against the reference judged by --gold (else the reward) and KL to the reference
    out: str = "runs/ppo"  # run directory: config.yaml, metrics.jsonl, samples.jsonl, summary.json, model/, checkpoints/
    algo: AlgoName = "ppo"  # the algorithm (rlhf.config.algorithms: listed above with what each sets)
    reward: str | None = None  # the reward: a reward-model directory (from `rlhf rm`) or module:function scoring (prompts, responses) -> floats
    gold: str | None = None  # optional gold scorer (same forms as --reward), logged beside the reward to expose over-optimisation
    reference: str | None = None  # reference model directory; default: the starting --model (with LoRA: the policy with its adapter disabled)
    critic: str | None = None  # ppo: directory the critic starts from (sharing the policy's tokenizer); default: a causal reward model (rlhf ppo refuses one whose tokenizer differs), else --model
    max_steps: int = -1  # rollout steps to run (each: sample, score, update); -1 = as many as `epochs` gives
    epochs: float = 1.0  # passes over the prompts when max_steps is -1
    batch_size: int = 32  # prompts per rollout step (each sampled num_samples times)
    num_samples: int = 0  # responses per prompt (k); 0 = the algorithm's default (ppo, reinforce: 1; rloo, grpo: 4)
    minibatch_size: int = 32  # sequences per optimiser step in the update phase
    grad_accum: int = 1  # micro-batches each minibatch is split into (less memory, same gradient)
    update_epochs: int = 0  # passes over each rollout in the update phase; 0 = the algorithm's default (ppo: 4; rloo, grpo, reinforce: 1)
    lr: float = 1e-5  # policy learning rate (AdamW)
    critic_lr: float = 1e-4  # ppo: critic learning rate (AdamW)
    min_lr_ratio: float = 1.0  # cosine decays to lr * min_lr_ratio over the run; 1 = constant learning rate
    max_length: int = 256  # prompt + response tokens (prompts are cut from the left to leave room for max_new_tokens)
    temperature: float = 1.0  # sampling temperature (the policy trained is softmax(logits / temperature))
    kl_coef: float = 0.05  # beta: weight of the KL to the reference (initial value when adaptive)
    kl_target: float | None = None  # adaptive KL (Ziegler et al. 2019): target KL per sequence in nats; unset = fixed kl_coef
    kl_horizon: float = 10000.0  # adaptive KL: samples over which the coefficient adapts
    kl_in: Literal["auto", "reward", "loss"] = "auto"  # where the KL goes: per-token reward penalty or a loss term; auto: loss for grpo, reward otherwise (ppo needs reward)
    kl_estimator: Literal["auto", "k1", "k2", "k3"] = "auto"  # KL estimator penalised; auto: k1 in the reward, k3 as a loss term (all three are logged)
    gamma: float = 1.0  # ppo, reinforce++: discount over response tokens
    lam: float = 0.95  # ppo: GAE lambda
    clip: float = 0.2  # policy ratio clip range (ppo, rloo, grpo)
    dual_clip: float = 3.0  # where the advantage is negative, bound the clipped objective by dual_clip * A (Ye et al. 2020; > 1); 0 = off
    clip_low: float | None = None  # ratio clipped below at 1 - clip_low; unset = the algorithm's (gspo: 3e-4), else --clip
    clip_high: float | None = None  # ratio clipped above at 1 + clip_high (DAPO's clip-higher: 0.28); unset = the algorithm's, else the low clip
    ratio_level: RatioLevelName | None = None  # importance ratio per token (PPO) or per sequence (GSPO); unset = the algorithm's, else token
    loss_agg: LossAggName | None = None  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm (Dr. GRPO: / max_new_tokens); unset = the algorithm's, else token-mean
    entropy_coef: float = 0.0  # weight of an entropy bonus (entropy of the sampling distribution per token, aggregated as the loss)
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards all equal and sample more prompts until the batch is full (on with --algo dapo)
    max_sampling_rounds: int = 4  # dynamic sampling: sampling rounds per step at most; a batch still short is filled with dropped groups
    overlong_buffer: int = 0  # DAPO's soft overlong penalty over the last N tokens before max_new_tokens (linear to -overlong_penalty); 0 = off
    overlong_penalty: float = 1.0  # the penalty of a response reaching max_new_tokens when overlong_buffer > 0
    mask_truncated: bool = False  # responses that never reached EOS count in the baselines but are masked out of the loss
    tis_cap: float = 2.0  # truncated importance sampling: each token's policy-gradient term weighted by min(pi_old/pi_sampler, C) (Yao et al. 2025); 0 = off
    tis_level: Literal["token", "sequence"] = "token"  # token: the capped per-token weight; sequence: drop the sequences whose ratio leaves [1/C, C]
    rollout_precision: Literal["auto", "fp32", "bf16"] = "auto"  # what the sampler computes in: bf16 decodes in bf16 beside the trainer's --precision (faster where bf16 is native; the log-prob gap it opens is what --tis-cap corrects); auto: the built-in sampler as --precision, the vLLM engine fp32
    rollout_engine: Literal["rlhf", "vllm"] = "rlhf"  # who samples the rollouts: rlhf's own KV-cache sampler, or an in-process vLLM engine synced to the policy before each step (a separate install: docs/vllm.md)
    async_staleness: int = 0  # asynchronous RL: a worker process samples up to K steps ahead while the learner updates, so step t trains on samples of the weights of step t-K (decoupled PPO with the --tis-cap correction; docs/async.md); 0 = sample, then update
    value_clip: float = 0.2  # ppo: value clip range around the rollout's values
    whiten_advantages: bool = True  # ppo: normalise advantages to zero mean, unit variance over each rollout
    grpo_scale_by_std: bool = True  # grpo: divide by the group's reward std (off = Dr. GRPO)
    normalize_reward: bool = True  # a reward model's score is (r - mean) / std with its stored training-set statistics
    reward_clip: float = 5.0  # clip the (normalised) score to [-reward_clip, reward_clip]; 0 = off
    missing_eos_penalty: float = 0.0  # subtracted from the score of responses that never reach EOS
    reward_aggregate: Literal["mean", "min", "mean-minus-std"] = "mean"  # --reward an ensemble (rlhf rm --ensemble K): its members' standardised scores combined by their mean, min (worst case) or mean - uncertainty_coef * std (Coste et al. 2023)
    uncertainty_coef: float = 1.0  # reward_aggregate mean-minus-std: L, the weight of the members' standard deviation
    samples_every: int = 10  # write sample responses to samples.jsonl every N steps (0 = off)
    num_eval_prompts: int = 128  # held-out prompts (from eval_data) used for the win rate and KL
    save_every: int = 20  # checkpoint every N rollout steps (0 = only at the end)
    log_every: int = 1  # log metrics every N rollout steps
    guard_window: int = 10  # over-optimisation guard (no gold needed): rollout steps per window; the first window is the baseline each later window is compared with; 0 = off
    guard_patience: int = 3  # guard: rollout steps in a row a signal must stay past its threshold before it warns
    guard_thresholds: tuple[str, ...] = ()  # guard: NAME=VALUE overrides of the signals' thresholds (e.g. eos_drop=0.4; names and defaults in rlhf.eval.overopt.SIGNALS); 0 = no warning from that signal
    guard_save_best: bool = True  # guard: keep best_guard/, the policy at the step with the best guard score
    stop_on_overoptimisation: bool = False  # stop at the guard's first warning (summary.json: stopped_early says at which step and why)

    def __post_init__(self):
        super().__post_init__()
        checks = {
            "num_samples": self.num_samples >= 0,
            "minibatch_size": self.minibatch_size >= 1,
            "update_epochs": self.update_epochs >= 0,
            "critic_lr": self.critic_lr > 0,
            **self.sampling_checks(greedy=False),
            "kl_coef": self.kl_coef >= 0,
            "kl_target": self.kl_target is None or self.kl_target > 0,
            "kl_horizon": self.kl_horizon > 0,
            "gamma": 0 <= self.gamma <= 1,
            "lam": 0 <= self.lam <= 1,
            "clip": 0 < self.clip < 1,
            "dual_clip": self.dual_clip == 0 or self.dual_clip > 1,
            "value_clip": self.value_clip > 0,
            "reward_clip": self.reward_clip >= 0,
            "uncertainty_coef": self.uncertainty_coef >= 0,
            "samples_every": self.samples_every >= 0,
            "num_eval_prompts": self.num_eval_prompts >= 1,
            "guard_window": self.guard_window >= 0,
            "guard_patience": self.guard_patience >= 1,
            "clip_low": self.clip_low is None or 0 < self.clip_low < 1,
            "clip_high": self.clip_high is None or self.clip_high > 0,
            "entropy_coef": self.entropy_coef >= 0, "tis_cap": self.tis_cap == 0 or self.tis_cap >= 1,
            "max_sampling_rounds": self.max_sampling_rounds >= 1, "async_staleness": self.async_staleness >= 0,
            "overlong_buffer": 0 <= self.overlong_buffer <= self.max_new_tokens,
            "overlong_penalty": self.overlong_penalty >= 0,
        }
        check_fields(self, checks)
        algo = ALGORITHMS[self.algo]
        if algo.min_samples > 1 and self.num_samples == 1:
            raise ValueError(f"--algo {self.algo} compares samples of the same prompt: num_samples must be >= 2")
        if algo.uses_critic and self.kl_in == "loss":
            raise ValueError(f"--algo {self.algo} puts the KL in the per-token reward; kl_in=loss is for the critic-free algorithms")
        if not algo.uses_critic and self.critic is not None:
            raise ValueError(f"--critic is only used by --algo ppo, not {self.algo}")
        ratio_options = {"clip_low": self.clip_low, "clip_high": self.clip_high, "ratio_level": self.ratio_level}
        if not algo.uses_ratio and any(v is not None for v in ratio_options.values()):
            raise ValueError(f"--algo {self.algo} is the plain policy gradient: clip_low, clip_high and ratio_level "
                             "are options of the losses that read the importance ratio")
        if self.dynamic_sampling and (self.num_samples or algo.default_samples) < 2:
            raise ValueError("--dynamic-sampling drops groups of equal rewards: it needs num_samples >= 2")


# --help shows the class docstring: it lists the registry's algorithms and options from the registry itself.
PPOConfig.__doc__ = f"{PPOConfig.__doc__}\n\n{help_text()}"


@dataclass(frozen=True)
class GenerateConfig(SamplingFields):
    """`rlhf generate`: sample candidate responses from a policy for labelling; with --label,
    label them into comparisons {"prompt","chosen","rejected"} (e.g. by the demo's oracle)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "data")

    model: str | None = None  # policy directory to sample from (e.g. runs/sft/model)
    data: str | None = None  # prompts: {"prompt"} rows (text or conversation) or a .txt with one per line
    out: str = "runs/candidates.jsonl"  # JSONL written: {"prompt","responses"} rows, or comparisons with --label
    num_samples: int = 2  # responses per prompt (k); labelled as k // 2 disjoint pairs
    max_prompts: int = 0  # use the first N prompts of --data; 0 = all
    max_length: int = 256  # prompt + response tokens (prompts are cut from the left)
    label: str | None = None  # oracle (the demo's scripted sentiment annotator), or a scorer (reward-model dir or module:function): the higher score is chosen
    oracle_temperature: float = 0.1  # --label oracle: Bradley-Terry noise of the annotator (0 = noiseless)
    batch_size: int = 64  # sequences decoded together
    seed: int = 0  # sampling (and oracle noise) seed
    rollout_engine: Literal["rlhf", "vllm"] = "rlhf"  # who samples: rlhf's own KV-cache generate, or a vLLM engine in this process (a separate install: docs/vllm.md)
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast where supported
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    trust_remote_code: bool = False  # allow model code shipped inside the model directory
    skip_bad_rows: bool = False  # drop malformed prompt rows instead of stopping

    def __post_init__(self):
        checks = {
            "num_samples": self.num_samples >= 1 and (self.label is None or self.num_samples >= 2),
            "max_prompts": self.max_prompts >= 0,
            **self.sampling_checks(),
            "oracle_temperature": self.oracle_temperature >= 0,
            "batch_size": self.batch_size >= 1,
        }
        check_fields(self, checks)


@dataclass(frozen=True)
class EvalPolicyConfig(SamplingFields):
    """`rlhf eval policy`: a policy against a reference on held-out prompts: win rate judged by a
    scorer (ties count half, 95% interval), KL(policy || reference), mean scores and lengths."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "reference", "data", "judge")

    model: str | None = None  # the policy directory (e.g. runs/ppo/model)
    reference: str | None = None  # the policy it is compared with and KL is measured to (e.g. runs/sft/model)
    data: str | None = None  # prompts: {"prompt"} rows or a .txt with one per line
    judge: str | None = None  # scorer deciding each head-to-head: reward-model dir or module:function (e.g. rlhf.demo.oracle:gold_reward)
    scorers: tuple[str, ...] = ()  # more scorers (reward-model dirs or module:function) whose mean reward of both sides is reported
    out: str | None = None  # JSON report (with samples); default: print only
    max_prompts: int = 128  # the first N prompts of --data; 0 = all
    max_length: int = 256  # prompt + response tokens (prompts are cut from the left to leave room for max_new_tokens)
    temperature: float = 1.0  # sampling temperature of both policies; 0 = greedy
    batch_size: int = 64  # sequences decoded together
    seed: int = 0  # sampling seed (the same for both policies)
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast where supported
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    progress: bool = True  # show progress bars (sampling, model loading)

    def __post_init__(self):
        checks = {
            "max_prompts": self.max_prompts >= 0,
            **self.sampling_checks(),
            "batch_size": self.batch_size >= 1,
        }
        check_fields(self, checks)


@dataclass(frozen=True)
class DemoConfig:
    """`rlhf demo`: the whole loop on the embedded default (SFT, oracle labels, reward model, PPO at
    several KL strengths, RLOO, GRPO, DPO at several betas, evaluation, report.html), on a CPU."""

    out: str = "runs/demo"  # demo directory: one stage run directory per step, summary.json, report.html
    task: Literal["stories", "arithmetic"] = "stories"  # stories: positive story continuations (oracle labels, RM, PPO/DPO); arithmetic: sums and differences checked by a program (SFT, then GRPO and its variants; rlhf.demo.arithmetic_pipeline)
    quick: bool = False  # a few steps of everything (about a minute; what the tests run)
    frontier: bool = False  # also PPO and DPO at two more KL strengths each: the reward-vs-KL frontier (about twice the time)
    workers: int = 0  # steps that do not depend on each other run side by side in this many processes (cores shared); 0 = 2 where there are 2+ cores, 1 = one step at a time
    base: str | None = None  # base model directory to start from; default: the one shipped in the package
    label_budget: int = 0  # oracle-labelled pairs for the reward model and DPO; 0 = the plan's (rlhf.demo.plan: FULL, QUICK)
    oracle_temperature: float = 0.1  # Bradley-Terry noise of the scripted annotator (0 = noiseless)
    reward_backbone: Literal["minilm", "sft"] = "minilm"  # reward model from the pretrained all-MiniLM-L6-v2 encoder, or from the SFT policy (InstructGPT's choice)
    seed: int = 0  # seed of every step
    precision: Literal["fp32", "bf16"] = "fp32"  # fp32: the same numbers on every CPU (measured on a 2-core EPYC, bf16 autocast changed the RL runs: RLOO and GRPO fell below their bars); bf16 = autocast where supported, faster with AMX
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    resume: bool = False  # keep the finished steps of an existing demo directory and continue the rest
    progress: bool = True  # progress bars inside each step

    def __post_init__(self):
        if self.label_budget < 0 or self.oracle_temperature < 0 or self.workers < 0:
            raise ValueError("label_budget, oracle_temperature and workers must be >= 0")
