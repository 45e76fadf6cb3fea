"""The one exception type the command line turns into a single clear line (no stack trace), and the small
helpers that keep such a line short."""

from __future__ import annotations

import difflib
from pathlib import Path

DEBUG_ENV = "LIGHTNING_SEG_DEBUG"
"""Set to 1: bad input raises with its full traceback instead of one line."""

MAX_MESSAGE = 196
"""Longest message after ``lightning-seg: error: `` (the whole line stays within about 220 characters)."""


class ConfigError(ValueError):
    """Bad user input: a config value, a data file, a dataset layout. The message names the key or file."""


def short_path(path: str | Path, limit: int = 80) -> str:
    """``path`` as given, or its tail after ``…/`` when it is longer than ``limit`` characters."""
    text = str(path)
    if len(text) <= limit:
        return text
    tail = text[-(limit - 2) :]
    cut = tail.find("/")
    return "…" + (tail[cut:] if 0 <= cut < len(tail) - 1 else "/" + Path(text).name)


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    """One line of at most ``limit`` characters (``…`` marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def closest(word: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate closest to ``word`` (difflib), or None when none is close."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not found:  # case slips (unet → UNet) score low in difflib
        lowered = {c.lower(): c for c in candidates}
        found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        found = [lowered[f] for f in found]
    return found[0] if found else None


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite: the run stops (exit code 1), its last finite
    checkpoint kept. The message is one line naming the step and the loss terms."""


class NothingToDo(Exception):
    """A command that would do nothing (resuming a finished run): said in one line, exit code 0."""
