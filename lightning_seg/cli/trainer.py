"""``SegTrainer``: Lightning's Trainer with this project's extra subcommands as methods.

LightningCLI turns each subcommand into a call of the Trainer method of the same name, with that method's
arguments as command-line options; the methods here only hand over to :mod:`lightning_seg.commands`.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L

from lightning_seg.commands.attack import check_options, run_attack
from lightning_seg.commands.export import export_model
from lightning_seg.commands.label_tune import tune_label_thresholds
from lightning_seg.commands.submit import write_submission
from lightning_seg.commands.tune import tune_thresholds
from lightning_seg.errors import ConfigError
from lightning_seg.task.classifier import ImageClassifierModule


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
        oof: str | None = None,
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
            oof: a cv folder: calibrate on its folds' out-of-fold probabilities (every training image, each
                predicted by the fold model that never saw it) instead of a pass over val; for the cv's
                ensemble (``--config <cv>/ensemble/config.yaml``), whose members trained on val.
        """
        if isinstance(model, ImageClassifierModule):
            if metric != "dice":
                raise ConfigError(
                    f"tune --metric {metric}: an image classifier's thresholds maximise each label's F1"
                )
            if oof is not None:
                raise ConfigError(
                    "tune --oof: out-of-fold files hold mask probabilities; an image classifier tunes on val"
                )
            return tune_label_thresholds(self, model, datamodule, ckpt_path, split, steps, weights_only)
        return tune_thresholds(self, model, datamodule, ckpt_path, split, metric, steps, weights_only, oof)

    def submit(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        output: str | None = None,
        labels_from: str | None = None,
        weights_only: bool | None = None,
    ) -> str:
        """Write ``submission.csv``: the predict split through ``predict``'s path, run-length encoded.

        Args:
            model: the segmentation module (its inference and post-processing, as in ``test``).
            datamodule: the data; its predict split is encoded (in its competition CSV's order if it has one).
            ckpt_path: the checkpoint to predict with.
            output: the CSV's path; None: ``submission.csv`` in ``<run>/submit/<date-time>/``.
            labels_from: the classification rows from the image-level head ("head"), from the classes
                present in each predicted mask ("mask"), or from a CSV of 0/1 image labels by name (another
                model's, e.g. the image classifier's ``predict`` output ``labels.csv``), or another run's
                checkpoint (``.ckpt``: its ``predict`` runs first, with its own config); None: the head
                when the net has one.
            weights_only: how the checkpoint is loaded (as for ``predict``).
        """
        _refuse_classifier(model, "submit")
        return str(write_submission(self, model, datamodule, ckpt_path, output, labels_from, weights_only))

    def export(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        formats: list[Literal["onnx", "torch_export"]] | None = None,
        opset: int | None = None,
        parity_images: int = 8,
        min_agreement: float = 0.999,
        weights_only: bool | None = None,
    ) -> str:
        """Export the net for deployment (uint8 RGB in, logits out) into ``<run>/export/<date-time>/`` and
        check the files against the checkpoint (see :mod:`lightning_seg.commands.export`).

        Args:
            model: the segmentation module (its plain forward pass is exported).
            datamodule: the data; images of its predict split (else test) check the parity.
            ckpt_path: the checkpoint to export.
            formats: any of onnx (``model.onnx``), torch_export (``model.pt2``); None: both.
            opset: the ONNX opset; None: 20 (torch's exporter writes 18 to 23).
            parity_images: images of the data the files and the checkpoint are compared on.
            min_agreement: the share of pixels whose class must agree with the checkpoint's, else an error.
            weights_only: how the checkpoint is loaded (as for ``predict``).
        """
        _refuse_classifier(model, "export")
        return str(
            export_model(
                self,
                model,
                datamodule,
                ckpt_path,
                formats or ["onnx", "torch_export"],
                opset,
                parity_images,
                min_agreement,
                weights_only,
            )
        )

    def attack(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        attacks: list[Literal["fgsm", "pgd", "segpgd"]] | None = None,
        epsilons: list[float | str] | None = None,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        target_class: str | None = None,
        target_region: str | None = None,
        heads: list[Literal["mask", "label"]] | None = None,
        split: Literal["test", "val", "predict"] = "test",
        panels: int = 4,
        seed: int = 0,
        weights_only: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Adversarial robustness: mIoU under FGSM, PGD and SegPGD per L∞ radius, scored as ``test`` scores.

        Also pixel accuracy, the target share of targeted attacks and the label accuracy of an image-level
        head; ``robustness.json``/``.md``/``.png`` and example panels in ``<run>/attack/<date-time>/`` (see
        :mod:`lightning_seg.commands.attack`).

        Args:
            model: the segmentation module (its inference and post-processing, as in ``test``).
            datamodule: the data; its ``split`` is attacked.
            ckpt_path: the checkpoint to attack.
            attacks: any of fgsm, pgd, segpgd; None: all three.
            epsilons: L∞ radii in [0, 1] pixel units, numbers or fractions ("8/255"); None: 0, 1/255, 2/255,
                4/255, 8/255. Radius 0 is the clean score (``test``'s metrics).
            steps: PGD and SegPGD iterations.
            step_size: PGD/SegPGD step in pixel units; None: 2.5·ε/steps.
            random_start: PGD/SegPGD start from a uniform draw in the ε-ball.
            target_class: also run targeted attacks towards this class (name or index).
            target_region: a PNG whose non-zero pixels mark where the target class is pushed (resized to each
                image); None: the whole image.
            heads: the outputs attacked: mask, and label (the image-level head); None: mask, plus label when
                the net has a head.
            split: test, val, or predict (no masks: scored against the model's own clean predictions).
            panels: example images in each panel file (at the largest radius); 0: none.
            seed: seed of the random starts.
            weights_only: how the checkpoint is loaded (as for ``test``).
        """
        options = check_options(
            model,
            attacks,
            epsilons,
            steps,
            step_size,
            random_start,
            target_class,
            target_region,
            heads,
            split,
            panels,
            seed,
        )
        _refuse_classifier(model, "attack")
        return run_attack(self, model, datamodule, ckpt_path, options, weights_only)


def _refuse_classifier(model: L.LightningModule, command: str) -> None:
    """The mask commands refuse an image classifier in one line, with the way its labels are used."""
    if isinstance(model, ImageClassifierModule):
        raise ConfigError(
            f"{command}: an image classifier predicts labels, not masks; predict writes its labels.csv, which "
            "a segmentation run's submit --labels_from and LabelConsistency(labels: ...) read"
        )
