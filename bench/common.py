"""Helpers shared by the benchmarks in bench/: a small model directory, demonstrations from the
bundled TinyStories corpus, peak-memory probes, per-step throughput, isolated worker processes
and the printed table.

Benchmarks compare `rlhf` with another framework by running each measured training in its own
subprocess, one after the other, so that peak memory belongs to one framework and neither shares
caches or threads with the other. A worker reports a list of per-step records
`{"step", "t", "tokens"}`: `t` the wall-clock time (seconds) at the end of optimiser step
`step`, `tokens` the cumulative non-padding tokens (attention-mask sum) processed so far; step 0
is the start of the training loop.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from efficiency import SPAWN_TIME_ENV

# Environment for worker processes: offline, quiet, no telemetry, no tokenizer thread pool fights.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
    "TQDM_DISABLE": "1",
}

# GPT-2 shapes per preset, matching the width and depth of `rlhf.models.tiny.PRESETS`.
GPT2_SHAPES = {"tiny": dict(n_embd=64, n_layer=2, n_head=4), "small": dict(n_embd=256, n_layer=6, n_head=8)}


# ---------------------------------------------------------------- model and data


def machine() -> dict:
    """The machine a figure was measured on (`rlhf.runtime.device.machine_facts`): CPU model, the
    flags that decide matmul speed (avx2, avx512f, avx512_bf16, amx), cores and threads."""
    from rlhf.runtime.device import machine_facts

    return machine_facts()


def cpu() -> str:
    """One line naming the CPU for printed tables: model, speed flags present, cores, threads."""
    facts = machine()
    flags = " ".join(f for f, present in facts["flags"].items() if present) or "no avx2"
    return f"{facts['cpu']} ({facts['cores']} cores, {facts['threads']} threads; {flags})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model_dir(out: Path, arch: str = "llama", preset: str = "tiny", vocab_size: int = 4096) -> Path:
    """A randomly initialised causal LM in Hugging Face format at `out`, reused if already built.

    The tokenizer is our byte-level BPE trained on the bundled TinyStories text
    (`rlhf.models.tiny.train_tokenizer`); the model is our Llama preset (`arch="llama"`) or a
    `GPT2LMHeadModel` of the same width and depth (`arch="gpt2"`), to exercise the path a user
    with their own non-Llama model takes. Random weights are fine: speed does not depend on them.
    """
    marker = out / "bench-model.json"
    wanted = {"arch": arch, "preset": preset, "vocab_size": vocab_size}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return out
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf.data.formats import read_documents
    from rlhf.models.load import save_pretrained
    from rlhf.models.tiny import PRESETS, build_model, train_tokenizer
    from rlhf.resources import TINYSTORIES_TRAIN

    torch.manual_seed(0)
    tokenizer = train_tokenizer((d.text for d in read_documents(TINYSTORIES_TRAIN)), vocab_size)
    if arch == "llama":
        model = build_model(preset, tokenizer)
    elif arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=PRESETS[preset].max_positions, **GPT2_SHAPES[preset],
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown --arch {arch!r}; choose llama or gpt2")
    save_pretrained(model, tokenizer, out)
    marker.write_text(json.dumps(wanted))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’']?(?=\s)")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each keeping its closing punctuation and leading whitespace."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [p for p in pieces if p.strip()]


def make_demonstrations(model_dir: Path, path: Path, n_rows: int, max_length: int) -> Path:
    """Write `n_rows` {"prompt", "completion"} rows cut from TinyStories to `path` (JSONL).

    The prompt is the story's opening sentence (two if the first is short); the completion is
    the rest of the story, cut at a sentence end so that prompt + completion + EOS fits in
    `max_length` tokens of `model_dir`'s tokenizer. No row needs truncating, so the two
    frameworks' different truncation rules never come into play and both train on the same tokens.
    The completion starts with a space and the prompt ends on punctuation, so tokenising the pair
    apart (rlhf) or joined (TRL) gives the same ids with a byte-level BPE.
    """
    from transformers import AutoTokenizer

    from rlhf.data.formats import read_documents
    from rlhf.resources import TINYSTORIES_TRAIN

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    count = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    rows = []
    for doc in read_documents(TINYSTORIES_TRAIN):
        sentences = split_sentences(" ".join(doc.text.split()))
        n_prompt = 2 if len(sentences) > 2 and len(sentences[0].split()) < 6 else 1
        prompt = "".join(sentences[:n_prompt]).strip()
        budget = max_length - 1 - count(prompt)  # one token for EOS
        completion = ""
        for sentence in sentences[n_prompt:]:
            if count(completion + sentence) > budget:
                break
            completion += sentence
        if completion.strip() and completion.startswith(" "):
            rows.append({"prompt": prompt, "completion": completion})
        if len(rows) == n_rows:
            break
    if len(rows) < n_rows:
        raise ValueError(f"the corpus gave only {len(rows)} demonstrations of the {n_rows} needed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- memory


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (MiB): VmHWM, else ru_maxrss."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS (Linux `clear_refs` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PhasePeak:
    """Peak RSS of the process overall and of one phase (the training call).

    `start()` notes the peak so far and the current RSS, then resets the high-water mark;
    `stop()` reads the peak of the phase. Overall peak = max(before, phase); the phase's growth =
    its peak minus the RSS it started from: the memory training itself added (gradients,
    optimiser state, activations), whatever each framework's imports cost. Where the mark cannot
    be reset, the phase peak is the process peak (an upper bound).
    """

    def __init__(self):
        self.before = self.start_rss = self.phase = None

    def start(self) -> None:
        self.before, self.start_rss = peak_rss_mb(), _status_mb("VmRSS") or 0.0
        reset_peak_rss()

    def stop(self) -> None:
        self.phase = peak_rss_mb()

    def as_dict(self) -> dict:
        return {"peak_mb": max(self.before, self.phase), "train_peak_mb": self.phase, "pre_train_peak_mb": self.before,
                "train_start_rss_mb": self.start_rss, "train_growth_mb": self.phase - self.start_rss}


class DtypeProbe:
    """What precision a model really trains in: the dtype of its weights, and of the output of
    its first Linear/Conv1D layer in the first forward pass (bfloat16 under bf16 autocast or a
    bf16 model, float32 otherwise). The hook removes itself after that first call."""

    def __init__(self, model):
        self.weights, self.matmul = str(next(model.parameters()).dtype).replace("torch.", ""), "not seen"
        layer = next((m for m in model.modules() if type(m).__name__ in ("Linear", "Conv1D")), None)
        self.handle = layer.register_forward_hook(self._hook) if layer is not None else None

    def _hook(self, module, inputs, output):
        self.matmul = str(getattr(output, "dtype", "?")).replace("torch.", "")
        self.handle.remove()

    def describe(self) -> str:
        return f"matmuls {self.matmul}, weights {self.weights}"


# ---------------------------------------------------------------- TRL side


def timed_trainer(trainer_cls, **kwargs):
    """A TRL trainer of a subclass of `trainer_cls` that counts the non-padding tokens (`.tokens`)
    and all tokens (`.padded_tokens`) of every batch it trains on, with a callback recording
    {"step", "t", "tokens"} at the start of training and after each optimiser step. Returns
    (trainer, records); `kwargs` go to the trainer (minus `callbacks`, which this sets)."""
    import time

    from transformers import TrainerCallback

    class CountingTrainer(trainer_cls):
        tokens = padded_tokens = 0

        def training_step(self, model, inputs, *args, **kw):
            self.tokens += int(inputs["attention_mask"].sum())
            self.padded_tokens += inputs["input_ids"].numel()
            return super().training_step(model, inputs, *args, **kw)

    records: list[dict] = []
    holder: dict = {}

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            records.append({"step": 0, "t": time.perf_counter(), "tokens": 0})

        def on_step_end(self, args, state, control, **kw):
            records.append({"step": state.global_step, "t": time.perf_counter(), "tokens": holder["trainer"].tokens})

    holder["trainer"] = CountingTrainer(**kwargs, callbacks=[StepClock()])
    return holder["trainer"], records


# ---------------------------------------------------------------- throughput


def throughput(records: list[dict], warmup: int) -> dict:
    """Tokens per second over steps warmup+1..N: the tokens processed in those steps divided by
    the time from the end of step `warmup` to the end of step N (the same for every framework)."""
    by_step = {r["step"]: r for r in records}
    last = max(by_step)
    if warmup not in by_step or last <= warmup:
        raise ValueError(f"steps {sorted(by_step)} recorded: need step {warmup} and at least one after it")
    first, end = by_step[warmup], by_step[last]
    tokens, seconds = end["tokens"] - first["tokens"], end["t"] - first["t"]
    return {"tokens_per_s": tokens / max(seconds, 1e-9), "timed_tokens": tokens, "timed_s": seconds,
            "timed_steps": last - warmup}


# ---------------------------------------------------------------- processes and output


def run_worker(script: Path, args: list[str], result_path: Path, log_path: Path, env: dict | None = None,
               python: str | None = None) -> dict:
    """Run `python script *args` in a fresh process (environment `WORKER_ENV` + `env`; `python`: this
    interpreter unless given), its output to `log_path`; return the JSON it wrote to `result_path`."""
    result_path.unlink(missing_ok=True)
    env = {**os.environ, **WORKER_ENV, **(env or {})}
    with open(log_path, "w", encoding="utf-8") as log:
        env[SPAWN_TIME_ENV] = repr(time.time())  # the worker's whole-process clock starts here
        proc = subprocess.run([python or sys.executable, str(script), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0 or not result_path.exists():
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
        raise RuntimeError(f"worker {' '.join(args[:2])} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return json.loads(result_path.read_text(encoding="utf-8"))


def format_table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table; floats get 1 decimal (2 for ratios, whose header ends in 'x')."""

    def cell(value, header):
        if isinstance(value, float):
            return f"{value:.2f}" if header.endswith("x") else f"{value:,.1f}"
        return str(value)

    cells = [[cell(v, h) for v, h in zip(row, headers)] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])
