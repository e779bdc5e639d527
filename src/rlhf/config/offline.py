"""Configs of the stages that learn from fixed data: pretrain, sft, rm (and its evaluation), dpo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import TrainConfig, check_fields


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

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "data")  # --help says (required); rlhf sft refuses a run without them

    out: str = "runs/sft"  # run directory: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/
    epochs: float = 2.0  # passes over the demonstrations when max_steps is -1
    batch_size: int = 16  # demonstrations per micro-batch (packed rows with --packing)
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup_steps: int = 10  # linear warm-up steps before the cosine decay
    max_length: int = 256  # tokens per example (prompt truncated from the left, completion from the right)
    packing: bool = False  # pack several examples per row (attention kept within each example)
    group_by_length: bool = True  # batch examples of similar length together (less padding; order still random)
    save_every: int = 100  # checkpoint every N optimiser steps (0 = only at the end)


# Defaults of the per-loss options of `rlhf dpo` when left unset (None).
DPO_BETA = {"dpo": 0.1, "cdpo": 0.1, "ipo": 0.1, "kto": 0.1, "simpo": 2.0, "orpo": 0.1}
DPO_LABEL_SMOOTHING, DPO_GAMMA = 0.1, 0.5


@dataclass(frozen=True)
class DPOConfig(TrainConfig):
    """`rlhf dpo`: direct alignment on preferences (DPO, cDPO, IPO, SimPO, ORPO) or on thumbs
    up/down (KTO); with --online, each round samples responses from the policy, labels pairs and
    trains on them."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "data")

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
    sample_batch: int = 256  # online: sequences decoded together (on a CPU, large batches use the cores far better than small ones)
    temperature: float = 1.0  # online: sampling temperature of the policy's responses
    rollout_engine: Literal["rlhf", "vllm"] = "rlhf"  # online: who samples each round: rlhf's own KV-cache sampler, or an in-process vLLM engine synced to the policy before each round (a separate install: docs/vllm.md)
    update_reference: bool = False  # online: each round's reference is the policy at the start of the round (iterative DPO), not the starting model
    guard_window: int = 1  # online: over-optimisation guard over each round's samples: rounds per window; the first window is the baseline later ones are compared with; 0 = off
    guard_patience: int = 1  # online guard: rounds in a row a signal must stay past its threshold before it warns
    guard_thresholds: tuple[str, ...] = ()  # online guard: NAME=VALUE overrides of the signals' thresholds (names and defaults in rlhf.eval.overopt.SIGNALS); 0 = no warning from that signal
    guard_save_best: bool = True  # online guard: keep best_guard/, the policy that sampled the round with the best guard score
    stop_on_overoptimisation: bool = False  # online: stop after the round where the guard first warns (summary.json: stopped_early)

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
            "sample_batch": self.sample_batch >= 1,
            "temperature": self.temperature > 0,
            "oracle_temperature": self.oracle_temperature >= 0,
            "guard_window": self.guard_window >= 0,
            "guard_patience": self.guard_patience >= 1,
        }
        check_fields(self, checks)
        if self.loss == "kto" and self.sft_weight:
            raise ValueError("sft_weight applies to the chosen response of a pair; --loss kto has no pairs")
        if self.online and self.loss == "kto":
            raise ValueError("--online trains on labelled pairs: use a pairwise loss (dpo, cdpo, ipo, simpo, orpo)")
        if self.online and not self.labeler:
            raise ValueError("--online needs --labeler (a reward model directory or module:function)")
        if not self.online and self.labeler:
            raise ValueError("--labeler is only used with --online")
        if not self.online and self.rollout_engine != "rlhf":
            raise ValueError("--rollout-engine samples the rounds of --online: it needs --online")
        if not self.online and self.stop_on_overoptimisation:
            raise ValueError("--stop-on-overoptimisation watches the policy's own samples: it needs --online")

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
    optional per-pair margin), Plackett-Luce on rankings. The defaults were measured on HH-RLHF
    harmless (1,800 pairs, cross-validation) and in the demo; --lr, --head-init, --context-turns
    and --average-tail depend on the backbone (encoder or causal LM) unless given (docs/commands/rm.md)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "data")

    model: str | None = None  # starting model dir: a causal LM (e.g. runs/sft/model, as InstructGPT), an encoder (e.g. all-MiniLM-L6-v2) or a reward model
    data: str | None = None  # preferences: comparisons {"prompt","chosen","rejected","margin"?} (HH transcripts too) and/or rankings {"prompt","responses","ranking"}
    eval_data: str | None = None  # held-out comparisons: accuracy and loss at eval steps and at the end
    out: str = "runs/rm"  # run directory: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/
    epochs: float = 1.0  # passes over the preferences when max_steps is -1 (InstructGPT: one; on HH-RLHF harmless MiniLM went 0.653 after 1 epoch, 0.617 after 3)
    batch_size: int = 16  # preferences (pairs or rankings) per micro-batch; all their responses share one forward pass
    lr: float | None = None  # peak learning rate (AdamW); default per backbone kind: encoder 3e-5 (5-fold CV on HH-RLHF harmless, all-MiniLM-L6-v2), causal LM 1e-4 (the earlier default, the demo's with --reward-backbone sft); with --lora-r, about 5e-4
    weight_decay: float = 0.01  # AdamW weight decay on matrices (never on norms and biases)
    warmup_steps: int = 10  # linear warm-up steps before the cosine decay
    max_length: int = 256  # tokens per prompt + response (the prompt is cut from the left, the response from the right)
    save_every: int = 100  # checkpoint every N optimiser steps (0 = only at the end)
    input_format: Literal["auto", "causal", "pair"] = "auto"  # causal: prompt+response, head on the last token; pair: encoder [CLS] prompt [SEP] response; auto: from the model
    packing: bool = True  # causal LMs: pack the responses of a micro-batch into rows of max_length (padding-free; encoders are always padded)
    group_by_length: bool = True  # batch preferences of similar length together (less padding; order still random)
    dropout: bool = False  # keep the backbone's dropout while training (off by default, so both sides of a pair are scored alike)
    context_turns: int | None = None  # how much of a prompt the model reads: -1 all of it, N its last N turns, 0 none (the response alone); stored with the model. Default per backbone kind: encoder 0 (HH-RLHF harmless: frozen MiniLM 0.62 against 0.59 with the last human turn; the demo 0.791 against 0.775), causal LM -1, a reward model trained further: what it was trained with
    head_init: Literal["auto", "random", "probe"] = "auto"  # value head: transformers' random init, or fitted first on frozen features (linear probe, then fine-tune: LP-FT); auto: probe for an encoder (HH-RLHF harmless CV 0.634 against 0.631), random for a causal LM (the earlier default) and for a reward model trained further (keeps its head)
    probe_l2: float = 1e-3  # head_init=probe: L2 penalty on the head's weights (per-preference mean loss + probe_l2 * ||w||^2)
    init_seed: int | None = None  # seed of the new value head; default: --seed (which always seeds the data order)
    ensemble: int = 0  # K >= 2: train K members (seeds seed..seed+K-1: head and data order) and save them as one ensemble model/ (score: mean, std)
    # preferences (a seeded sample) on which the stored reward mean/std and the training accuracy are measured; 0 = all.
    # 256 pairs (512 responses) give the mean to about 0.04 std and the std to about 3%, for a tenth of an
    # epoch's scoring on 2000 pairs (1024 cost the demo's reward model 40 s, on its critical path)
    stats_examples: int = 256
    warm: int = 0  # K >= 2: WARM (Rame et al. 2024): K members from one shared start (same head), data orders seed..seed+K-1, weights averaged into one model/
    average_tail: float | None = None  # average the weights over this last fraction of the run's steps (0 = the last weights; 1 = every step); default per backbone kind (`rlhf.train.reward_defaults`)

    def __post_init__(self):
        super().__post_init__()
        checks = {"context_turns": self.context_turns is None or self.context_turns >= -1, "probe_l2": self.probe_l2 >= 0,
                  "stats_examples": self.stats_examples >= 0,
                  "ensemble": self.ensemble == 0 or self.ensemble >= 2, "warm": self.warm == 0 or self.warm >= 2,
                  "average_tail": self.average_tail is None or 0 <= self.average_tail <= 1}
        check_fields(self, checks, "ensemble and warm: 0 = off, else K >= 2 members; average_tail: a fraction in [0, 1]")
        check_fields(self, {"average_tail": not (self.sharding == "fsdp2" and self.average_tail)},
                     "weight averaging under --sharding fsdp2 is not supported yet: use --average-tail 0")
        if self.ensemble and self.warm:
            raise ValueError("--ensemble K keeps K models and --warm K averages them into one: pass one of them")


