"""``ImageClassifierModule``: a LightningModule for the image-level labels alone, trained by the same CLI on
the same data modules as :class:`~lightning_seg.task.module.SegmentationModule`.

The labels are the data's (``label_names``: the VOC Kaggle CSV's 20 columns, a folder's labels) or, without
them, derived from the masks exactly as a segmentation net's class head learns them (multi: the foreground
classes present; :class:`~lightning_seg.labels.LabelTask`). The loss is :class:`CompoundLoss`'s image-level
term (``label_loss`` ce | bce | focal, ``focal_gamma``, ``focal_alpha``, ``label_class_weights``); its pixel
options do not apply. The metrics are the class head's (macro F1, exact-match accuracy, and for multi-label
heads mAP and ROC AUC), logged as ``<stage>/label_<name>``.

``tune`` picks each label's F1-maximising threshold on the val split and writes it beside the checkpoint
(the ``labels`` section of a thresholds file); ``test`` and ``predict`` use it when it is there and say so.
``predict`` with a :class:`~lightning_seg.callbacks.MaskWriter` writes ``labels.csv``, which
``submit --labels_from`` and ``LabelConsistency(labels: ...)`` of a segmentation run read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_seg.data.base import IMAGENET_MEAN, IMAGENET_STD
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.labels import LabelMode, LabelTask, plain_scores
from lightning_seg.losses import CompoundLoss
from lightning_seg.metrics import NamedSums
from lightning_seg.postprocess.thresholds import file_digest, thresholds_path
from lightning_seg.task.classes import model_class_names
from lightning_seg.task.epoch_logs import label_logs
from lightning_seg.task.loss_weights import label_weights_of, resolve_on_rank_zero
from lightning_seg.task.optimizers import ConfiguredOptimizers, default_optimizer
from lightning_seg.task.results import TaskResults

STAGES = ("train", "val", "test")

ClassifierBuilder = Callable[[int], nn.Module]
"""A classifier class with its arguments but ``num_labels`` (e.g. :class:`~lightning_seg.models.ImageClassifier`);
its forward returns B×L logits, or ``{"label": B×L}``."""


class ImageClassifierModule(ConfiguredOptimizers, L.LightningModule):
    """Image-level labels with any classifier (see the module docstring).

    Args:
        net: builds the classifier from the number of labels L.
        num_classes: mask classes including background (linked from the data module; labels derived from
            the masks and LabelConsistency read them).
        ignore_index: the masks' ignore label (linked).
        class_names: the mask classes (linked).
        label_names: the data's image labels (linked; empty: derived from the masks, see ``label_mode``).
        label_classes: the mask class each data label names (linked).
        label_mode: "single" (softmax, one label per image) or "multi" (sigmoid); None: "single" when the
            data has ``label_names``, else "multi" over the foreground classes present in each mask.
        label_thresholds: multi-label thresholds, one per label (or one for all); None: 0.5.
        label_relative: the relative rule ``p >= r · max p`` instead of thresholds.
        loss: its image-level options (``label_loss``, ``focal_gamma``, ``focal_alpha``,
            ``label_class_weights``, ``class_weight_beta``); None: CE (single) or BCE (multi).
        optimizer: builds the optimizer from the trainable parameters.
        lr_scheduler: builds the scheduler from the optimizer.
        scheduler_interval: "step" or "epoch"; None: by the schedule (see SegmentationModule).
        scheduler_monitor: the metric ReduceLROnPlateau watches.
        mean: the data's normalisation mean (linked).
        std: the data's normalisation std (linked).
        tuned_thresholds: ``test`` and ``predict`` read the thresholds ``tune`` wrote beside the checkpoint
            when the file is there (one line says which thresholds decide).
    """

    def __init__(
        self,
        net: ClassifierBuilder,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        label_classes: Sequence[str | None] | None = None,
        label_mode: LabelMode | None = None,
        label_thresholds: Sequence[float] | None = None,
        label_relative: float | None = None,
        loss: CompoundLoss | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] | None = None,
        scheduler_monitor: str = "val/loss",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        tuned_thresholds: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = model_class_names(num_classes, class_names)
        # without data labels, the classes present (multi), not one dominant class per image
        resolved_mode = label_mode if label_mode is not None or label_names else "multi"
        self.label_task = LabelTask.of_model(
            resolved_mode,
            label_names,
            self.class_names,
            label_thresholds,
            ignore_index,
            label_classes,
            label_relative,
        )
        self.label_mode, self.label_names = self.label_task.mode, list(self.label_task.names)
        self.loss = (loss if loss is not None else CompoundLoss()).for_task(
            num_classes,
            ignore_index,
            self.label_mode,
            len(self.label_names),
            label_weight_source=self._label_weights_of_data,
        )
        self.net = net(len(self.label_names))
        self.size_divisor = int(getattr(self.net, "size_divisor", 1))
        self.optimizer_builder, self.scheduler_builder = optimizer, lr_scheduler
        self.scheduler_interval, self.scheduler_monitor = scheduler_interval, scheduler_monitor
        self.mean = tuple(mean) if mean is not None else IMAGENET_MEAN
        self.std = tuple(std) if std is not None else IMAGENET_STD
        self.use_tuned_thresholds = tuned_thresholds
        # the thresholds tune wrote for the evaluated checkpoint (float32 (L,)), read at test/predict start
        self.tuned: torch.Tensor | None = None
        self.results = TaskResults()
        self.label_metrics = nn.ModuleDict({f"{stage}_": self.label_task.new_metrics() for stage in STAGES})
        self.loss_sums = nn.ModuleDict({f"{stage}_": NamedSums() for stage in STAGES if stage != "train"})

    def _label_weights_of_data(self, rule: str, beta: float) -> torch.Tensor:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return label_weights_of(datamodule, self.label_task, rule, beta)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer.ckpt_path is None:
            resolve_on_rank_zero(self.loss, self.trainer.strategy, self.trainer.is_global_zero)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.loss.label_weight_tensor is not None:
            checkpoint["loss_label_class_weights"] = self.loss.label_weight_tensor.cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "loss_label_class_weights" in checkpoint:
            self.loss.set_label_class_weights(checkpoint["loss_label_class_weights"])

    # ------------------------------------------------------------------------------------ the head
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """float32 B×3×H×W normalised images → float32 B×L label logits."""
        out = self.net(image)
        logits = out["label"] if isinstance(out, dict) else out
        self.label_task.check_head(logits)
        return logits

    def label_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """float B×L logits → float32 B×L probabilities (softmax for single, sigmoid for multi)."""
        return self.label_task.probabilities(logits)

    def label_decisions(
        self, probabilities: torch.Tensor, thresholds: torch.Tensor | Sequence[float] | None = None
    ) -> torch.Tensor:
        """float32 B×L probabilities → bool B×L (``thresholds`` None: the tuned ones when read, else the
        configured ones)."""
        return self.label_task.decisions(probabilities, thresholds if thresholds is not None else self.tuned)

    def label_targets(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """The batch's targets (int64 (B,) single, float32 B×L multi; -100 unknown), or None."""
        return self.label_task.targets(batch.get("label"), batch["mask"])

    # ------------------------------------------------------------------------------------ steps
    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        logits = self(batch["image"])
        target = self.label_targets(batch)
        if target is None:
            raise ConfigError(
                f"{stage}: the data gives no image labels for this batch; the classifier needs them"
            )
        if stage == "train":
            loss = self.loss.label_term(logits, target)
            batch_size = len(target)
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=batch_size)
            self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        else:  # summed over the split, divided once at its end (exact, not a mean of batch means)
            self.loss_sums[f"{stage}_"].update({"label": self.loss.label_sums(logits, target).double()})
            loss = None
        with torch.no_grad():
            probabilities = self.label_probabilities(logits.detach())
            tuned = self.tuned if stage == "test" else None  # test decides as predict does
            decisions = self.label_task.decisions(probabilities, tuned)
            self.label_metrics[f"{stage}_"].update(probabilities, decisions, target)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        assert loss is not None
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"name": [str], "label_probability": float32 B×L, "label_decision": bool B×L}`` (what
        MaskWriter writes to ``labels.csv``)."""
        probabilities = self.label_probabilities(self(batch["image"]))
        names = batch.get("name") or [f"{batch_idx:05d}_{i:03d}" for i in range(len(probabilities))]
        return {
            "name": list(names),
            "label_probability": probabilities,
            "label_decision": self.label_decisions(probabilities),
        }

    # ------------------------------------------------------------------------------------ epoch end
    def _log_epoch(self, stage: str) -> None:
        metric = self.label_metrics[f"{stage}_"]
        if not metric.update_count:
            return
        scores = metric.compute()  # synced across processes by torchmetrics
        metric.reset()
        record = plain_scores(scores, self.label_mode, self.label_names)  # one host copy
        self.results.stage(stage).label_scores = record
        logged = label_logs(stage, scores, record, self.label_names)
        sums = self.loss_sums[f"{stage}_"] if stage != "train" else None
        if sums is not None and sums.update_count:
            total, weight = sums.compute()["label"]
            logged[f"{stage}/loss"] = (total / weight.clamp_min(1e-12)).float()
            sums.reset()
        f1 = logged.pop(f"{stage}/label_f1")
        self.log_dict(logged, prog_bar=False)
        self.log(f"{stage}/label_f1", f1, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_test_start(self) -> None:
        self._read_tuned(self.trainer.ckpt_path)

    def on_predict_start(self) -> None:
        self._read_tuned(self.trainer.ckpt_path)

    def _read_tuned(self, ckpt_path: str | None) -> None:
        """The label thresholds ``tune`` wrote beside ``ckpt_path`` (checked: the labels' names and the
        checkpoint's SHA-256), when ``tuned_thresholds`` and the file is there; one line says which decide."""
        self.tuned = None
        if self.label_mode != "multi":
            return
        path = thresholds_path(ckpt_path) if ckpt_path else None
        if self.label_task.relative is not None:
            rank_zero_info(f"labels: the relative rule p >= {self.label_task.relative} · max p")
            return
        if not self.use_tuned_thresholds or path is None or not path.is_file():
            hint = "; run tune for per-label thresholds" if self.use_tuned_thresholds else ""
            rank_zero_info(f"labels: the configured thresholds (model.label_thresholds){hint}")
            return
        self.tuned = read_label_thresholds(path, self.label_names, ckpt_path).to(self.device)
        rank_zero_info(f"labels: the thresholds tuned by tune ({short_path(str(path))})")


def read_label_thresholds(path: Path, label_names: Sequence[str], checkpoint: str | None) -> torch.Tensor:
    """float32 (L,) the ``labels`` thresholds of a file ``tune`` wrote, an untuned label (no positive image)
    at 0.5; refuses (one line) other labels, or a file tuned for another version of the checkpoint."""
    where = short_path(str(path))
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where}: not a readable thresholds file ({error})") from error
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or labels.get("names") != list(label_names):
        raise ConfigError(
            f"{where}: its label thresholds are not for this model's labels {list(label_names)[:4]}..."
        )
    tuned_for = data.get("checkpoint_sha256")
    if (
        checkpoint is not None
        and tuned_for
        and Path(checkpoint).is_file()
        and file_digest(checkpoint) != tuned_for
    ):
        raise ConfigError(
            f"{where}: tuned for another version of {short_path(str(checkpoint))}; run tune again"
        )
    return torch.tensor([0.5 if t is None else float(t) for t in labels["thresholds"]], dtype=torch.float32)
