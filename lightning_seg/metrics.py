"""Segmentation metrics from one torchmetrics confusion matrix per stage.

Every pixel metric (IoU per class, mIoU, Dice/F1, pixel accuracy) is a function of the confusion matrix,
so one confusion matrix is updated per step (a single ``index_add_`` on the device, synced across
processes by torchmetrics) and all metrics are derived from it at epoch end — they can never disagree
with each other.

Averaging: IoU_c = TP_c / (TP_c + FP_c + FN_c) over every pixel of the whole evaluation (not per image);
mIoU is the mean over classes whose union is non-empty, so a class absent from both targets and
predictions in the whole evaluation does not count as 0 (nor as 1). Dice is averaged the same way.
``dice_fg`` is the mean over the non-background classes (1..K-1) of each class's Dice pooled over the whole
evaluation, not a mean of per-image Dice scores.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """IoU/Dice per class and their means from a K×K confusion matrix (rows: target, columns: prediction).

    Returns float32 tensors: ``iou`` of shape (K,) with NaN for classes absent from both target and
    prediction; scalars ``mIoU``, ``dice``, ``dice_fg`` and ``acc``.
    """
    confusion = confusion.double()
    tp = confusion.diagonal()
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    union = tp + fp + fn
    nan = torch.tensor(float("nan"), dtype=confusion.dtype, device=confusion.device)
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), nan)
    total = confusion.sum()
    return {
        "iou": iou.float(),
        "mIoU": iou.nanmean().float(),
        "dice": dice.nanmean().float(),
        "dice_fg": dice[1:].nanmean().float(),
        "acc": (tp.sum() / total.clamp_min(1)).float(),
    }


class ConfusionMatrix(Metric):
    """K×K pixel confusion matrix (rows: target, columns: prediction), summed across processes.

    Written here rather than using torchmetrics' ``MulticlassConfusionMatrix`` because that one removes
    ignored pixels by boolean indexing and counts with ``torch.bincount``: both wait for the GPU every
    step, and under ``deterministic=True`` its fallback builds an N×K² tensor (gigabytes for a batch of
    street scenes). Here ignored pixels go to one extra bin and ``index_add_`` counts without a sync.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """int64 B×H×W predictions and targets (targets may hold ``ignore_index``)."""
        k = self.num_classes
        valid = (target != self.ignore_index) & (target >= 0) & (target < k)
        index = torch.where(valid, target * k + pred, k * k).flatten()
        counts = torch.zeros(k * k + 1, dtype=torch.long, device=index.device)
        counts.index_add_(0, index, torch.ones_like(index))
        self.confusion += counts[:-1].view(k, k)

    def compute(self) -> torch.Tensor:
        return self.confusion


class WeightedMean(Metric):
    """Weighted mean of scalars, summed across processes (for evaluation losses weighted by batch size).

    Written here because torchmetrics' ``MeanMetric`` (1.9) replaces the weights by ones when
    ``nan_strategy="disable"``, and its other strategies test for NaNs with a device sync every update.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: float) -> None:
        self.total += value.detach().double() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return (self.total / self.weight).float()


def per_image_foreground_iou(pred: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Foreground IoU of each image of a binary task; 1.0 where both are empty (nothing to find, nothing found).

    Args:
        pred, target: int64 B×H×W with labels {0, 1} (target may hold ``ignore_index``).

    Returns:
        float32 (B,).
    """
    valid = target != ignore_index
    p = (pred == 1) & valid
    t = (target == 1) & valid
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


class SegMetrics(nn.Module):
    """Confusion-matrix metrics of one stage, plus per-image foreground IoU for binary tasks.

    Args:
        num_classes: classes including background.
        ignore_index: target label excluded from every metric.
    """

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        # nan_strategy="disable": the default checks for NaNs with a device sync every step
        self.image_iou = MeanMetric(nan_strategy="disable") if num_classes == 2 else None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate int64 B×H×W predictions against int64 B×H×W targets, on the device."""
        self.confusion.update(pred, target)
        if self.image_iou is not None:
            self.image_iou.update(per_image_foreground_iou(pred, target, self.ignore_index))

    def compute(self) -> dict[str, torch.Tensor]:
        """Scores over everything accumulated (synced across processes); see :func:`scores_from_confusion`."""
        confusion = self.confusion.compute()
        scores = scores_from_confusion(confusion)
        scores["confusion"] = confusion
        if self.image_iou is not None:
            scores["IoU_fg"] = scores["iou"][1]
            scores["image_IoU"] = self.image_iou.compute()
        return scores

    def reset(self) -> None:
        self.confusion.reset()
        if self.image_iou is not None:
            self.image_iou.reset()

    @property
    def updated(self) -> bool:
        return self.confusion.update_count > 0
