"""The image-level class head: single-label or multi-label targets, probabilities, decisions, metrics.

A net may return image-level logits B×L beside its mask logits (``NetOutput.label``). Two modes:

* ``"single"``: one class per image, softmax; the target is the data's label (MSD's None/Scratch/Stain/Oil),
  or without data labels the dominant mask class (:func:`dominant_class`, L = K labels named as the classes).
* ``"multi"``: several classes per image, sigmoid; the target is a B×L multi-hot vector: the data's label
  one-hot, or without data labels the presence of each foreground class in the mask (:func:`presence_labels`,
  L = K-1 labels named ``class_names[1:]``). Decisions are ``p >= threshold``, one threshold per label.

Unknown targets are :data:`NO_LABEL` (-100): an int64 single-label target, or every entry of a multi-label
row. An image whose mask is wholly ``ignore_index`` has no derived label: it counts in neither the label
loss nor the label metrics, never as "background" or "nothing present".

The metrics keep sum-reduced counts updated on the device without a host sync: a L×L confusion matrix
(single) or per-label TP/FP/FN at the decision thresholds plus binned counts for the average precision
(multi). They are synced across processes by torchmetrics and turned into scores at epoch end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric

from lightning_seg.data.stats import ClassStatistics
from lightning_seg.errors import ConfigError

LabelMode = Literal["single", "multi"]

NO_LABEL = -100
"""Image-level target of an image whose mask has no labelled pixel: left out of the label loss and metrics."""

DEFAULT_THRESHOLD = 0.5
"""Decision threshold of a multi-label probability when none is configured."""


# ------------------------------------------------------------------------------------------------ targets
def dominant_class(mask: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Image-level label derived from a mask: the most frequent non-background class, 0 if the labelled
    pixels are all background, and :data:`NO_LABEL` if no pixel is labelled (nothing is known of the image).

    Args:
        mask: int64 B×H×W.

    Returns:
        int64 (B,).
    """
    valid = (mask != ignore_index) & (mask > 0)
    flat = torch.where(valid, mask, 0).flatten(1)
    counts = torch.zeros(mask.shape[0], num_classes, device=mask.device).scatter_add_(
        1, flat, valid.flatten(1).float()
    )
    counts[:, 0] = 0
    label = torch.where(counts.sum(1) > 0, counts.argmax(1), torch.zeros_like(counts[:, 0], dtype=torch.long))
    labelled = (mask != ignore_index).flatten(1).any(1)
    return torch.where(labelled, label, NO_LABEL)


