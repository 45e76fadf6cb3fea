"""``tune`` for an image classifier: each label's F1-maximising threshold on the val split.

One pass over val with the command's own wrapper module (:class:`LabelCalibration`: the classifier's
probabilities into a :class:`~lightning_seg.postprocess.thresholds.ThresholdHistogram` of images per
label), the thresholds written beside the checkpoint as the ``labels`` section of a thresholds file (the
format a segmentation net's class head uses), then a second pass that scores val with them: the printed
table holds macro F1 before (the configured thresholds) and after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_seg.callbacks.base import CommandPass, attached
from lightning_seg.checkpoints.load import load_weights
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.postprocess.thresholds import (
    THRESHOLDS_FORMAT,
    ThresholdHistogram,
    best_thresholds,
    file_digest,
    thresholds_path,
)
from lightning_seg.task.classifier import ImageClassifierModule
from lightning_seg.utils.atomic import atomic_write


class LabelCalibration(L.LightningModule):
    """Wraps the classifier for tune's pass over val: every image's label probabilities against its targets
    into ``histogram`` (images with an unknown target left out), and the macro F1 at ``thresholds``.

    Args:
        model: the classifier (its weights as loaded).
        histogram: L labels × the grid.
        thresholds: float32 (L,) decision thresholds scored in this pass (None: the configured ones).
    """

    def __init__(
        self, model: ImageClassifierModule, histogram: ThresholdHistogram, thresholds: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.model, self.histogram = model, histogram
        self.thresholds = thresholds
        self.scores = model.label_task.new_metrics()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probabilities = self.model.label_probabilities(self.model(batch["image"]))
        target = self.model.label_targets(batch)
        if target is None:
            raise ConfigError(
                "tune: the data gives no image labels for this batch; the classifier needs them"
            )
        known = (target >= 0).all(1)
        self.histogram.update(probabilities, target > 0.5, known)
        thresholds = self.thresholds.to(probabilities.device) if self.thresholds is not None else None
        self.scores.update(probabilities, self.model.label_task.decisions(probabilities, thresholds), target)


def tune_label_thresholds(
    trainer: L.Trainer,
    model: ImageClassifierModule,
    datamodule: Any,
    ckpt_path: str | None,
    split: str,
    steps: int,
    weights_only: bool | None,
) -> dict[str, Any]:
    """Tune, write and verify the label thresholds of ``ckpt_path``; returns the record written."""
    if model.label_mode != "multi":
        raise ConfigError(
            "tune: a single-label classifier decides by the most probable label; there are no thresholds to tune"
        )
    if split != "val":
        raise ConfigError(f"tune --split {split}: thresholds tuned on test inflate its score; use val")
    if datamodule is None or not getattr(datamodule, "validates", True):
        raise ConfigError("tune needs a data module with a val split (not data.refit or val_fraction 0)")
    if ckpt_path is not None:
        load_weights(model, read_checkpoint(ckpt_path, weights_only, cache=True), ckpt_path)
    histogram = ThresholdHistogram(len(model.label_names), steps)
    before = LabelCalibration(model, histogram, None)
    # the command's own passes: the callbacks that record a user's validate stay out of them
    with attached(trainer, CommandPass("tune")):
        trainer.validate(before, datamodule=datamodule, verbose=False)
    labels = best_thresholds(histogram, "dice")  # the F1 of each label over the images
    tuned = torch.tensor([0.5 if t is None else t for t in labels["thresholds"]], dtype=torch.float32)
    after = LabelCalibration(model, ThresholdHistogram(len(model.label_names), 2), tuned)
    with attached(trainer, CommandPass("tune")):
        trainer.validate(after, datamodule=datamodule, verbose=False)
    record: dict[str, Any] = {
        "format": THRESHOLDS_FORMAT,
        "checkpoint": str(ckpt_path) if ckpt_path else None,
        "checkpoint_sha256": file_digest(ckpt_path) if ckpt_path and Path(ckpt_path).is_file() else None,
        "class_names": list(model.class_names),
        "split": split,
        "metric": "f1",
        "grid": {"start": 0.0, "stop": 1.0, "steps": steps},
        "labels": {**labels, "names": list(model.label_names)},
        "f1_before": float(before.scores.compute()["f1"]),
        "f1_after": float(after.scores.compute()["f1"]),
    }
    target = thresholds_path(ckpt_path) if ckpt_path else Path(trainer.default_root_dir) / "thresholds.json"
    if trainer.is_global_zero:
        atomic_write(target, json.dumps(record, indent=2))
        folder = Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"stage": "tune", "status": "completed", **record, "thresholds_file": str(target)}
        atomic_write(folder / "summary.json", json.dumps(summary, indent=2))
        tuned_text = ", ".join(
            f"{name} {'untuned' if t is None else f'{t:.2f}'}"
            for name, t in zip(model.label_names, labels["thresholds"], strict=True)
        )
        print(f"tune: label thresholds on {split} (F1 per label): {tuned_text}")
        print(
            f"tune: {split} macro F1 {record['f1_before']:.4f} at the configured thresholds, "
            f"{record['f1_after']:.4f} at the tuned ones; thresholds: {short_path(str(target))} "
            "(test and predict read them)"
        )
    trainer.strategy.barrier()
    return record