@dataclass(frozen=True)
class EvalRMConfig:
    """`rlhf eval rm`: score held-out comparisons with a reward model: accuracy, mean margin,
    calibration and accuracy by prompt length; prints a table and writes JSON."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "data")

    model: str | None = None  # reward model directory (the model/ of an `rlhf rm` run; an ensemble too)
    data: tuple[str, ...] | None = None  # comparisons {"prompt","chosen","rejected","category"?} (HH transcripts, conversational messages too); several files: --data a.jsonl b.jsonl, or a.jsonl,b.jsonl
    out: str | None = None  # JSON report; default: runs/eval-rm/<first data file name>.json
    batch_size: int = 32  # sequences per forward pass
    max_length: int = 0  # tokens per prompt + response; 0 = the length the model was trained with
    calibration_bins: int = 5  # bins of the model's confidence sigma(|r_w - r_l|) over [0.5, 1] in the reliability table
    length_buckets: int = 4  # prompt-length buckets (quantiles of prompt tokens) for accuracy by prompt length
    disagreement_bins: int = 4  # ensembles: bins (quantiles) of the members' disagreement on a pair's margin for accuracy by disagreement
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast (faster on CPUs/GPUs that support it)
    skip_bad_rows: bool = False  # drop malformed data rows (counted in the report) instead of stopping
    progress: bool = True  # show progress bars (scoring, model loading)

    def __post_init__(self):
        checks = {
            "batch_size": self.batch_size >= 1,
            "max_length": self.max_length == 0 or self.max_length >= 8,
            "calibration_bins": self.calibration_bins >= 1,
            "length_buckets": self.length_buckets >= 1,
            "disagreement_bins": self.disagreement_bins >= 1,
        }
        check_fields(self, checks)

    @property
    def data_files(self) -> tuple[str, ...]:
        """The comparison files of `data`: a tuple of paths, one path, or a comma-separated list."""
        given = (self.data,) if isinstance(self.data, str) else (self.data or ())
        return tuple(part for item in given for part in str(item).split(",") if part)
