"""`rlhf generate`: candidate responses from a policy, to be labelled into preferences.

Samples k responses per prompt with `rlhf.rollout.generate` (or, with `--rollout-engine vllm`, an
in-process vLLM engine on --model: docs/vllm.md) and writes JSONL:

- without --label: one row per prompt, {"prompt", "responses": [k texts]};
- with --label: comparisons {"prompt", "chosen", "rejected"}, the k responses of each prompt taken
  as k // 2 disjoint pairs (0, 1), (2, 3), ... and labelled by the scripted oracle
  (`--label oracle`: the demo's VADER sentiment annotator with Bradley-Terry noise of
  --oracle-temperature, 0 = noiseless) or by a scorer (a reward-model directory or
  `module:function`; the higher score is chosen; pairs scored equal are skipped and counted).

Every stage that reads comparisons (rm, dpo) reads the labelled file as it is.
"""

from __future__ import annotations

from pathlib import Path

from .. import runtime
from ..config import GenerateConfig
from ..data.files import write_jsonl
from ..data.formats import read_prompts
from ..data.tokenize import encode_prompt
from ..data.records import prompt_as_json
from ..models.load import load_causal_lm, load_tokenizer
from ..rollout.attention import use_fp32_attention
from ..rollout.generate import SamplingConfig, sample_responses, stop_token_ids
from .pairs import label_pairs


def run(cfg: GenerateConfig) -> Path:
    if cfg.model is None or cfg.data is None:
        raise ValueError("generate needs --model DIR (the policy to sample from) and --data PROMPTS")
    if cfg.rollout_engine == "vllm":  # imported here only: vllm is a separate install (docs/vllm.md)
        from ..rollout.vllm_sampler import import_vllm

        import_vllm()  # not installed: a one-line error with the install line, before anything is loaded
    rt = runtime.init(cfg, run_dir=False)  # its result is one file (cfg.out), not a run directory
    device = rt.device
    prompts = [p.prompt for p in read_prompts(cfg.data, skip_bad_rows=cfg.skip_bad_rows)]
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    model = load_causal_lm(cfg.model, cfg.trust_remote_code).to(device).eval()
    use_fp32_attention(model)  # CPU only: see rlhf.rollout.attention
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    # Prompts longer than the budget keep their last tokens: render them back from the kept ids.
    budget = cfg.max_length - cfg.max_new_tokens
    too_long = [i for i, p in enumerate(prompts) if len(encode_prompt(tokenizer, p)) > budget]
    if too_long:
        raise ValueError(f"{len(too_long)} prompts are longer than max_length - max_new_tokens = {budget} tokens "
                         f"(first: row {too_long[0] + 1}); raise --max-length or shorten them")
    if cfg.rollout_engine == "vllm":
        from ..rollout.vllm_sampler import sample_texts

        responses = sample_texts(cfg.model, tokenizer, prompts, sampling, cfg.num_samples, cfg.seed, cfg.max_length,
                                 stop_token_ids(tokenizer, model))
    else:
        responses = sample_responses(model, tokenizer, prompts, sampling, k=cfg.num_samples, seed=cfg.seed,
                                     batch_size=cfg.batch_size, autocast=rt.autocast)
    ties = 0
    if cfg.label:
        rows, ties = label_pairs(prompts, responses, cfg.label, cfg.oracle_temperature, cfg.seed, device)
        if not rows:
            raise ValueError(f"--label {cfg.label} scored every pair equal ({ties} ties): no comparison to write")
    else:
        rows = [{"prompt": prompt_as_json(p), "responses": rs} for p, rs in zip(prompts, responses)]
    out = write_jsonl(cfg.out, rows)
    skipped = f" ({ties} tied pairs skipped: the labeler preferred neither)" if ties else ""
    print(f"rlhf generate: {len(prompts)} prompts x {cfg.num_samples} samples -> {len(rows)} rows{skipped} "
          f"in {rt.elapsed():.1f}s")
    return out
