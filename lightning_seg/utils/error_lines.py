"""An error as the one line the command line prints: the rule ``lightning-seg``, ``sweep`` and the record
writers share."""

from __future__ import annotations

from jsonargparse import ArgumentError

from lightning_seg.errors import ConfigError, truncate
from lightning_seg.utils.parse_errors import reduce_parse_error


def config_error_in_chain(error: BaseException) -> ConfigError | None:
    """The :class:`ConfigError` that caused ``error`` (jsonargparse wraps one raised while it builds a
    class_path), or None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConfigError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def one_line(error: BaseException) -> str:
    """The message of a parse or config error on one line, without jsonargparse's usage dump."""
    if isinstance(error, ArgumentError):
        return reduce_parse_error(str(error))
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        # raised in a DataLoader worker: torch prepends the worker's traceback; the last line is the message
        lines = [lines[-1].split(f"{type(error).__name__}: ", 1)[-1]]
    text = " ".join(lines).replace("\\n", " ")
    # a ConfigError is written to be read whole (its file paths may be long); anything else is cut short
    return text if isinstance(error, ConfigError) else truncate(text)


def innermost_message(error: BaseException, limit: int = 200) -> str:
    """The last line of the innermost cause of ``error`` (jsonargparse wraps the real one in "Does not
    validate ..."), at most ``limit`` characters."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return truncate(lines[-1] if lines else type(error).__name__, limit)


def typed_line(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one short line (for warnings that go on after a failure, e.g. a plot's)."""
    return truncate(f"{type(error).__name__}: {error}", limit)
