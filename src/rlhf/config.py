"""One frozen dataclass per stage. Each field has a default and a one-line meaning (shown by
`--help`); a YAML file given with `--config` sets fields, command-line flags win over it.
Validation lives in `__post_init__`; a config never rewrites itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml


@dataclass(frozen=True)
class TrainConfig:
    """Fields shared by every training command."""

    model: str | None = None  # model directory in Hugging Face format (local; the Hub is never contacted)
    data: str | None = None  # training data file (JSONL[.gz], Parquet, `datasets` dir, .txt where it applies)
    eval_data: str | None = None  # held-out data for evaluation during and after training
    out: str = "runs/run"  # run directory: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/
    seed: int = 0  # seed for initialisation, data order and sampling
    max_steps: int = -1  # optimiser steps to run; -1 = as many as `epochs` gives
    epochs: float = 1.0  # passes over the training data (fractions allowed) when max_steps is -1
    batch_size: int = 8  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay on matrices (never on norms and biases)
    warmup_steps: int = 0  # linear warm-up steps before the cosine decay
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0  # gradient clipping by global norm; 0 = off
    max_length: int = 512  # tokens per training sequence (longer ones are truncated)
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast on CPUs/GPUs that support it (fp32 master weights)
    resume: bool = False  # continue from the newest checkpoint in `out`
    save_every: int = 200  # checkpoint every N optimiser steps (0 = only at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    log_every: int = 10  # log metrics every N optimiser steps
    eval_every: int = 0  # evaluate every N optimiser steps (0 = only at the end)
    lora_r: int = 0  # LoRA rank; 0 = full fine-tuning
    lora_alpha: float = 16.0  # LoRA scaling numerator
    lora_dropout: float = 0.0  # dropout on the LoRA branch
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    trust_remote_code: bool = False  # allow model code shipped inside the model directory
    skip_bad_rows: bool = False  # drop malformed data rows (counted in summary.json) instead of stopping
    progress: bool = True  # show a progress bar

    def __post_init__(self):
        checks = {
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "lr": self.lr > 0,
            "max_length": self.max_length >= 8,
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps == -1 or self.max_steps >= 1,
            "lora_r": self.lora_r >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "warmup_steps": self.warmup_steps >= 0,
            "save_every": self.save_every >= 0,
            "log_every": self.log_every >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid value for " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """`rlhf pretrain`: next-token prediction on a corpus (the bundled TinyStories text by default)."""

    out: str = "runs/pretrain"  # run directory: config.yaml, metrics.jsonl, summary.json, samples.md, model/
    preset: Literal["tiny", "small"] = "small"  # size of the embedded default model (ignored with --model)
    vocab_size: int = 4096  # BPE vocabulary trained on the corpus (ignored with --model)
    epochs: float = 6.0  # passes over the corpus when max_steps is -1
    batch_size: int = 8  # blocks of max_length tokens per micro-batch (small batches: more updates per token)
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.1  # AdamW weight decay on matrices
    warmup_steps: int = 30  # linear warm-up steps before the cosine decay
    max_length: int = 256  # tokens per training block (documents are concatenated and cut into blocks)
    save_every: int = 100  # checkpoint every N optimiser steps (0 = only at the end)
    compile: bool = True  # torch.compile the model (about 1.5x faster steps on CPU after a ~30 s compile)
    num_samples: int = 6  # continuations sampled into samples.md at the end


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """`rlhf sft`: cross-entropy on completions only (prompt tokens masked)."""

    out: str = "runs/sft"  # run directory: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/
    epochs: float = 2.0  # passes over the demonstrations when max_steps is -1
    batch_size: int = 16  # demonstrations per micro-batch (packed rows with --packing)
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup_steps: int = 10  # linear warm-up steps before the cosine decay
    max_length: int = 256  # tokens per example (prompt truncated from the left, completion from the right)
    packing: bool = False  # pack several examples per row (attention kept within each example)
    group_by_length: bool = True  # batch examples of similar length together (less padding; order still random)
    save_every: int = 100  # checkpoint every N optimiser steps (0 = only at the end)


def load_yaml(path: str | Path, cls) -> dict:
    """Fields from a YAML file, checked against `cls`'s field names."""
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must be a mapping of field: value")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown} for {cls.__name__}")
    return values


def to_yaml(cfg) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


# Defaults of the per-loss options of `rlhf dpo` when left unset (None).
DPO_BETA = {"dpo": 0.1, "cdpo": 0.1, "ipo": 0.1, "kto": 0.1, "simpo": 2.0, "orpo": 0.1}
DPO_LABEL_SMOOTHING, DPO_GAMMA = 0.1, 0.5


