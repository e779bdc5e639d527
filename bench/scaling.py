"""Memory and time per step of SFT, DPO, PPO and GRPO at 0.5B, 7B and 72B (Qwen2.5 shapes) under
DDP, FSDP2 and ZeRO-3 on 8 and 64 GPUs, and of the 0.5B recipes in configs/recipes/ on one GPU;
writes docs/scaling.md. Run: `python bench/scaling.py [--measure]`.

Everything about GPUs here is MODELLED (no GPU was used): parameter counts from the shapes, the
memory model below, FLOPs = 6 x parameters x tokens for a trained model (2 for a forward-only
one, 8 with activation checkpointing's recomputed forward), at an ASSUMED fraction of the bf16
peak. `--measure` MEASURES, on this CPU, one training step of the default model (the "small"
preset, fp32, as the demo runs it): tokens/s, the fraction of this CPU's fp32 matmul peak that
reaches, and the ratio of a training step to a forward pass (the 6-vs-2 of the FLOP model); the
figures are kept in docs/scaling-measured.json and quoted in the doc.

Memory per GPU, mixed precision with AdamW (the accounting of the ZeRO paper, Rajbhandari et al.
2020, for P parameters and N GPUs):
- DDP: bf16 parameters 2P, bf16 gradients 2P, fp32 master weights + Adam m + v 12P: 16P per GPU;
- ZeRO-3: the same 16P, sharded: 16P / N, plus the bf16 layers being gathered;
- FSDP2 (MixedPrecisionPolicy bf16 compute, fp32 reduce): sharded fp32 parameters 4P/N,
  fp32 gradients 4P/N, Adam m + v 8P/N: again 16P / N, plus the gathered layers;
- a frozen model (DPO/PPO reference, reward model): bf16 2P, sharded / N under FSDP2 and ZeRO-3;
- activations of one micro-batch of t tokens, bf16: per layer and token the tensors a decoder
  layer keeps for its backward (two norm inputs, the attention's input, q, k, v and output, the
  MLP's input, gate, up, act(gate) and their product: 12h + 4 kv + 8i bytes), or with activation
  checkpointing each layer's input (2h) plus one layer recomputed; plus unchunked logits
  (bf16 logits and fp32 log-softmax: 6V bytes per token). The rollout KV cache for PPO/GRPO.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import fsdp_memory

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scaling.md"
MEASURED = ROOT / "docs" / "scaling-measured.json"
FSDP_MEASURED = fsdp_memory.MEASURED  # per-rank memory under FSDP2, measured on CPU processes
RECIPES = ROOT / "configs" / "recipes"
GB = 1e9


@dataclass(frozen=True)
class Shape:
    """A Qwen2.5-like decoder: GQA attention with q/k/v biases, SwiGLU MLP, RMSNorm."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool  # input embedding shared with the LM head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hidden // self.heads

    def layer_params(self) -> int:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        attention = h * h + h + 2 * (h * kv + kv) + h * h  # q (+bias), k and v (+bias), o
        return attention + 3 * h * i + 2 * h  # gate, up, down; two RMSNorms

    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.layer_params() + embeddings + self.hidden


MODELS = {  # the published Qwen2.5 configs
    "0.5B": Shape(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, tied=True),
    "7B": Shape(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tied=False),
    "72B": Shape(hidden=8192, layers=80, heads=64, kv_heads=8, intermediate=29568, vocab=152064, tied=False),
}


@dataclass(frozen=True)
class GPU:
    name: str = "H200 SXM"
    memory: float = 141 * GB
    bf16_flops: float = 989e12  # dense bf16 peak (the same for H100 SXM)
    hbm_bytes_per_s: float = 4.8e12
    mfu: float = 0.40  # ASSUMED fraction of the bf16 peak that training reaches
    node_size: int = 8
    intra_node_bus: float = 360e9  # ASSUMED NCCL bus bandwidth per GPU over NVLink, bytes/s
    inter_node_bus: float = 40e9  # ASSUMED per GPU across nodes (8 x 400 Gb/s InfiniBand per node)

    def bus(self, gpus: int) -> float:
        return self.intra_node_bus if gpus <= self.node_size else self.inter_node_bus


