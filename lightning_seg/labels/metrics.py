"""Metrics of an image-level head: sum-reduced counts updated on the device without a host sync (a L×L
confusion matrix for a single-label head; per-label TP/FP/FN and binned counts for the average precision for
a multi-label one), synced across processes by torchmetrics and turned into scores at the epoch's end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from lightning_seg.labels.targets import LabelMode


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """float64 numerator / denominator, NaN where the denominator is 0."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), float("nan"))


def _scores(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-label precision/recall (NaN when undefined) and macro F1 over the labels that occur as target
    or prediction (as torchmetrics' macro average: a label absent from both does not count; 0 if none)."""
    counted = (tp + fp + fn) > 0
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    macro = torch.where(counted.any(), torch.where(counted, f1, 0.0).sum() / counted.sum().clamp_min(1), 0.0)
    return {
        "precision": _ratio(tp, tp + fp).float(),
        "recall": _ratio(tp, tp + fn).float(),
        "f1": macro.float(),
    }


class SingleLabelMetrics(Metric):
    """L×L image-label confusion matrix (rows: target, columns: prediction), summed across processes.

    Counted like :class:`lightning_seg.metrics.ConfusionMatrix`: unknown targets go to one extra bin and
    ``index_add_`` counts, so an update never waits for the device.
    """

    full_state_update = False

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.add_state(
            "confusion", torch.zeros(num_labels, num_labels, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, probabilities: torch.Tensor, decisions: torch.Tensor, target: torch.Tensor) -> None:
        """float B×L probabilities, bool B×L (one-hot) decisions, int64 (B,) targets (NO_LABEL: unknown)."""
        n = self.num_labels
        pred = decisions.long().argmax(1)
        valid = (target >= 0) & (target < n)
        index = torch.where(valid, target * n + pred, n * n)
        counts = torch.zeros(n * n + 1, dtype=torch.long, device=index.device)
        counts.index_add_(0, index, torch.ones_like(index))
        self.confusion += counts[:-1].view(n, n)

    def compute(self) -> dict[str, torch.Tensor]:
        """``f1`` (macro), ``acc`` (share of images right), per-label ``precision``/``recall`` and
        ``confusion``."""
        confusion = self.confusion
        tp = confusion.diagonal()
        scores = _scores(tp, confusion.sum(0) - tp, confusion.sum(1) - tp)
        scores["acc"] = torch.nan_to_num(_ratio(tp.sum(), confusion.sum())).float()
        scores["confusion"] = confusion
        return scores


class MultiLabelMetrics(Metric):
    """Per-label TP/FP/FN at the decision thresholds, exact-match counts and the average precision.

    The average precision is binned (torchmetrics' ``MultilabelAveragePrecision(thresholds=...)`` gives the
    same value on the same grid) so memory stays constant; written here because torchmetrics' update tests
    the probability range with a host sync.

    Args:
        num_labels: L.
        num_thresholds: the AP grid, ``linspace(0, 1, num_thresholds)``.
    """

    full_state_update = False

    def __init__(self, num_labels: int, num_thresholds: int = 101) -> None:
        super().__init__()
        self.num_labels = num_labels
        for name in ("tp", "fp", "fn", "positives"):
            self.add_state(name, torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("curve_tp", "curve_fp"):
            self.add_state(
                name, torch.zeros(num_thresholds, num_labels, dtype=torch.long), dist_reduce_fx="sum"
            )
        self.add_state("exact", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.register_buffer("grid", torch.linspace(0, 1, num_thresholds), persistent=False)

    def update(self, probabilities: torch.Tensor, decisions: torch.Tensor, target: torch.Tensor) -> None:
        """float B×L probabilities, bool B×L decisions, float B×L 0/1 targets (NO_LABEL: unknown)."""
        valid = target >= 0
        positive = valid & (target > 0.5)
        negative = valid & ~positive
        self.tp += (decisions & positive).sum(0)
        self.fp += (decisions & negative).sum(0)
        self.fn += (~decisions & positive).sum(0)
        self.positives += positive.sum(0)
        above = probabilities[:, None, :] >= self.grid.to(probabilities.dtype)[None, :, None]  # B×T×L
        self.curve_tp += (above & positive[:, None]).sum(0)
        self.curve_fp += (above & negative[:, None]).sum(0)
        known = valid.any(1)
        self.exact += (known & ((decisions == positive) | ~valid).all(1)).sum()
        self.images += known.sum()

    def average_precision(self) -> torch.Tensor:
        """float32 (L,): each label's binned AP; NaN for a label without a positive target."""
        tp, fp = self.curve_tp.double(), self.curve_fp.double()
        precision = torch.nan_to_num(_ratio(tp, tp + fp))
        recall = tp / self.positives.double().clamp_min(1)
        # the curve from the highest threshold down, closed at (recall 0, precision 1) as torchmetrics does
        precision = torch.cat([precision, torch.ones_like(precision[:1])])
        recall = torch.cat([recall, torch.zeros_like(recall[:1])])
        ap = -((recall[1:] - recall[:-1]) * precision[:-1]).sum(0)
        return torch.where(self.positives > 0, ap, float("nan")).float()

    def roc_auc(self) -> torch.Tensor:
        """float32 (L,): each label's binned ROC AUC (the trapezoid through the grid's (FPR, TPR) points: a
        pair of images in one bin counts one half, as a tie); NaN for a label without both a positive and a
        negative target."""
        tp, fp = self.curve_tp.double(), self.curve_fp.double()
        positives, negatives = tp[0], fp[0]  # p >= 0 holds for every image
        tpr = torch.cat([tp / positives.clamp_min(1), torch.zeros_like(tp[:1])])  # thresholds rising, then 0
        fpr = torch.cat([fp / negatives.clamp_min(1), torch.zeros_like(fp[:1])])
        auc = ((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2).sum(0)
        return torch.where((positives > 0) & (negatives > 0), auc, float("nan")).float()

    def compute(self) -> dict[str, torch.Tensor]:
        """``f1`` (macro), ``acc`` (exact match: every label of an image right), ``mAP`` and ``AUC`` (means
        over the labels where defined), per-label ``precision``/``recall``/``ap``/``auc``."""
        scores = _scores(self.tp, self.fp, self.fn)
        ap = self.average_precision()
        scores["ap"] = ap
        scores["mAP"] = torch.nan_to_num(ap.nanmean())
        auc = self.roc_auc()
        scores["auc"] = auc
        scores["AUC"] = torch.nan_to_num(auc.nanmean())
        scores["acc"] = torch.nan_to_num(_ratio(self.exact, self.images)).float()
        return scores


def plain_scores(scores: dict[str, torch.Tensor], mode: LabelMode, names: Sequence[str]) -> dict[str, Any]:
    """The scores of one stage as plain lists for ``summary.json`` (NaN → None); one host copy."""

    def values(tensor: torch.Tensor) -> list[float | None]:
        return [None if math.isnan(v) else v for v in tensor.tolist()]

    record: dict[str, Any] = {
        "mode": mode,
        "names": list(names),
        "rows_target_cols_prediction": scores["confusion"].tolist() if "confusion" in scores else None,
        "precision": values(scores["precision"]),
        "recall": values(scores["recall"]),
        "f1": float(scores["f1"]),
        "acc": float(scores["acc"]),
    }
    if "ap" in scores:
        record["ap"] = values(scores["ap"])
        record["mAP"] = float(scores["mAP"])
    if "auc" in scores:
        record["auc"] = values(scores["auc"])
        record["AUC"] = float(scores["AUC"])
    return record
