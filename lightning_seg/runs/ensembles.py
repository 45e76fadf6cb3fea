"""Whether an ensemble's folder already holds the ensemble of given checkpoints (``lightning-seg ensemble``
writes it; ``cv`` asks before it starts a process to rebuild one)."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_seg.postprocess.thresholds import file_digest
from lightning_seg.task.ensemble import check_weights

CHECKPOINT_NAME = "ensemble.ckpt"
DESCRIPTION = "ensemble.json"


def ensemble_is_current(output: Path, checkpoints: list[Path], weights: list[float] | None) -> bool:
    """Whether ``output`` holds the ensemble of exactly these checkpoints: the same files (path and SHA-256)
    with the same weights."""
    described = output / DESCRIPTION
    if not described.is_file() or not (output / "checkpoints" / CHECKPOINT_NAME).is_file():
        return False
    members = json.loads(described.read_text()).get("members") or []
    if len(members) != len(checkpoints):
        return False
    expected = check_weights(weights, len(checkpoints))
    return all(
        m.get("checkpoint") == str(path.resolve())
        and m.get("sha256") == file_digest(path)
        and abs(m.get("weight", -1) - w) < 1e-9
        for m, path, w in zip(members, checkpoints, expected, strict=True)
    )
