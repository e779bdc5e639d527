"""Typed records passed between stages.

Every reader in `rlhf.data.formats` returns these, every stage consumes them, and nothing
else crosses a stage boundary. A prompt is either plain text (continued verbatim, as in the
story-continuation demo) or a conversation: a tuple of `Message`s ending with a user turn,
to which the tokenizer's chat template is applied (see `rlhf.data.tokenize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # only Rollout holds tensors; the web app reads these records without torch
    import torch

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str  # one of ROLES
    content: str


PromptText = Union[str, tuple[Message, ...]]  # plain text, or a conversation without its last reply


def is_conversation(prompt: PromptText) -> bool:
    return isinstance(prompt, tuple)


@dataclass(frozen=True)
class Document:
    """Raw text for pretraining."""

    text: str


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the response to imitate (SFT)."""

    prompt: PromptText
    completion: str


@dataclass(frozen=True)
class Comparison:
    """A pairwise preference: `chosen` was preferred to `rejected` for `prompt`."""

    prompt: PromptText
    chosen: str
    rejected: str
    margin: float | None = None  # optional strength of preference, used by reward models


@dataclass(frozen=True)
class Ranking:
    """A listwise preference. `ranking[0]` is the index into `responses` of the best one."""

    prompt: PromptText
    responses: tuple[str, ...]
    ranking: tuple[int, ...]


@dataclass(frozen=True)
class BinaryFeedback:
    """A thumbs-up (`label=True`) or thumbs-down on one response (KTO)."""

    prompt: PromptText
    completion: str
    label: bool


@dataclass(frozen=True)
class Prompt:
    """A prompt to generate from (RL, evaluation, candidate generation)."""

    prompt: PromptText
    answer: str | None = None  # the reference a verifiable reward checks (rlhf.rewards): the row's optional "answer"; non-string JSON kept as JSON text


@dataclass
class Rollout:
    """Sampled responses and what the sampler knew about them.

    B rollouts, prompts left-padded to P tokens, responses right-padded to T tokens.
    """

    prompt_ids: torch.Tensor  # (B, P) left-padded prompt token ids
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, T) sampled token ids, pad after EOS
    response_mask: torch.Tensor  # (B, T) 1 on response tokens up to and including EOS
    logprobs: torch.Tensor  # (B, T) log pi_sample(token) under the sampling distribution
    ended: torch.Tensor  # (B,) bool: the response reached EOS

    @property
    def tokens(self) -> torch.Tensor:
        """(B, P+T) prompt and response ids side by side."""
        import torch

        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P+T) 1 on real tokens."""
        import torch

        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def rows(self, index: "torch.Tensor") -> "Rollout":
        """The rows `index` (1-D long): a minibatch or a selection (a subclass with more fields
        keeps them by overriding this)."""
        return Rollout(self.prompt_ids[index], self.prompt_mask[index], self.response_ids[index],
                       self.response_mask[index], self.logprobs[index], self.ended[index])


def prompt_as_json(prompt: PromptText):
    """A prompt as it appears in a JSONL row: the text, or the conversation as a list of messages."""
    if isinstance(prompt, tuple):
        return [{"role": m.role, "content": m.content} for m in prompt]
    return prompt