@dataclass(frozen=True)
class Workload:
    """One optimiser step of a stage. Sequences are counted at their full length (an upper bound)."""

    stage: str  # sft | rm | dpo | ppo | grpo
    sequences: int  # per step (DPO: chosen + rejected both counted)
    seq_len: int  # tokens per sequence (PPO/GRPO: prompt + response)
    micro_batch: int  # sequences per forward/backward on one GPU
    response_len: int = 0  # PPO/GRPO: tokens generated per sequence
    update_epochs: int = 1  # PPO/GRPO: passes over each rollout
    checkpointing: bool = False  # activation checkpointing (gradient checkpointing)

    @property
    def tokens(self) -> int:
        return self.sequences * self.seq_len

    @property
    def trained(self) -> int:  # models trained: the policy, and PPO's critic
        return 2 if self.stage == "ppo" else 1

    @property
    def frozen(self) -> int:  # forward-only models: the reference, and the reward model online
        return {"sft": 0, "rm": 0, "dpo": 1, "ppo": 2, "grpo": 2}[self.stage]


STRATEGIES = ("DDP", "FSDP2", "ZeRO-3")


def state_bytes(params: int, strategy: str, gpus: int) -> dict[str, float]:
    """Bytes per GPU of one trained model's parameters, gradients and optimiser state."""
    if strategy == "DDP":
        return {"params": 2 * params, "grads": 2 * params, "optimizer": 12 * params}
    if strategy == "ZeRO-3":
        return {"params": 2 * params / gpus, "grads": 2 * params / gpus, "optimizer": 12 * params / gpus}
    if strategy == "FSDP2":
        return {"params": 4 * params / gpus, "grads": 4 * params / gpus, "optimizer": 8 * params / gpus}
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def gathered_bytes(shape: Shape, strategy: str) -> float:
    """Sharded strategies gather the unit being computed and prefetch the next: two bf16 units, the
    largest being a layer or the embedding table."""
    if strategy == "DDP":
        return 0.0
    return 2 * 2 * max(shape.layer_params(), shape.vocab * shape.hidden)


def activation_bytes(shape: Shape, tokens: int, checkpointing: bool, logits: bool = True) -> float:
    """bf16 activations of one micro-batch of `tokens` tokens kept for the backward, plus the
    logits of an LM head (a reward model's one-output head has none to speak of)."""
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    per_layer = 12 * h + 4 * kv + 8 * i
    layers = shape.layers * 2 * h + per_layer if checkpointing else shape.layers * per_layer
    return tokens * (layers + (6 * shape.vocab if logits else 0))


def kv_cache_bytes(shape: Shape, sequences: int, seq_len: int) -> float:
    """bf16 keys and values of `sequences` sequences of `seq_len` tokens (rollout generation)."""
    return sequences * seq_len * shape.layers * 2 * shape.kv_dim * 2


def memory_per_gpu(shape: Shape, work: Workload, strategy: str, gpus: int, frozen_bytes: int = 2) -> dict[str, float]:
    """Bytes per GPU by kind; `frozen_bytes` per parameter of a frozen model (bf16: 2)."""
    params = shape.params()
    state = state_bytes(params, strategy, gpus)
    shard = 1 if strategy == "DDP" else gpus
    per_gpu_seqs = math.ceil(work.sequences / gpus)
    micro = min(work.micro_batch, per_gpu_seqs)
    memory = {key: work.trained * value for key, value in state.items()}
    memory["frozen"] = work.frozen * frozen_bytes * params / shard
    memory["activations"] = activation_bytes(shape, micro * work.seq_len, work.checkpointing, work.stage != "rm") \
        + gathered_bytes(shape, strategy)
    if work.response_len:  # generation and training do not overlap: the larger of the two
        memory["activations"] = max(memory["activations"], kv_cache_bytes(shape, per_gpu_seqs, work.seq_len))
    memory["total"] = sum(memory.values())
    return memory


