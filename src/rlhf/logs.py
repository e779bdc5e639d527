"""Logging helpers in plain Python, for every layer (the feedback app included, which never
imports torch)."""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def quieted(name: str, level: int = logging.ERROR):
    """Logger `name` shows only records at `level` or above inside the block, as it was after."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
