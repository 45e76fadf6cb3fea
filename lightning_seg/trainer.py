"""``SegTrainer``: Lightning's Trainer with this project's extra subcommands as methods.

LightningCLI turns each subcommand into a call of the Trainer method of the same name, with that method's
arguments as command-line options; the methods here only hand over to :mod:`lightning_seg.commands`.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L

from lightning_seg.commands.submit import write_submission
from lightning_seg.commands.tune import tune_thresholds


class SegTrainer(L.Trainer):
    """A Lightning Trainer that also tunes post-processing thresholds and writes competition submissions."""

    def tune(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        split: Literal["val", "test"] = "val",
        metric: Literal["dice", "iou"] = "dice",
        steps: int = 101,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Tune per-class probability thresholds on the validation split and write them beside the checkpoint.

        Args:
            model: the segmentation module (its inference and post-processing before the decision are used).
            datamodule: the data; its val split calibrates.
            ckpt_path: the checkpoint whose thresholds are tuned (``<name>.thresholds.json`` beside it).
            split: the calibration split: val (test is refused: thresholds tuned on test inflate its score).
            metric: the one-vs-rest score each class's threshold maximises: dice (F1) or iou.
            steps: thresholds in the grid 0..1 (101: steps of 0.01).
            weights_only: how the checkpoint is loaded (as for ``validate``; a run's config.yaml states it).
        """
        return tune_thresholds(self, model, datamodule, ckpt_path, split, metric, steps, weights_only)

    def submit(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        output: str | None = None,
        labels_from: Literal["head", "mask"] | None = None,
        weights_only: bool | None = None,
    ) -> str:
        """Write ``submission.csv``: the predict split through ``predict``'s path, run-length encoded.

        Args:
            model: the segmentation module (its inference and post-processing, as in ``test``).
            datamodule: the data; its predict split is encoded (in its competition CSV's order if it has one).
            ckpt_path: the checkpoint to predict with.
            output: the CSV's path; None: ``submission.csv`` in ``<run>/submit/<date-time>/``.
            labels_from: the classification rows from the image-level head ("head") or from the classes
                present in each predicted mask ("mask"); None: the head when the net has one.
            weights_only: how the checkpoint is loaded (as for ``predict``).
        """
        return str(write_submission(self, model, datamodule, ckpt_path, output, labels_from, weights_only))
