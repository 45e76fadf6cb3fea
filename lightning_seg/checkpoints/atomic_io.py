"""``AtomicCheckpointIO``: a checkpoint file is either the previous complete one or the new complete one.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction, which stages the file in ``$TMPDIR``
and moves it into place; when ``$TMPDIR`` is on another filesystem the move is a copy, so a kill or a full
disk during it leaves a truncated checkpoint under its final name (once a zero-byte ``last.ckpt`` replaced
the good one). Here the file is written beside its target, flushed to disk and renamed over it
(:func:`lightning_seg.utils.atomic.atomic_write`). Remote paths (``s3://``...) go to Lightning's own writer. The
CLI installs this plugin unless a config names another ``CheckpointIO``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_seg.checkpoints.read import cached_checkpoint
from lightning_seg.utils.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic and durable, and whose loads reuse the checkpoint
    the command has already read (:func:`~lightning_seg.checkpoints.read.cached_checkpoint`)."""

    def load_checkpoint(
        self, path: Any, map_location: Callable[..., Any] | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        cached = cached_checkpoint(path, weights_only)
        if cached is not None:  # memory-mapped on the CPU; Lightning moves what it restores
            return cached
        if map_location is None:
            return super().load_checkpoint(path, weights_only=weights_only)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(checkpoint, handle), durable=True)
