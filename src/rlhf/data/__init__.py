"""Data: typed records passed between stages and the readers that build them from files."""

from rlhf.data.formats import (
    READERS,
    DataError,
    Records,
    read_binary_feedback,
    read_comparisons,
    read_demonstrations,
    read_documents,
    read_preferences,
    read_prompts,
    read_rankings,
)
from rlhf.data.records import (
    BinaryFeedback,
    Comparison,
    Demonstration,
    Document,
    Message,
    Prompt,
    PromptText,
    Ranking,
    Rollout,
    is_conversation,
)

__all__ = [
    "READERS",
    "BinaryFeedback",
    "Comparison",
    "DataError",
    "Demonstration",
    "Document",
    "Message",
    "Prompt",
    "PromptText",
    "Ranking",
    "Records",
    "Rollout",
    "is_conversation",
    "read_binary_feedback",
    "read_comparisons",
    "read_demonstrations",
    "read_documents",
    "read_preferences",
    "read_prompts",
    "read_rankings",
]
