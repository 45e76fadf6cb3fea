"""Whether an ensemble's folder already holds the ensemble of given checkpoints (``lightning-seg ensemble``
writes it; ``cv`` asks before it starts a process to rebuild one)."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_seg.postprocess.thresholds import file_digest
from lightning_seg.task.ensemble import check_weights

CHECKPOINT_NAME = "ensemble.ckpt"
DESCRIPTION = "ensemble.json"


def ensemble_members(folder: Path) -> list[tuple[str, str | None, float | None]] | None:
    """The members an ensemble folder's ``ensemble.json`` lists: (resolved checkpoint path, SHA-256, weight);
    None for a folder without one."""
    described = folder / DESCRIPTION
    if not described.is_file():
        return None
    members = json.loads(described.read_text()).get("members") or []
    return [(str(Path(m.get("checkpoint", "")).resolve()), m.get("sha256"), m.get("weight")) for m in members]


def ensemble_is_current(output: Path, checkpoints: list[Path], weights: list[float] | None) -> bool:
    """Whether ``output`` holds the ensemble of exactly these checkpoints: the same files (path and SHA-256)
    with the same weights."""
    members = ensemble_members(output)
    if members is None or not (output / "checkpoints" / CHECKPOINT_NAME).is_file():
        return False
    if len(members) != len(checkpoints):
        return False
    expected = check_weights(weights, len(checkpoints))
    return all(
        path == str(checkpoint.resolve())
        and sha256 == file_digest(checkpoint)
        and weight is not None
        and abs(weight - w) < 1e-9
        for (path, sha256, weight), checkpoint, w in zip(members, checkpoints, expected, strict=True)
    )
