"""``--config`` files that are readable YAML mappings, else one line with the file, line and column (before
jsonargparse, whose own message for a broken file is a page long)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from lightning_seg.errors import ConfigError, short_path, truncate


def check_config_files(args: Sequence[str]) -> None:
    """Every ``--config`` file is a readable YAML mapping (else one line with the file, line and column)."""
    for index, arg in enumerate(args):
        if arg in ("--config", "-c") and index + 1 < len(args):
            check_config_file(args[index + 1])
        elif arg.startswith("--config="):
            check_config_file(arg.split("=", 1)[1])


def check_config_file(value: str) -> None:
    path = Path(value).expanduser()
    if not path.exists():
        return  # a missing file (jsonargparse says so in one line) or a YAML string given inline
    shown = short_path(value)
    if path.is_dir():
        raise ConfigError(f"--config {shown}: is a folder, not a YAML file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--config {shown}: cannot be read ({error.strerror})") from error
    if b"\0" in data:
        raise ConfigError(f"--config {shown}: a binary file, not a YAML config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"--config {shown}: not UTF-8 text (bad byte at offset {error.start}), not a YAML config"
        ) from error
    try:
        content = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context = error.context_mark
        opened = (
            f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
            if error.context and context is not None and error.problem and context is not mark
            else ""
        )
        raise ConfigError(
            truncate(f"--config {shown}: YAML syntax error{where}: {error.problem or error.context}{opened}")
        ) from error
    except yaml.YAMLError as error:
        raise ConfigError(truncate(f"--config {shown}: not valid YAML ({error})")) from error
    if content is not None and not isinstance(content, dict):
        kind = {list: "a list", str: "a string"}.get(type(content), f"a {type(content).__name__}")
        raise ConfigError(
            f"--config {shown}: the top level must be a mapping (trainer:, model:, data:), not {kind}"
        )
