"""Segmentation metrics of one stage from one per-image confusion matrix per step.

Every metric is a function of a confusion matrix, so each step builds one B×K×K confusion matrix, one per
image (a single ``index_add_`` on the device, no host sync), and two torchmetrics states are updated from
it: its sum over the images (the pooled K×K matrix) and the sums of per-image foreground scores. Both are
synced across processes by torchmetrics and all metrics are derived from them at epoch end.

Pooled over every pixel of the whole evaluation (not per image), from the K×K matrix:
IoU_c = TP_c / (TP_c + FP_c + FN_c); ``mIoU`` is the mean over classes whose union is non-empty, so a class
absent from both targets and predictions in the whole evaluation does not count as 0 (nor as 1). ``dice``
is averaged the same way. ``dice_fg`` is the mean over the non-background classes (1..K-1) of each class's
Dice pooled over the whole evaluation, not a mean of per-image Dice scores. ``acc``: pixel accuracy.

Per image (what medical papers usually report): ``image_dice_fg`` and ``image_IoU_fg``. For each image and
each foreground class c the image's own Dice 2TP/(2TP+FP+FN) and IoU TP/(TP+FP+FN) are scored, 1.0 where c
is absent from both the image's target and its prediction (nothing to find, nothing found); each class's
scores are averaged over the images, then the K-1 class means are averaged. ``image_dice_per_class`` and
``image_iou_per_class`` are the class means. An image whose target is wholly ``ignore_index`` is skipped
(not counted). For two-class tasks ``image_IoU`` (= ``image_IoU_fg``) and the pooled ``IoU_fg`` are kept.
``image_mIoU``: per image, the mean IoU over the classes present in its target or its prediction, background
included (the phone-defect notebook's "mean IoU per image"), averaged over the images.

``competition_dice`` (the competition's score): per image, the Dice of the stacked foreground planes,
2·|P∩T| / (|P| + |T|), where P and T are the sets of (class c ≥ 1, pixel) pairs with prediction == c and
target == c respectively (over the planes: |P∩T| = pixels with prediction == target ≥ 1, |P| = pixels
predicted as any foreground class, |T| = pixels whose target is any foreground class); 1.0 where both are
empty; averaged over the images (a wholly ignored image is skipped). Unlike ``mIoU`` (pooled over the whole
evaluation, per class, background included, IoU not Dice) it is scored per image and pools the foreground
classes of an image into one score, so a large class weighs more than a small one within an image; unlike
``dice`` ("Dice including background", pooled, mean over classes) the background plane does not count at all,
so an image that is mostly background gets no credit for it.

Pixels whose target is ``ignore_index`` are excluded from every metric.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric


def confusion_counts(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True positives, false positives and false negatives per class of confusion matrices.

    Args:
        confusion: integer ...×K×K counts (rows: target, columns: prediction); any leading dimensions
            (one matrix per image: B×K×K).

    Returns:
        float64 ...×K ``tp``, ``fp`` (predicted c, target another class), ``fn`` (target c, predicted
        another class).
    """
    confusion = confusion.double()
    tp = confusion.diagonal(dim1=-2, dim2=-1)
    return tp, confusion.sum(-2) - tp, confusion.sum(-1) - tp


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """float64 ...×K IoU per class, TP / (TP + FP + FN), of integer ...×K×K confusion matrices; NaN for a
    class absent from both target and prediction, so a NaN-mean over the last dimension is the mIoU rule
    (pooled over an evaluation, or per image)."""
    tp, fp, fn = confusion_counts(confusion)
    union = tp + fp + fn
    return torch.where(union > 0, tp / union.clamp_min(1), torch.nan)


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """IoU/Dice per class and their means from a K×K confusion matrix (rows: target, columns: prediction).

    Returns float32 tensors: ``iou`` and ``dice_per_class`` of shape (K,) with NaN for classes absent from
    both target and prediction; scalars ``mIoU``, ``dice``, ``dice_fg`` and ``acc``.
    """
    tp, fp, fn = confusion_counts(confusion)
    union = tp + fp + fn
    iou = class_iou(confusion)
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.nan)
    total = confusion.double().sum()
    return {
        "iou": iou.float(),
        "dice_per_class": dice.float(),
        "mIoU": iou.nanmean().float(),
        "dice": dice.nanmean().float(),
        "dice_fg": dice[1:].nanmean().float(),
        "acc": (tp.sum() / total.clamp_min(1)).float(),
    }