def step_seconds(shape: Shape, work: Workload, strategy: str, gpus: int, gpu: GPU = GPU()) -> dict[str, float]:
    """Modelled seconds of one step: compute at the assumed MFU, the collectives (overlapped with
    compute: the step takes the longer of the two) and, for PPO/GRPO, generation."""
    params, tokens = shape.params(), work.tokens
    train_per_token = (8 if work.checkpointing else 6) * params  # forward 2, backward 4, recompute 2
    flops = work.trained * work.update_epochs * train_per_token * tokens
    flops += 2 * params * tokens * (work.frozen + (work.trained if work.response_len else 0))  # old logprobs, values
    compute = flops / (gpus * gpu.bf16_flops * gpu.mfu)

    micro_steps = math.ceil(math.ceil(work.sequences / gpus) / work.micro_batch)
    ring = (gpus - 1) / gpus
    if strategy == "DDP":  # one bf16 gradient all-reduce per step and trained model
        moved = work.trained * 2 * ring * 2 * params
    else:  # per micro-batch: all-gather forward and backward, reduce-scatter gradients; frozen: one gather
        grad_bytes = 4 if strategy == "FSDP2" else 2
        moved = micro_steps * ring * params * (work.trained * work.update_epochs * (2 + 2 + grad_bytes)
                                               + 2 * work.frozen)
    comm = moved / gpu.bus(gpus) if gpus > 1 else 0.0

    generate = 0.0
    if work.response_len:  # decoding reads every weight once per token: bandwidth-bound unless the batch is large
        tp = 1  # tensor-parallel degree that leaves half the GPU's memory for the KV cache
        while 2 * params / tp > gpu.memory / 2:
            tp *= 2
        sequences_per_group = math.ceil(work.sequences / (gpus // tp or 1))
        per_token = max((2 * params / tp + kv_cache_bytes(shape, sequences_per_group, work.seq_len) / tp)
                        / gpu.hbm_bytes_per_s, 2 * params * sequences_per_group / (tp * gpu.bf16_flops * gpu.mfu))
        generate = work.response_len * per_token
    return {"compute": compute, "comm": comm, "generate": generate, "total": max(compute, comm) + generate}


STAGES = {  # the global batch of each stage in the table: the same whatever the GPU count
    "sft": dict(sequences=128, seq_len=2048, micro_batch=4),
    "dpo": dict(sequences=2 * 64, seq_len=1024, micro_batch=8),
    "ppo": dict(sequences=512, seq_len=1024, micro_batch=8, response_len=512),
    "grpo": dict(sequences=64 * 8, seq_len=1024, micro_batch=8, response_len=512),
}


def workload(stage: str, model: str) -> Workload:
    return Workload(stage=stage, checkpointing=model != "0.5B", **STAGES[stage])


# ---------------------------------------------------------------- the 0.5B recipes


def recipe_workload(path: Path) -> tuple[str, Workload]:
    """The stage and one step's workload of a recipe in configs/recipes/ (`<stage>-...yaml`;
    grpo recipes run `rlhf ppo --algo grpo`), from the fields the recipe sets over the defaults."""
    from rlhf import config

    stage = path.name.split("-")[0]
    cls = {"sft": config.SFTConfig, "rm": config.RewardConfig, "dpo": config.DPOConfig,
           "ppo": config.PPOConfig, "grpo": config.PPOConfig}[stage]
    cfg = dataclasses.replace(cls(), **config.load_yaml(path, cls))
    if stage in ("sft", "rm", "dpo"):
        per_example = 1 if stage == "sft" else 2  # a pair's two responses
        return stage, Workload(stage=stage, sequences=per_example * cfg.batch_size * cfg.grad_accum,
                               seq_len=cfg.max_length, micro_batch=per_example * cfg.batch_size)
    from rlhf.config.algorithms import ALGORITHMS

    algo = ALGORITHMS[cfg.algo]
    samples = cfg.num_samples or algo.default_samples
    epochs = cfg.update_epochs or algo.default_epochs
    return stage, Workload(stage="ppo" if algo.uses_critic else "grpo", sequences=cfg.batch_size * samples,
                           seq_len=cfg.max_length, micro_batch=max(1, cfg.minibatch_size // cfg.grad_accum),
                           response_len=cfg.max_new_tokens, update_epochs=epochs)


def recipe_line(path: Path, gpu: GPU = GPU()) -> str:
    """The expected figures a recipe's header states: modelled for one GPU, this toolkit keeping
    fp32 weights (bf16 autocast) so frozen models take 4 bytes per parameter."""
    stage, work = recipe_workload(path)
    shape = MODELS["0.5B"]
    memory = memory_per_gpu(shape, work, "DDP", 1, frozen_bytes=4)
    seconds = step_seconds(shape, work, "DDP", 1, gpu)
    return (f"expected on one {gpu.name} (modelled by bench/scaling.py, not measured): "
            f"~{memory['total'] / GB:.0f} GB peak memory, ~{seconds['total']:.1f} s per step, both upper "
            f"bounds (every sequence at max_length: {work.tokens:,} tokens per step)")


# ---------------------------------------------------------------- docs/scaling.md


def gb(value: float) -> str:
    return f"{value / GB:,.1f}"


def scaling_rows(model: str, gpu: GPU = GPU()) -> list[str]:
    """The Markdown rows of one model's table: every stage, GPU count and strategy."""
    shape, rows = MODELS[model], []
    for stage in STAGES:
        work = workload(stage, model)
        for gpus in (8, 64):
            for strategy in STRATEGIES:
                memory = memory_per_gpu(shape, work, strategy, gpus)
                seconds = step_seconds(shape, work, strategy, gpus, gpu)
                state = memory["params"] + memory["grads"] + memory["optimizer"]
                fits = "yes" if memory["total"] <= 0.9 * gpu.memory else "**no**"
                parts = f"{seconds['compute']:.2f} / {seconds['comm']:.2f}" + \
                    (f" / {seconds['generate']:.2f}" if work.response_len else "")
                rows.append(f"| {stage} | {gpus} | {strategy} | {gb(memory['params'])} | {gb(memory['grads'])} | "
                            f"{gb(memory['optimizer'])} | {gb(state)} | {gb(memory['frozen'])} | "
                            f"{gb(memory['activations'])} | {gb(memory['total'])} | {fits} | "
                            f"{seconds['total']:.2f} | {parts} |")
    return rows


def render(measured: dict | None, gpu: GPU = GPU()) -> str:
    lines = [
        "# Scaling: memory and time per step", "",
        "Written by `python bench/scaling.py` (add `--measure` to measure this machine again); do not edit by hand.",
        "", "**What is measured and what is modelled.** No GPU was used. Every GPU figure below is MODELLED: "
        "parameter counts from the published Qwen2.5 shapes, the memory model in the docstring of "
        "`bench/scaling.py` (ZeRO-paper accounting: 16 bytes per trained parameter, 2 per frozen one, "
        "activations of one micro-batch), FLOPs = 6 x parameters x tokens per trained model (8 with "
        "activation checkpointing, 2 per frozen model), run at an ASSUMED MFU. The MEASURED figures are in "
        "the last two sections: one training step of the default model on this project's CPU, and the per-rank "
        "memory of a 110M-parameter model trained on 1, 2 and 4 CPU processes, data-parallel and under FSDP2, "
        "beside what the memory model predicts for it.", "",
        "## Assumptions (modelled)", "",
        f"- GPU: {gpu.name}-class, {gpu.memory / GB:.0f} GB, {gpu.bf16_flops / 1e12:.0f} TFLOP/s dense bf16 "
        f"(H100 SXM: the same peak, 80 GB), {gpu.hbm_bytes_per_s / 1e12:.1f} TB/s HBM; assumed MFU "
        f"{gpu.mfu:.0%}; {gpu.node_size} GPUs per node; NCCL bus bandwidth per GPU {gpu.intra_node_bus / GB:.0f} GB/s "
        f"within a node (8 GPUs), {gpu.inter_node_bus / GB:.0f} GB/s across nodes (64 GPUs = 8 nodes).",
        "- A step is one optimiser step with the same global batch on 8 and 64 GPUs; sequences are counted "
        "at their full length (an upper bound):",
    ]
    for stage, values in STAGES.items():
        extra = f" ({values['response_len']} of them generated)" if values.get("response_len") else ""
        pairs = f" ({values['sequences'] // 2} pairs)" if stage == "dpo" else ""
        lines.append(f"  - {stage}: {values['sequences']} sequences{pairs} of {values['seq_len']} tokens{extra} = "
                     f"{values['sequences'] * values['seq_len']:,} tokens; micro-batch {values['micro_batch']} "
                     "sequences per GPU")
    lines += [
        "- Trained models: the policy (PPO: and a critic of the same size, 1 update epoch). Frozen, forward "
        "only: DPO's reference; PPO's and GRPO's reference and reward model (same size as the policy).",
        "- Activation checkpointing on for 7B and 72B, off for 0.5B; logits unchunked (bf16 logits + fp32 "
        "log-softmax); PPO/GRPO memory counts the larger of training activations and the rollout KV cache.",
        "- Time: the step takes the longer of compute and communication (assumed overlapped); DDP all-reduces "
        "bf16 gradients once per step; FSDP2 and ZeRO-3 all-gather bf16 weights for the forward and the "
        "backward and reduce-scatter gradients (FSDP2 in fp32) once per micro-batch. PPO/GRPO add "
        "generation: bandwidth-bound decoding (every weight read once per generated token) with full bf16 "
        "weights per GPU, tensor-parallel where they take over half a GPU.",
        "- *fits*: total under 90% of the GPU's memory. Attention's own FLOPs (the T^2 terms) are left out.",
        "", "Parameters: " + ", ".join(f"{name} {MODELS[name].params() / 1e9:.2f} B" for name in MODELS) + ".", "",
    ]
    header = ("| stage | GPUs | strategy | params | grads | optimizer | state total | frozen models | activations | "
              "total GB/GPU | fits | s/step | compute / comm (/ generate) s |")
    for model in MODELS:
        lines += [f"## {model} (Qwen2.5-{model} shapes, modelled)", "", "Memory in GB per GPU.", "",
                  header, "|" + "---|" * 13, *scaling_rows(model, gpu), ""]
    lines += ["## The 0.5B recipes in configs/recipes/ (one GPU, modelled)", "",
              "From each recipe's own batch settings; this toolkit keeps fp32 weights under bf16 autocast, so its "
              "frozen models take 4 bytes per parameter. Each recipe's header quotes its line.", ""]
    lines += [f"- `{path.name}`: {recipe_line(path, gpu).split(': ', 1)[1]}" for path in sorted(RECIPES.glob("*.yaml"))]
    lines += ["", "## Measured on this CPU", ""]
    if measured is None:
        lines.append("Not measured yet: run `python bench/scaling.py --measure`.")
    else:
        m = measured
        cpu = m["machine"]["cpu"]
        flags = ", ".join(flag for flag, present in m["machine"]["flags"].items() if present)
        lines += [
            f"MEASURED on {cpu} ({m['machine']['cores']} cores, {m['threads']} torch threads; flags: {flags}; "
            f"no AMX) on {m['when']}, **under contention** (load average {m['load_average'][0]:.1f} before, "
            f"{m['load_average'][1]:.1f} after, on 2 cores: other jobs were running), so these are lower bounds "
            "of what the machine does alone.", "",
            f"- Model: {m['model']}; {m['params']:,} parameters, {m['matmul_params']:,} in matrix products.",
            f"- One training step of {m['tokens_per_step']:,} tokens: {m['step_s']:.3f} s, i.e. "
            f"{m['tokens_per_s']:,.0f} tokens/s ({m['seconds_per_token'] * 1e6:.1f} us per token).",
            f"- Achieved 6 x matmul params x tokens/s = {m['achieved_gflops']:.1f} GFLOP/s, "
            f"{m['fraction_of_fp32_peak']:.0%} of this CPU's measured fp32 matmul peak "
            f"({m['fp32_peak_gflops']:.1f} GFLOP/s, measured under the same contention but not at the same moment, so "
            f"this fraction is no clean MFU; beside it, the {gpu.mfu:.0%} assumed for GPUs is an assumption only).",
            f"- Training step / forward pass = {m['train_over_forward']:.2f} (the FLOP model says 3: forward 2, "
            "backward 4 per parameter and token; the optimiser step and the small model's non-matmul work add the rest).",
        ]
    lines += ["", *fsdp_memory.section(json.loads(FSDP_MEASURED.read_text(encoding="utf-8"))
                                       if FSDP_MEASURED.exists() else None)]
    return "\n".join(lines) + "\n"


def write_recipe_headers(gpu: GPU = GPU()) -> None:
    """Each recipe's `# expected on ...` header line set to what `recipe_line` computes now."""
    for path in sorted(RECIPES.glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").split("\n")
        at = [i for i, line in enumerate(lines) if line.startswith("# expected on")]
        if len(at) != 1:
            raise ValueError(f"{path}: its header needs one line starting '# expected on'")
        lines[at[0]] = "# " + recipe_line(path, gpu)
        path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help="measure this CPU again (else reuse docs/scaling-measured.json)")
    args = parser.parse_args(argv)
    if args.measure:
        MEASURED.parent.mkdir(parents=True, exist_ok=True)
        from scaling_measure import measure_cpu

        MEASURED.write_text(json.dumps(measure_cpu(), indent=2) + "\n", encoding="utf-8")
    measured = json.loads(MEASURED.read_text(encoding="utf-8")) if MEASURED.exists() else None
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render(measured), encoding="utf-8")
    write_recipe_headers()
    print(f"wrote {DOC.relative_to(ROOT)} and the expected figures in {RECIPES.relative_to(ROOT)}/*.yaml")


if __name__ == "__main__":
    main()