def presence_labels(mask: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Multi-label target derived from a mask: whether each foreground class 1..K-1 has a pixel.

    Args:
        mask: int64 B×H×W with values in [0, K) or ``ignore_index``.

    Returns:
        float32 B×(K-1) of 0/1; rows of :data:`NO_LABEL` for masks without a labelled pixel.
    """
    valid = mask != ignore_index
    flat = torch.where(valid, mask, 0).flatten(1)
    # scatter, not one_hot(...).any(): one_hot checks the value range with a host sync
    counts = torch.zeros(mask.shape[0], num_classes, device=mask.device).scatter_add_(
        1, flat, valid.flatten(1).float()
    )
    present = (counts[:, 1:] > 0).float()
    labelled = valid.flatten(1).any(1, keepdim=True)
    return torch.where(labelled, present, float(NO_LABEL))


def resolve_label_mode(mode: LabelMode | None, data_label_names: Sequence[str] | None) -> LabelMode:
    """The configured mode, or "single" (data labels such as MSD's, or the dominant mask class when the data
    gives none: the behaviour of checkpoints trained before multi-label heads existed). Multi-label heads
    (several classes per image, as in VOC) are asked for with ``label_mode: multi``."""
    if mode is None:
        return "single"
    if mode not in ("single", "multi"):
        raise ConfigError(f"model.label_mode must be 'single', 'multi' or null, got {mode!r}")
    return mode


# ------------------------------------------------------------------------------------ probabilities
def label_probabilities(logits: torch.Tensor, mode: LabelMode) -> torch.Tensor:
    """float B×L logits → float32 B×L probabilities: softmax (single) or sigmoid (multi)."""
    logits = logits.float()
    return logits.softmax(1) if mode == "single" else logits.sigmoid()


def label_decisions(
    probabilities: torch.Tensor, mode: LabelMode, thresholds: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """float B×L probabilities → bool B×L decisions: the argmax one-hot (single), or ``p >= threshold``
    per label (multi; ``thresholds``: float (L,) or a scalar, None: 0.5)."""
    if mode == "single":
        return F.one_hot(probabilities.argmax(1), probabilities.shape[1]).bool()
    if thresholds is None:
        return probabilities >= DEFAULT_THRESHOLD
    # as_tensor: no copy for a tensor already on the device (a list, e.g. tuned thresholds, is copied)
    return probabilities >= torch.as_tensor(
        thresholds, dtype=probabilities.dtype, device=probabilities.device
    )


def label_class_map(
    label_names: Sequence[str],
    class_names: Sequence[str],
    mode: LabelMode,
    derived: bool,
    label_classes: Sequence[str | None] | None = None,
) -> torch.Tensor:
    """bool L×K: which mask class each label says is present.

    Derived labels: multi label l ↔ class l+1, single label l ↔ class l. Data labels: a label whose name
    equals a class name (case-insensitive: MSD's "Scratch" ↔ "scratch") ↔ that class; a label matching no
    class (MSD's "None") ↔ no class. ``label_classes`` (from the data module) names each label's class
    explicitly (MSD's binary masks: every defect type ↔ "defect").
    """
    table = torch.zeros(len(label_names), len(class_names), dtype=torch.bool)
    if label_classes is not None and not derived:
        if len(label_classes) != len(label_names):
            raise ConfigError(
                f"model.label_classes has {len(label_classes)} entries for {len(label_names)} labels"
            )
        for index, name in enumerate(label_classes):
            if name is None:
                continue
            if name not in class_names:
                raise ConfigError(
                    f"model.label_classes: {name!r} is not a class; classes: {list(class_names)}"
                )
            table[index, list(class_names).index(name)] = True
        return table
    if derived:
        offset = 1 if mode == "multi" else 0
        for index in range(len(label_names)):
            table[index, index + offset] = True
        return table
    lowered = [name.lower() for name in class_names]
    for index, name in enumerate(label_names):
        if name.lower() in lowered:
            table[index, lowered.index(name.lower())] = True
    return table


def classes_of_labels(decisions: torch.Tensor, class_map: torch.Tensor) -> torch.Tensor:
    """bool B×L decisions → bool B×K: the mask classes they say are present (background always True)."""
    class_map = class_map.to(decisions.device)
    present = (decisions[:, :, None] & class_map[None]).any(1)
    present[:, 0] = True
    # a class that no label speaks about is never ruled out by the labels
    present |= ~class_map.any(0)[None]
    return present


class LabelTask(nn.Module):
    """What the image-level head predicts and how it is read: mode, label names, thresholds, class map.

    Args:
        mode: "single" or "multi".
        label_names: the L labels.
        class_names: the K mask classes.
        derived: the labels come from the masks (no data labels).
        thresholds: multi-label decision thresholds, one per label (or one for all); None: 0.5.
        num_classes: K.
        ignore_index: the masks' ignore label.

    The thresholds and the class map are non-persistent buffers: they follow the module's device and stay
    out of checkpoints (the config states them).
    """

    def __init__(
        self,
        mode: LabelMode,
        label_names: Sequence[str],
        class_names: Sequence[str],
        derived: bool,
        thresholds: Sequence[float] | None,
        num_classes: int,
        ignore_index: int,
        label_classes: Sequence[str | None] | None = None,
    ) -> None:
        super().__init__()
        self.mode: LabelMode = mode
        self.names = list(label_names)
        self.derived = derived
        self.num_classes, self.ignore_index = num_classes, ignore_index
        values = [DEFAULT_THRESHOLD] * len(self.names) if thresholds is None else list(thresholds)
        if len(values) == 1:
            values = values * len(self.names)
        if len(values) != len(self.names):
            raise ConfigError(
                f"model.label_thresholds has {len(values)} values for {len(self.names)} labels {self.names}"
            )
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ConfigError(f"model.label_thresholds must lie in [0, 1], got {values}")
        self.register_buffer("thresholds", torch.tensor(values, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "class_map",
            label_class_map(self.names, class_names, mode, derived, label_classes),
            persistent=False,
        )

    @property
    def num_labels(self) -> int:
        return len(self.names)

    def check_head(self, logits: torch.Tensor) -> None:
        """Refuse a head whose width is not the number of labels (a ``num_labels`` the config fixed)."""
        if logits.shape[1] != self.num_labels:
            raise ConfigError(
                f"model.net: the class head gives {logits.shape[1]} outputs for {self.num_labels} "
                f"{self.mode}-label labels {self.names[:6]}; leave the net's num_labels null"
            )

    def targets(self, data_label: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
        """The target of a batch: int64 (B,) (single) or float32 B×L (multi), :data:`NO_LABEL` where
        unknown; None when the data has labels but this batch carries none.

        Args:
            data_label: the batch's ``"label"`` (int64 (B,), or a B×L multi-hot for multi), or None.
            mask: int64 B×H×W.
        """
        if data_label is None:
            if not self.derived:
                return None
            if self.mode == "single":
                return dominant_class(mask, self.num_classes, self.ignore_index)
            return presence_labels(mask, self.num_classes, self.ignore_index)
        if self.mode == "single":
            if data_label.dim() != 1:
                raise ConfigError("model.label_mode single needs one int64 label per image; use multi")
            return data_label.long()
        if data_label.dim() == 2:
            return data_label.float()
        known = data_label != NO_LABEL
        onehot = F.one_hot(torch.where(known, data_label, 0).long(), self.num_labels).float()
        return torch.where(known[:, None], onehot, float(NO_LABEL))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return label_probabilities(logits, self.mode)

    def decisions(
        self, probabilities: torch.Tensor, thresholds: torch.Tensor | Sequence[float] | None = None
    ) -> torch.Tensor:
        return label_decisions(
            probabilities, self.mode, self.thresholds if thresholds is None else thresholds
        )

    def classes_of_labels(self, decisions: torch.Tensor) -> torch.Tensor:
        return classes_of_labels(decisions, self.class_map)

    def new_metrics(self) -> Metric:
        """A fresh metric of this mode (one per stage)."""
        return (
            SingleLabelMetrics(self.num_labels)
            if self.mode == "single"
            else MultiLabelMetrics(self.num_labels)
        )


# ------------------------------------------------------------------------------------------- metrics
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

    def compute(self) -> dict[str, torch.Tensor]:
        """``f1`` (macro), ``acc`` (exact match: every label of an image right), ``mAP`` (mean over labels
        with a positive target), per-label ``precision``/``recall``/``ap``."""
        scores = _scores(self.tp, self.fp, self.fn)
        ap = self.average_precision()
        scores["ap"] = ap
        scores["mAP"] = torch.nan_to_num(ap.nanmean())
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
    return record


# ---------------------------------------------------------------------------------- weights, balance
def rule_weights(counts: torch.Tensor, rule: str) -> torch.Tensor:
    """float32 (L,) label weights from each label's image count, by the pixel rules of
    :meth:`~lightning_seg.data.stats.ClassStatistics.weights` with images in place of pixels: a label's
    frequency is its share of the label counts (every image "contains" every label, so median-frequency
    balancing is ``median(p) / p_l``); labels that never occur get 0."""
    counts = counts.to(torch.int64)
    total = torch.full_like(counts, int(counts.sum()))
    stats = ClassStatistics(counts, total, counts, ignored_pixels=0, num_images=int(counts.sum()))
    return stats.weights(rule)  # type: ignore[arg-type]


def label_counts(datamodule: Any, task: LabelTask, split: str = "train") -> torch.Tensor | None:
    """int64 (L,): the images of ``split`` holding each label; None when they cannot be counted without a
    pass of their own (derived single labels: the dominant class is not in the class statistics)."""
    if not task.derived:
        multi_hot = getattr(datamodule, "label_image_counts", None)
        if callable(multi_hot):  # data with several labels per image (a multi-hot CSV): each one counts
            return multi_hot(split)[: task.num_labels].long()
        labels = datamodule.sample_labels(split)
        if labels is None:
            return None
        known = labels[labels >= 0]
        return torch.bincount(known, minlength=task.num_labels)[: task.num_labels]
    if task.mode == "multi":
        return datamodule.class_statistics(split).image_counts[1:].clone()
    return None


def label_weight_source(datamodule: Any, task: LabelTask) -> Callable[[str], torch.Tensor] | None:
    """What resolves a ``loss.label_class_weights`` rule: the rule → float32 (L,) weights from the training
    split's label counts; None without a data module that has them."""
    if datamodule is None or not hasattr(datamodule, "class_statistics"):
        return None

    def weights(rule: str) -> torch.Tensor:
        counts = label_counts(datamodule, task)
        if counts is None:
            raise ConfigError(
                f"loss.label_class_weights={rule!r} needs data labels or model.label_mode multi "
                "(dominant-class labels are not counted)"
            )
        return rule_weights(counts, rule)

    return weights


def rarest_present_class(presence: torch.Tensor) -> torch.Tensor:
    """int64 (N,): each image's rarest present foreground class (fewest images hold it), 0 for an image
    without foreground. ``presence``: bool N×K, whether each class has a pixel in each image."""
    foreground = presence[:, 1:]
    counts = foreground.sum(0).double()
    rarity = torch.where(foreground, counts[None], math.inf)
    return torch.where(foreground.any(1), rarity.argmin(1) + 1, 0)


def balancing_weights(groups: torch.Tensor) -> torch.Tensor:
    """float64 (N,) sampling weights ∝ 1 / the frequency of each sample's group (int64 (N,); negative:
    never drawn), so that every group is drawn equally often."""
    known = groups >= 0
    if not bool(known.any()):
        raise ConfigError("data.balanced_labels: no training sample has an image-level label")
    counts = torch.bincount(groups[known]).double()
    return torch.where(known, 1.0 / counts[groups.clamp_min(0)].clamp_min(1), 0.0)