def per_image_confusion(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """One K×K confusion matrix per image (rows: target, columns: prediction), on the device.

    One ``index_add_`` over the whole batch: pixel (b, target, pred) counts in bin ``b*K*K + target*K +
    pred``; ignored pixels (target ``ignore_index`` or outside 0..K-1) go to one extra bin that is
    dropped. No boolean indexing and no ``torch.bincount``, which would both wait for the GPU. One
    B·H·W temporary: the bin index, built in place, int32 when the bins fit (the counted ones are a
    broadcast scalar, not a tensor of ones).

    Args:
        pred: integer B×H×W predicted classes in 0..K-1.
        target: integer B×H×W target classes (may hold ``ignore_index``).

    Returns:
        int64 B×K×K counts.
    """
    k = num_classes
    batch = target.shape[0]
    bins = batch * k * k
    dtype = torch.int32 if bins < torch.iinfo(torch.int32).max else torch.int64
    index = target.to(dtype) * k
    index += pred
    index += torch.arange(0, bins, k * k, device=target.device, dtype=dtype).view(
        -1, *([1] * (target.dim() - 1))
    )
    index.masked_fill_((target < 0) | (target >= k) | (target == ignore_index), bins)
    counts = torch.zeros(bins + 1, dtype=torch.long, device=index.device)
    one = torch.ones((), dtype=torch.long, device=index.device)
    counts.index_add_(0, index.flatten(), one.expand(index.numel()))
    return counts[:-1].view(batch, k, k)


class ConfusionMatrix(Metric):
    """K×K pixel confusion matrix (rows: target, columns: prediction), summed across processes.

    Written here rather than using torchmetrics' ``MulticlassConfusionMatrix`` because that one removes
    ignored pixels by boolean indexing and counts with ``torch.bincount``: both wait for the GPU every
    step, and under ``deterministic=True`` its fallback builds an N×K² tensor (gigabytes for a batch of
    street scenes). Here the counts come from :func:`per_image_confusion` (``index_add_``, no sync).
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, confusion: torch.Tensor) -> None:
        """Add int64 B×K×K per-image confusion matrices (see :func:`per_image_confusion`)."""
        self.confusion += confusion.sum(0)

    def compute(self) -> torch.Tensor:
        return self.confusion


def per_image_scores(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Foreground Dice and IoU of each image from its confusion matrix; 1.0 where a class is absent from
    both the image's target and its prediction.

    Args:
        confusion: int64 B×K×K per-image confusion matrices (rows: target, columns: prediction).

    Returns:
        float64 B×(K-1) Dice and IoU of classes 1..K-1, and bool (B,): whether the image has any pixel
        that is not ignored (a wholly ignored image has no score and is not counted).
    """
    return per_image_from_counts(*confusion_counts(confusion))


def per_image_from_counts(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`per_image_scores` from float64 B×K per-image counts of each class (TP, FP, FN)."""
    counted = (tp + fn).sum(1) > 0  # any labelled pixel (every one is a TP or an FN of its class)
    tp, fp, fn = tp[:, 1:], fp[:, 1:], fn[:, 1:]  # B×(K-1): the foreground
    union = tp + fp + fn
    one = torch.ones_like(union)
    # empty-empty is a perfect answer: scored 1, so each counted image scores every class
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), one)
    iou = torch.where(union > 0, tp / union.clamp_min(1), one)
    return dice, iou, counted


def per_image_miou(confusion: torch.Tensor) -> torch.Tensor:
    """float64 (B,): each image's mean IoU over the classes in its target or its prediction (background
    included), from int64 B×K×K per-image confusion matrices; 0 for an image without a labelled pixel."""
    return per_image_miou_from_counts(*confusion_counts(confusion))


def per_image_miou_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """:func:`per_image_miou` from float64 B×K per-image counts of each class (TP, FP, FN)."""
    union = tp + fp + fn
    present = (union > 0).double()
    iou = tp / union.clamp_min(1)
    return (iou * present).sum(1) / present.sum(1).clamp_min(1)


class PerImageScores(Metric):
    """Sums over images of each foreground class's per-image Dice and IoU, and the number of images,
    summed across processes (see :func:`per_image_scores`)."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        foreground = num_classes - 1
        self.add_state("dice", torch.zeros(foreground, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("iou", torch.zeros(foreground, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("miou", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, confusion: torch.Tensor) -> None:
        """Add int64 B×K×K per-image confusion matrices; wholly ignored images add nothing."""
        dice, iou, counted = per_image_scores(confusion)
        # multiplied by the mask rather than indexed by it: boolean indexing would wait for the GPU
        weight = counted.double()[:, None]
        self.dice += (dice * weight).sum(0)
        self.iou += (iou * weight).sum(0)
        self.miou += (per_image_miou(confusion) * counted.double()).sum()
        self.images += counted.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """float32 per-class means over images (K-1,) and their means; NaN when no image was counted."""
        dice = self.dice / self.images
        iou = self.iou / self.images
        return {
            "image_dice_per_class": dice.float(),
            "image_iou_per_class": iou.float(),
            "image_dice_fg": dice.mean().float(),
            "image_IoU_fg": iou.mean().float(),
            "image_mIoU": (self.miou / self.images).float(),
        }


def competition_dice_per_image(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The competition's Dice of each image from its confusion matrix: the Dice of the stacked foreground
    planes, 2·|P∩T| / (|P| + |T|) with P, T the (class ≥ 1, pixel) pairs predicted resp. labelled; 1.0 where
    both are empty.

    Args:
        confusion: int64 B×K×K per-image confusion matrices (rows: target, columns: prediction).

    Returns:
        float64 (B,) scores and bool (B,): whether the image has any pixel that is not ignored.
    """
    return competition_dice_from_counts(*confusion_counts(confusion))


def competition_dice_from_counts(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`competition_dice_per_image` from float64 B×K per-image counts of each class (TP, FP, FN)."""
    tp_fg = tp[:, 1:].sum(1)  # pixels with prediction == target ≥ 1
    pred_fg = (tp + fp)[:, 1:].sum(1)  # pixels predicted as any foreground class
    target_fg = (tp + fn)[:, 1:].sum(1)  # pixels whose target is any foreground class
    total = pred_fg + target_fg
    dice = torch.where(total > 0, 2 * tp_fg / total.clamp_min(1), torch.ones_like(total))
    return dice, (tp + fn).sum(1) > 0


class CompetitionDice(Metric):
    """Sum over images of the competition's per-image Dice and the number of images, summed across
    processes (see :func:`competition_dice_per_image`)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("dice", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, confusion: torch.Tensor) -> None:
        """Add int64 B×K×K per-image confusion matrices; wholly ignored images add nothing."""
        dice, counted = competition_dice_per_image(confusion)
        self.dice += (dice * counted.double()).sum()  # masked by multiplying: no GPU sync
        self.images += counted.sum()

    def compute(self) -> torch.Tensor:
        """float32 mean over the counted images; NaN when no image was counted."""
        return (self.dice / self.images).float()


class NamedSums(Metric):
    """Sums of named float64 vectors, summed across processes: each evaluation loss term's numerators and
    denominators over a split (:mod:`lightning_seg.losses.split_sums`), divided once at the end.

    A state is added for each name on its first update (the terms of a net are known only from its first
    output: an aux head, an image-label head); every process sees the same names.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, str] = {}  # state attribute → name ("aux/dice" → "sum_aux__dice")

    def update(self, sums: dict[str, torch.Tensor]) -> None:
        for name, value in sums.items():
            key = "sum_" + name.replace("/", "__")
            if key not in self.names:
                self.add_state(key, torch.zeros_like(value, dtype=torch.float64), dist_reduce_fx="sum")
                self.names[key] = name
            setattr(self, key, getattr(self, key) + value)

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, key) for key, name in self.names.items()}


def per_image_foreground_iou(pred: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Foreground IoU of each image of a binary task; 1.0 where both are empty (nothing to find, nothing found).

    A standalone helper (for one batch's scores); :class:`SegMetrics` accumulates the same per-image IoU
    from its per-image confusion matrices, skipping wholly ignored images (which score 1.0 here).

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


def image_counts(confusion: torch.Tensor) -> torch.Tensor:
    """int64 B×K×3: each image's (TP, FP, FN) per class, from int64 B×K×K per-image confusion matrices."""
    confusion = confusion.long()
    tp = confusion.diagonal(dim1=-2, dim2=-1)
    return torch.stack([tp, confusion.sum(-2) - tp, confusion.sum(-1) - tp], -1)


class PerImageCounts(Metric):
    """Every image's per-class (TP, FP, FN), kept in the order scored and concatenated across processes:
    what every metric of the stage is a function of, for its bootstrap intervals
    (:mod:`lightning_seg.metrics.intervals`). N×K×3 int64: 12 KiB per 100 images of 5 classes."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("counts", default=[], dist_reduce_fx="cat")

    def update(self, confusion: torch.Tensor) -> None:
        """Add int64 B×K×K per-image confusion matrices (wholly ignored images included: they count for
        nothing in any metric)."""
        self.counts.append(image_counts(confusion))

    def compute(self) -> torch.Tensor:
        """int64 N×K×3 (0×K×3 before any update)."""
        counts = self.counts
        if isinstance(counts, torch.Tensor):  # synced across processes: already one tensor
            return counts
        if not counts:
            return torch.zeros(0, self.num_classes, 3, dtype=torch.long)
        return torch.cat(counts)


class SegMetrics(nn.Module):
    """Pooled confusion-matrix metrics of one stage and per-image foreground Dice/IoU (see the module's
    docstring).

    Args:
        num_classes: classes including background (K ≥ 2).
        ignore_index: target label excluded from every metric.
        keep_per_image: also keep each image's per-class counts (:class:`PerImageCounts`, read by
            :meth:`image_counts`): test's, for bootstrap intervals and paired comparisons.
    """

    def __init__(self, num_classes: int, ignore_index: int, keep_per_image: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        self.per_image = PerImageScores(num_classes)
        self.competition_dice = CompetitionDice()
        self.image_counts = PerImageCounts(num_classes) if keep_per_image else None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate int64 B×H×W predictions against int64 B×H×W targets, on the device."""
        # one pass over the pixels feeds both the pooled and the per-image metrics
        confusion = per_image_confusion(pred, target, self.num_classes, self.ignore_index)
        self.confusion.update(confusion)
        self.per_image.update(confusion)
        self.competition_dice.update(confusion)
        if self.image_counts is not None:
            self.image_counts.update(confusion)

    def kept_counts(self) -> torch.Tensor | None:
        """int64 N×K×3 per-image (TP, FP, FN) of every image scored (synced across processes), or None when
        not kept."""
        return self.image_counts.compute() if self.image_counts is not None else None

    def compute(self) -> dict[str, torch.Tensor]:
        """Scores over everything accumulated (synced across processes).

        Returns float32 tensors: ``iou`` (K,), ``mIoU``, ``dice``, ``dice_fg``, ``acc`` (pooled, see
        :func:`scores_from_confusion`), ``image_dice_fg``, ``image_IoU_fg``, ``image_dice_per_class`` and
        ``image_iou_per_class`` (K-1,) (per image, see :class:`PerImageScores`), ``competition_dice`` (per
        image, see :func:`competition_dice_per_image`); int64 ``confusion`` (K×K);
        for two-class tasks also ``IoU_fg`` (pooled) and ``image_IoU`` (= ``image_IoU_fg``).
        """
        confusion = self.confusion.compute()
        scores = scores_from_confusion(confusion)
        scores["confusion"] = confusion
        scores.update(self.per_image.compute())
        scores["competition_dice"] = self.competition_dice.compute()
        if self.num_classes == 2:
            scores["IoU_fg"] = scores["iou"][1]
            scores["image_IoU"] = scores["image_IoU_fg"]
        return scores

    def reset(self) -> None:
        self.confusion.reset()
        self.per_image.reset()
        self.competition_dice.reset()
        if self.image_counts is not None:
            self.image_counts.reset()

    @property
    def updated(self) -> bool:
        return self.confusion.update_count > 0
