"""``ModelRecord``: every checkpoint the trainer saves carries what rebuilds its model alone."""

from __future__ import annotations

from typing import Any

import lightning as L

from lightning_seg.checkpoints.record import RECORD_KEY


class ModelRecord(L.Callback):
    """Writes the model record (:mod:`lightning_seg.checkpoints.record`: the resolved model config, how the
    data makes an image batchable, the split the weights are trained on) into every checkpoint saved. The CLI
    adds one built from the run's resolved config; the model itself holds no copy of its config.

    Args:
        record: the record, as plain data (``torch.load(weights_only=True)`` reads it back).
    """

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RECORD_KEY] = self.record


def model_record_of(trainer: L.Trainer) -> dict[str, Any] | None:
    """The record the trainer's checkpoints carry (None: no :class:`ModelRecord` on it)."""
    return next((c.record for c in trainer.callbacks if isinstance(c, ModelRecord)), None)