@dataclass(frozen=True)
class DPOConfig(TrainConfig):
    """`rlhf dpo`: direct alignment on preferences (DPO, cDPO, IPO, SimPO, ORPO) or on thumbs
    up/down (KTO); with --online, each round samples responses from the policy, labels pairs and
    trains on them."""

    out: str = "runs/dpo"  # run directory: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/, reference_logps.pt
    data: str | None = None  # comparisons {"prompt","chosen","rejected"} (kto: binary feedback, or comparisons split into thumbs up/down); --online: prompts
    max_steps: int = -1  # optimiser steps to run (--online: per round); -1 = as many as `epochs` gives
    epochs: float = 1.0  # passes over the training data (--online: over each round's pairs) when max_steps is -1
    batch_size: int = 8  # comparisons (kto: completions) per micro-batch
    lr: float = 1e-5  # peak learning rate (AdamW); preference losses want far smaller steps than SFT
    warmup_steps: int = 10  # linear warm-up steps before the cosine decay
    max_length: int = 256  # tokens per prompt + response (the prompt is cut from the left, responses from the right)
    save_every: int = 100  # checkpoint every N optimiser steps (0 = only at the end)
    loss: Literal["dpo", "cdpo", "ipo", "simpo", "orpo", "kto"] = "dpo"  # objective (rlhf.algos.preference.LOSSES)
    beta: float | None = None  # dpo/cdpo/ipo/kto: KL strength (default 0.1); simpo: reward scale (default 2.0); orpo: odds-ratio weight lambda (default 0.1)
    label_smoothing: float | None = None  # cdpo only: probability that a label is flipped, in (0, 0.5) (default 0.1)
    gamma: float | None = None  # simpo only: target reward margin (default 0.5)
    sft_weight: float | None = None  # weight of the chosen response's per-token NLL added to the loss (RPO); orpo's own SFT term (default 1 for orpo, else 0)
    desirable_weight: float = 1.0  # kto only: weight of the loss on desirable (thumbs-up) completions
    undesirable_weight: float = 1.0  # kto only: weight of the loss on undesirable (thumbs-down) completions
    reference: str | None = None  # reference model directory; default: the starting --model (with LoRA: the policy with its adapter disabled)
    group_by_length: bool = True  # batch pairs of similar length together (less padding; order still random); not for kto, whose batches should mix thumbs up and down
    kl_prompts: int = 64  # prompts (from --eval-data, else --data) sampled at eval steps and at the end to measure KL(policy || reference); 0 = off
    max_new_tokens: int = 48  # tokens per sampled response (KL measurement and --online)
    online: bool = False  # iterative online DPO: each round, sample from the current policy, label pairs with --labeler, train on them
    labeler: str | None = None  # online: oracle (the demo's scripted sentiment annotator), or a scorer (reward-model dir or module:function) whose best and worst response per prompt form the pair
    oracle_temperature: float = 0.1  # online with --labeler oracle: Bradley-Terry noise of the annotator (0 = noiseless)
    rounds: int = 4  # online: sample-label-train rounds
    prompts_per_round: int = 256  # online: prompts sampled (one labelled pair each) per round
    samples_per_prompt: int = 2  # online: responses sampled per prompt; the pair is the labeler's best and worst
    temperature: float = 1.0  # online: sampling temperature of the policy's responses
    update_reference: bool = False  # online: each round's reference is the policy at the start of the round (iterative DPO), not the starting model

    def __post_init__(self):
        super().__post_init__()
        only = {"label_smoothing": ("cdpo", self.label_smoothing is not None),
                "gamma": ("simpo", self.gamma is not None),
                "desirable_weight": ("kto", self.desirable_weight != 1.0),
                "undesirable_weight": ("kto", self.undesirable_weight != 1.0)}
        for name, (loss, is_set) in only.items():
            if is_set and self.loss != loss:
                raise ValueError(f"{name} is only used by --loss {loss}, not --loss {self.loss}")
        checks = {
            "beta": self.beta is None or self.beta > 0,
            "label_smoothing": self.label_smoothing is None or 0 <= self.label_smoothing < 0.5,
            "gamma": self.gamma is None or self.gamma >= 0,
            "sft_weight": self.sft_weight is None or self.sft_weight >= 0,
            "desirable_weight": self.desirable_weight > 0,
            "undesirable_weight": self.undesirable_weight > 0,
            "kl_prompts": self.kl_prompts >= 0,
            "max_new_tokens": self.max_new_tokens >= 1,
            "rounds": self.rounds >= 1,
            "prompts_per_round": self.prompts_per_round >= 1,
            "samples_per_prompt": self.samples_per_prompt >= 2,
            "temperature": self.temperature > 0,
            "oracle_temperature": self.oracle_temperature >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid value for " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
        if self.loss == "kto" and self.sft_weight:
            raise ValueError("sft_weight applies to the chosen response of a pair; --loss kto has no pairs")
        if self.online and self.loss == "kto":
            raise ValueError("--online trains on labelled pairs: use a pairwise loss (dpo, cdpo, ipo, simpo, orpo)")
        if self.online and not self.labeler:
            raise ValueError("--online needs --labeler (a reward model directory or module:function)")
        if not self.online and self.labeler:
            raise ValueError("--labeler is only used with --online")

    @property
    def loss_options(self) -> dict:
        """Keyword options of the loss function, with the per-loss defaults filled in."""
        options = {"beta": DPO_BETA[self.loss] if self.beta is None else self.beta}
        if self.loss == "cdpo":
            options["label_smoothing"] = DPO_LABEL_SMOOTHING if self.label_smoothing is None else self.label_smoothing
        if self.loss == "simpo":
            options["gamma"] = DPO_GAMMA if self.gamma is None else self.gamma
        if self.loss == "kto":
            options.update(desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight)
        return options

    @property
    def chosen_nll_weight(self) -> float:
        """Weight of the chosen response's per-token NLL: sft_weight, else 1 for orpo and 0 otherwise."""
        if self.sft_weight is not None:
            return self.sft_weight
        return 1.0 if self.loss == "orpo" else 0.0


@dataclass(frozen=True)
class RewardConfig(TrainConfig):
    """`rlhf rm`: a scalar reward model trained on preferences: Bradley-Terry on pairs (with an
    optional per-pair margin), Plackett-Luce on rankings."""

    model: str | None = None  # starting model dir: a causal LM (e.g. runs/sft/model, as InstructGPT), an encoder (e.g. all-MiniLM-L6-v2) or a reward model
    data: str | None = None  # preferences: comparisons {"prompt","chosen","rejected","margin"?} (HH transcripts too) and/or rankings {"prompt","responses","ranking"}
    eval_data: str | None = None  # held-out comparisons: accuracy and loss at eval steps and at the end
    out: str = "runs/rm"  # run directory: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/
    epochs: float = 1.0  # passes over the preferences when max_steps is -1 (InstructGPT: one; more overfits)
    batch_size: int = 16  # preferences (pairs or rankings) per micro-batch; all their responses share one forward pass
    lr: float = 1e-4  # peak learning rate (AdamW); with --lora-r, about 5e-4
    weight_decay: float = 0.01  # AdamW weight decay on matrices (never on norms and biases)
    warmup_steps: int = 10  # linear warm-up steps before the cosine decay
    max_length: int = 256  # tokens per prompt + response (the prompt is cut from the left, the response from the right)
    save_every: int = 100  # checkpoint every N optimiser steps (0 = only at the end)
    input_format: Literal["auto", "causal", "pair"] = "auto"  # causal: prompt+response, head on the last token; pair: encoder [CLS] prompt [SEP] response; auto: from the model
    packing: bool = True  # causal LMs: pack the responses of a micro-batch into rows of max_length (padding-free; encoders are always padded)
    group_by_length: bool = True  # batch preferences of similar length together (less padding; order still random)
    dropout: bool = False  # keep the backbone's dropout while training (off by default, so both sides of a pair are scored alike)


@dataclass(frozen=True)
class EvalRMConfig:
    """`rlhf eval rm`: score held-out comparisons with a reward model: accuracy, mean margin,
    calibration and accuracy by prompt length; prints a table and writes JSON."""

    model: str | None = None  # reward model directory (the model/ of an `rlhf rm` run)
    data: str | None = None  # comparisons {"prompt","chosen","rejected"} (HH transcripts, conversational messages too)
    out: str | None = None  # JSON report; default: runs/eval-rm/<data file name>.json
    batch_size: int = 32  # sequences per forward pass
    max_length: int = 0  # tokens per prompt + response; 0 = the length the model was trained with
    calibration_bins: int = 5  # bins of the model's confidence sigma(|r_w - r_l|) over [0.5, 1] in the reliability table
    length_buckets: int = 4  # prompt-length buckets (quantiles of prompt tokens) for accuracy by prompt length
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast (faster on CPUs/GPUs that support it)
    skip_bad_rows: bool = False  # drop malformed data rows (counted in the report) instead of stopping

    def __post_init__(self):
        checks = {
            "batch_size": self.batch_size >= 1,
            "max_length": self.max_length == 0 or self.max_length >= 8,
            "calibration_bins": self.calibration_bins >= 1,
            "length_buckets": self.length_buckets >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid value for " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))


@dataclass(frozen=True)
class PPOConfig(TrainConfig):
    """`rlhf ppo`: online RL from a reward (a reward model or any `module:function` scorer):
    PPO with a critic, or the critic-free RLOO, GRPO and REINFORCE, with a KL penalty to the
    reference (the starting policy)."""

    model: str | None = None  # the policy to train (e.g. runs/sft/model); also the reference unless --reference
    data: str | None = None  # prompts: {"prompt"} rows (text or conversation) or a .txt with one per line
    eval_data: str | None = None  # held-out prompts: at the end (and every eval_every steps), win rate against the reference judged by --gold (else the reward) and KL to the reference
    out: str = "runs/ppo"  # run directory: config.yaml, metrics.jsonl, samples.jsonl, summary.json, model/, checkpoints/
    algo: Literal["ppo", "rloo", "grpo", "reinforce"] = "ppo"  # ppo: critic + GAE; rloo: leave-one-out baseline; grpo: group mean/std; reinforce: batch-mean baseline
    reward: str | None = None  # the reward: a reward-model directory (from `rlhf rm`) or module:function scoring (prompts, responses) -> floats
    gold: str | None = None  # optional gold scorer (same forms as --reward), logged beside the reward to expose over-optimisation
    reference: str | None = None  # reference model directory; default: the starting --model (with LoRA: the policy with its adapter disabled)
    critic: str | None = None  # ppo: directory the critic starts from; default: the reward model when it reads the policy's tokens, else --model
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
    max_new_tokens: int = 48  # response tokens at most
    temperature: float = 1.0  # sampling temperature (the policy trained is softmax(logits / temperature))
    top_k: int = 0  # sample among the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus sampling threshold; 1 = all
    kl_coef: float = 0.05  # beta: weight of the KL to the reference (initial value when adaptive)
    kl_target: float | None = None  # adaptive KL (Ziegler et al. 2019): target KL per sequence in nats; unset = fixed kl_coef
    kl_horizon: float = 10000.0  # adaptive KL: samples over which the coefficient adapts
    kl_in: Literal["auto", "reward", "loss"] = "auto"  # where the KL goes: per-token reward penalty or a loss term; auto: loss for grpo, reward otherwise (ppo needs reward)
    kl_estimator: Literal["auto", "k1", "k2", "k3"] = "auto"  # KL estimator penalised; auto: k1 in the reward, k3 as a loss term (all three are logged)
    gamma: float = 1.0  # ppo: discount over response tokens
    lam: float = 0.95  # ppo: GAE lambda
    clip: float = 0.2  # policy ratio clip range (ppo, rloo, grpo)
    value_clip: float = 0.2  # ppo: value clip range around the rollout's values
    whiten_advantages: bool = True  # ppo: normalise advantages to zero mean, unit variance over each rollout
    grpo_scale_by_std: bool = True  # grpo: divide by the group's reward std (off = Dr. GRPO)
    normalize_reward: bool = True  # a reward model's score is (r - mean) / std with its stored training-set statistics
    reward_clip: float = 5.0  # clip the (normalised) score to [-reward_clip, reward_clip]; 0 = off
    missing_eos_penalty: float = 0.0  # subtracted from the score of responses that never reach EOS
    samples_every: int = 10  # write sample responses to samples.jsonl every N steps (0 = off)
    num_eval_prompts: int = 128  # held-out prompts (from eval_data) used for the win rate and KL
    save_every: int = 20  # checkpoint every N rollout steps (0 = only at the end)
    log_every: int = 1  # log metrics every N rollout steps

    def __post_init__(self):
        super().__post_init__()
        checks = {
            "num_samples": self.num_samples >= 0,
            "minibatch_size": self.minibatch_size >= 1,
            "update_epochs": self.update_epochs >= 0,
            "critic_lr": self.critic_lr > 0,
            "max_new_tokens": 1 <= self.max_new_tokens < self.max_length,
            "temperature": self.temperature > 0,
            "top_k": self.top_k >= 0,
            "top_p": 0 < self.top_p <= 1,
            "kl_coef": self.kl_coef >= 0,
            "kl_target": self.kl_target is None or self.kl_target > 0,
            "kl_horizon": self.kl_horizon > 0,
            "gamma": 0 <= self.gamma <= 1,
            "lam": 0 <= self.lam <= 1,
            "clip": 0 < self.clip < 1,
            "value_clip": self.value_clip > 0,
            "reward_clip": self.reward_clip >= 0,
            "samples_every": self.samples_every >= 0,
            "num_eval_prompts": self.num_eval_prompts >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid value for " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
        if self.algo in ("rloo", "grpo") and self.num_samples == 1:
            raise ValueError(f"--algo {self.algo} compares samples of the same prompt: num_samples must be >= 2")
        if self.algo == "ppo" and self.kl_in == "loss":
            raise ValueError("--algo ppo puts the KL in the per-token reward; kl_in=loss is for rloo, grpo, reinforce")
        if self.algo != "ppo" and self.critic is not None:
            raise ValueError(f"--critic is only used by --algo ppo, not {self.algo}")


@dataclass(frozen=True)
class GenerateConfig:
    """`rlhf generate`: sample candidate responses from a policy for labelling; with --label,
    label them into comparisons {"prompt","chosen","rejected"} (e.g. by the demo's oracle)."""

    model: str | None = None  # policy directory to sample from (e.g. runs/sft/model)
    data: str | None = None  # prompts: {"prompt"} rows (text or conversation) or a .txt with one per line
    out: str = "runs/candidates.jsonl"  # JSONL written: {"prompt","responses"} rows, or comparisons with --label
    num_samples: int = 2  # responses per prompt (k); labelled as k // 2 disjoint pairs
    max_prompts: int = 0  # use the first N prompts of --data; 0 = all
    max_new_tokens: int = 48  # response tokens at most
    max_length: int = 256  # prompt + response tokens (prompts are cut from the left)
    temperature: float = 1.0  # sampling temperature; 0 = greedy
    top_k: int = 0  # sample among the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus sampling threshold; 1 = all
    label: str | None = None  # oracle (the demo's scripted sentiment annotator), or a scorer (reward-model dir or module:function): the higher score is chosen
    oracle_temperature: float = 0.1  # --label oracle: Bradley-Terry noise of the annotator (0 = noiseless)
    batch_size: int = 64  # sequences decoded together
    seed: int = 0  # sampling (and oracle noise) seed
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast where supported
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    trust_remote_code: bool = False  # allow model code shipped inside the model directory
    skip_bad_rows: bool = False  # drop malformed prompt rows instead of stopping

    def __post_init__(self):
        checks = {
            "num_samples": self.num_samples >= 1 and (self.label is None or self.num_samples >= 2),
            "max_prompts": self.max_prompts >= 0,
            "max_new_tokens": 1 <= self.max_new_tokens < self.max_length,
            "temperature": self.temperature >= 0,
            "top_k": self.top_k >= 0,
            "top_p": 0 < self.top_p <= 1,
            "oracle_temperature": self.oracle_temperature >= 0,
            "batch_size": self.batch_size >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid value for " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))


@dataclass(frozen=True)
class EvalPolicyConfig:
    """`rlhf eval policy`: a policy against a reference on held-out prompts: win rate judged by a
    scorer (ties count half, 95% interval), KL(policy || reference), mean scores and lengths."""

    model: str | None = None  # the policy directory (e.g. runs/ppo/model)
    reference: str | None = None  # the policy it is compared with and KL is measured to (e.g. runs/sft/model)
    data: str | None = None  # prompts: {"prompt"} rows or a .txt with one per line
    judge: str | None = None  # scorer deciding each head-to-head: reward-model dir or module:function (e.g. rlhf.labelers.oracle:gold_reward)
    out: str | None = None  # JSON report (with samples); default: print only
    max_prompts: int = 128  # the first N prompts of --data; 0 = all
    max_new_tokens: int = 48  # response tokens at most
    temperature: float = 1.0  # sampling temperature of both policies; 0 = greedy
    top_k: int = 0  # sample among the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus sampling threshold; 1 = all
    batch_size: int = 64  # sequences decoded together
    seed: int = 0  # sampling seed (the same for both policies)
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast where supported
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N

    def __post_init__(self):
        checks = {
            "max_prompts": self.max_prompts >= 0,
            "max_new_tokens": self.max_new_tokens >= 1,
            "temperature": self.temperature >= 0,
            "top_k": self.top_k >= 0,
            "top_p": 0 < self.top_p <= 1,
            "batch_size": self.batch_size >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid value for " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
