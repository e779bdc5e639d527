"""Online sampling for RL and candidate generation.

- ``sampler``: the seam an RL trainer samples through (``Sampler``: prompts and the policy in,
  scored samples out); ``kv_sampler`` (the built-in KV cache scored by a reward, DAPO's dynamic
  sampling) and ``multiturn`` (episodes against an environment) implement it; ``experience``
  holds the records (``Sampled``, ``Experience``), ``shard`` the rows' placement over processes
- ``generate``: batched KV-cache sampling -> ``Rollout`` (``generate``, ``SamplingConfig``,
  ``sample_responses``, ``decode_responses``, ``stop_token_ids``)
- ``logprobs``: log-probabilities and entropies of a Rollout's response tokens under a model
- ``scorers``: anything that scores (prompt, response) text pairs: a reward-model directory or a
  ``module:function`` callable (``load_scorer``)
- ``attention``: fp32 attention under bf16 autocast on CPUs (``use_fp32_attention``)
"""

from rlhf.rollout.generate import SamplingConfig, decode_responses, generate, sample_responses, stop_token_ids

__all__ = ["SamplingConfig", "generate", "sample_responses", "decode_responses", "stop_token_ids"]
