"""The demo task of the embedded default: continue a story opening so that it is positive.

Prompts are openings of bundled TinyStories stories: training prompts come from the training
corpus, held-out prompts from the validation excerpt, which no stage trains on. SFT
demonstrations pair a training opening with the story's own next words.
"""

from __future__ import annotations

import random
import re

from ..resources import TINYSTORIES_TRAIN, TINYSTORIES_VALIDATION
from ..data.formats import read_documents
from ..data.records import Demonstration, Prompt

OPENING_WORDS = 8  # words of a story shown as the prompt
CONTINUATION_WORDS = 40  # words of the story's own continuation used as an SFT demonstration


def _stories(split: str) -> list[str]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = TINYSTORIES_TRAIN if split == "train" else TINYSTORIES_VALIDATION
    texts = [re.sub(r"\s+", " ", d.text).strip() for d in read_documents(path)]
    # Deduplicate and keep stories long enough to have an opening and a continuation.
    seen, stories = set(), []
    for text in texts:
        words = text.split()
        if len(words) >= OPENING_WORDS + CONTINUATION_WORDS and words[:OPENING_WORDS] and text not in seen:
            seen.add(text)
            stories.append(text)
    return stories


def _split_story(text: str) -> tuple[str, str]:
    words = text.split()
    return " ".join(words[:OPENING_WORDS]), " " + " ".join(words[OPENING_WORDS : OPENING_WORDS + CONTINUATION_WORDS])


def story_prompts(split: str, n: int, seed: int = 0) -> list[Prompt]:
    """`n` distinct story openings (plain-text prompts), sampled with `seed`."""
    stories = _stories(split)
    openings = sorted({_split_story(s)[0] for s in stories})
    if n > len(openings):
        raise ValueError(f"asked for {n} {split} prompts but only {len(openings)} distinct openings exist")
    return [Prompt(p) for p in random.Random(seed).sample(openings, n)]


def story_demonstrations(n: int, seed: int = 0) -> list[Demonstration]:
    """`n` training stories cut into (opening, the story's own continuation)."""
    stories = _stories("train")
    chosen = random.Random(seed).sample(stories, min(n, len(stories)))
    return [Demonstration(*_split_story(s)) for s in chosen]
