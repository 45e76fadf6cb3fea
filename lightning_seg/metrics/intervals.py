"""How sure a test number is: percentile bootstrap intervals over images, and paired differences between two
models scored on the same images.

Every segmentation metric of a stage is a function of each image's per-class counts (TP, FP, FN of each
class; :func:`~lightning_seg.metrics.segmentation.image_counts`), so resampling the images (with replacement, N of N) and recomputing the metric
from the resampled counts gives its bootstrap distribution. All resamples are computed at once: a resample is a
row of image multiplicities ``W`` (R×N), pooled counts are ``W @ counts``, per-image means are weighted means.
Written here because torchmetrics' ``BootStrapper`` re-runs a metric's ``update`` per resample on the batches
(it resamples within batches, not the evaluation's images), and scipy's ``bootstrap`` would recompute each
statistic in a Python loop; the rule itself (percentile interval, images as the unit) is the textbook one.

A metric's interval is NaN-aware: a resample in which a class never occurs gives no IoU for it, and the
interval of a class's IoU is taken over the resamples that have one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lightning_seg.metrics.segmentation import (
    competition_dice_from_counts,
    per_image_from_counts,
    per_image_miou_from_counts,
)

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0


def resample_weights(images: int, resamples: int, seed: int) -> torch.Tensor:
    """float64 R×N: how often each of N images is drawn in each of R resamples (N draws with replacement),
    from a seeded generator: the same seed gives the same resamples (and pairs two models' draws)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(images, (resamples, images), generator=generator)
    weights = torch.zeros(resamples, images, dtype=torch.float64)
    return weights.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))


def _weighted_mean(weights: torch.Tensor, values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """R weighted means of N values over the counted images (NaN where a resample counts none)."""
    w = weights * counted.double()
    total = w.sum(1)
    return torch.where(total > 0, (w @ values.double()) / total.clamp_min(1), torch.nan)


def scores_of_counts(
    weights: torch.Tensor, counts: torch.Tensor, class_names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Every test metric of :class:`~lightning_seg.metrics.SegMetrics` for each resample.

    Args:
        weights: float64 R×N image multiplicities (a row of ones: the evaluation itself).
        counts: int64 N×K×3 per-image (TP, FP, FN) per class.
        class_names: the K classes (for ``IoU/<class>`` and ``Dice/<class>``).

    Returns:
        float64 (R,) per metric name, named as the stage logs them without the stage (``mIoU``, ``dice``,
        ``dice_fg``, ``acc``, ``image_dice_fg``, ``image_IoU_fg``, ``image_mIoU``, ``competition_dice``,
        ``IoU/<class>``, ``Dice/<class>``); NaN where a resample leaves a metric undefined.
    """
    c = counts.double()
    pooled = torch.einsum("rn,nkc->rkc", weights, c)  # R×K×3
    tp, fp, fn = pooled.unbind(-1)
    union = tp + fp + fn
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.nan)
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.nan)
    out = {
        "mIoU": iou.nanmean(1),
        "dice": dice.nanmean(1),
        "dice_fg": dice[:, 1:].nanmean(1),
        "acc": tp.sum(1) / (tp + fn).sum(1).clamp_min(1),
    }
    image_tp, image_fp, image_fn = c.unbind(-1)
    image_dice, image_iou, counted = per_image_from_counts(image_tp, image_fp, image_fn)
    out["image_dice_fg"] = _weighted_mean(weights, image_dice.mean(1), counted)
    out["image_IoU_fg"] = _weighted_mean(weights, image_iou.mean(1), counted)
    out["image_mIoU"] = _weighted_mean(
        weights, per_image_miou_from_counts(image_tp, image_fp, image_fn), counted
    )
    competition, counted = competition_dice_from_counts(image_tp, image_fp, image_fn)
    out["competition_dice"] = _weighted_mean(weights, competition, counted)
    for index, name in enumerate(class_names):
        out[f"IoU/{name}"] = iou[:, index]
        out[f"Dice/{name}"] = dice[:, index]
    return out


def percentile_interval(values: torch.Tensor, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """The (lower, upper) percentile interval of float (R,) resampled values, NaNs left out; None when
    fewer than 10 resamples are defined."""
    finite = values[~values.isnan()]
    if finite.numel() < 10:
        return None
    tail = (1 - level) / 2
    lower, upper = torch.quantile(finite, torch.tensor([tail, 1 - tail], dtype=finite.dtype)).tolist()
    return float(lower), float(upper)


Scorer = Callable[[torch.Tensor], dict[str, torch.Tensor]]
"""Resample weights R×N → float64 (R,) per metric name."""


def bootstrap_intervals(
    scorer: Scorer,
    images: int,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
    score: dict[str, float] | None = None,
) -> dict[str, list[float] | None]:
    """Each metric's percentile interval over ``resamples`` seeded resamples of ``images`` images.

    ``score`` (the model's composite score weights, metric names without the stage) adds the interval of
    ``score`` computed within each resample, when every metric it names is resampled."""
    weights = resample_weights(images, resamples, seed)
    values = scorer(weights)
    if score and all(name in values for name in score):
        values["score"] = sum(weight * values[name] for name, weight in score.items())
    out: dict[str, list[float] | None] = {}
    for name, resampled in values.items():
        interval = percentile_interval(resampled, level)
        out[name] = list(interval) if interval is not None else None
    return out


def paired_differences(
    scorer_a: Scorer,
    scorer_b: Scorer,
    images: int,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> dict[str, dict[str, float | list[float] | None]]:
    """B − A of every metric both give, on the same images: the difference on the evaluation itself, its
    percentile interval over resamples that draw the same images for both models (a paired bootstrap), and
    the share of resamples in which B is not better (a one-sided bootstrap p-value for "B > A")."""
    ones = torch.ones(1, images, dtype=torch.float64)
    a_point, b_point = scorer_a(ones), scorer_b(ones)
    weights = resample_weights(images, resamples, seed)
    a, b = scorer_a(weights), scorer_b(weights)
    out: dict[str, dict[str, float | list[float] | None]] = {}
    for name in a:
        if name not in b:
            continue
        difference = b[name] - a[name]
        point = float(b_point[name][0] - a_point[name][0])
        interval = percentile_interval(difference, level)
        defined = difference[~difference.isnan()]
        out[name] = {
            "a": float(a_point[name][0]),
            "b": float(b_point[name][0]),
            "difference": point,
            "interval": list(interval) if interval is not None else None,
            "p_not_better": float((defined <= 0).double().mean()) if defined.numel() else None,
        }
    return out
