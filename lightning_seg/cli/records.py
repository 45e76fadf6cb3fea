"""The model record (:mod:`lightning_seg.checkpoints.record`) a run's ``config.yaml`` gives: the CLI builds the
model from the config as ``fit`` did, for checkpoints written before they carried their own record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lightning_seg.cli.app import build_cli
from lightning_seg.errors import ConfigError, short_path


def record_from_config(config: str | Path) -> dict[str, Any]:
    """The record a run's ``config.yaml`` gives (the data module is built, not set up, for the values it
    links into the model), for checkpoints written before they carried one."""
    config = Path(config)
    try:
        values = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"config {short_path(str(config))}: not a readable YAML file ({error})") from error
    if not isinstance(values, dict) or "model" not in values:
        raise ConfigError(f"config {short_path(str(config))}: not a run's config.yaml (no model section)")
    # a fit record's own options (the checkpoint it resumed from) are no part of the model
    for key in ("ckpt_path", "weights_only"):
        values.pop(key, None)
    values.setdefault("trainer", {})["logger"] = False
    values["trainer"]["callbacks"] = []
    cli = build_cli(values, run=False)
    return cli.model_record or {}
