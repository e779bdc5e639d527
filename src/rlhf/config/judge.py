"""Configs of `rlhf judge` (AI preferences) and `rlhf judge revise` (Constitutional AI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import check_fields

DEFAULT_CONSTITUTION = "default"  # the constitution shipped in rlhf/resources/constitution/default.yaml


@dataclass(frozen=True)
class JudgeBackendFields:
    """Who judges: a local model directory or an OpenAI-compatible endpoint, and how answers are kept."""

    model: str | None = None  # local judge: a causal LM directory, decoded greedily (give this or --api-base)
    api_base: str | None = None  # endpoint judge: base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1
    api_model: str | None = None  # endpoint judge: the model name to ask
    api_key_env: str = "OPENAI_API_KEY"  # endpoint judge: environment variable holding the API key
    cache: str | None = None  # JSON-lines cache of answers (a rerun asks nothing twice); default: next to --out
    retries: int = 2  # a malformed answer is asked again this many times (sampled, a new seed each), then it is an error; cached: a rerun with more asks only the new attempts
    on_malformed: Literal["error", "tie"] = "error"  # after the retries: stop with an error naming the item, or count it as a tie
    max_new_tokens: int = 256  # answer tokens at most; an endpoint's are fitted to what its model's context leaves
    concurrency: int = 8  # endpoint judge: requests in flight at once (a batching server answers them together); answers are cached as each group of this many ends
    request_timeout: float = 600.0  # endpoint judge: seconds one request may take (the openai client's default), after which it is asked twice more
    seed: int = 0  # seed of anything drawn at random (revise: the principle for each response)
    device: str = "auto"  # local judge: auto (cuda if available, else cpu), cpu, cuda, cuda:N
    skip_bad_rows: bool = False  # drop malformed input rows (counted) instead of stopping

    def _check(self, extra: dict[str, bool]) -> None:
        checks = {"retries": 0 <= self.retries <= 10, "max_new_tokens": self.max_new_tokens >= 1,
                  "concurrency": self.concurrency >= 1, "request_timeout": self.request_timeout > 0,
                  "api_model": self.api_base is None or bool(self.api_model),
                  "api_base": self.model is None or self.api_base is None, **extra}
        check_fields(self, checks, "a judge is --model DIR or --api-base URL --api-model NAME")


@dataclass(frozen=True)
class JudgeConfig(JudgeBackendFields):
    """`rlhf judge`: AI preferences. Reads the {"prompt","responses"} file `rlhf generate` writes
    without --label (k responses: k // 2 disjoint pairs) or a comparisons file (re-judged), asks the
    judge every pair in both orders (a verdict that flips is a tie, left out and counted) and writes
    comparisons {"prompt","chosen","rejected"}, as `rlhf generate --label` does, plus OUT.summary.json."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("data",)

    data: str | None = None  # candidates {"prompt","responses"} or comparisons {"prompt","chosen","rejected"}
    out: str = "runs/judged.jsonl"  # comparisons written (JSONL); the summary goes to OUT.summary.json
    template: str = "pairwise-v1"  # pairwise prompt template shipped in rlhf/labelers/templates

    def __post_init__(self):
        self._check({})


@dataclass(frozen=True)
class JudgeReviseConfig(JudgeBackendFields):
    """`rlhf judge revise`: Constitutional AI (Bai et al. 2022). For each prompt and response, the
    judge critiques the response against a principle drawn (seeded) from the constitution, then
    revises it; the revisions are written as SFT demonstrations {"prompt","completion"} and, with
    --pairs, as comparisons preferring the revision over the original."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("data",)

    data: str | None = None  # responses: {"prompt","responses"}, {"prompt","completion"} or comparisons (both responses)
    out: str = "runs/revisions.jsonl"  # demonstrations written (JSONL), read by `rlhf sft`
    pairs: str | None = None  # also write comparisons (revision chosen over original) to this JSONL file
    constitution: str = DEFAULT_CONSTITUTION  # YAML file of principles (name, critique, revision); default: the shipped one

    def __post_init__(self):
        self._check({"pairs": self.pairs is None or self.pairs != self.out})
