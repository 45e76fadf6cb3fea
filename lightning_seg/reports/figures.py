"""The figures of a run's ``plots/`` folder, built from plain data (lists, tensors), no trainer needed.

Each function returns a matplotlib :class:`~matplotlib.figure.Figure` (Agg, never a window: ``Figure`` is
made directly, not through ``pyplot``), or None when it has nothing to draw, so an empty plot is never
written. :func:`~lightning_seg.reports.publish.publish_figure` renders and publishes them. Figures are
small (``DPI`` 100, a few inches, never more than :data:`MAX_INCHES` a side whatever the number of classes)
and deterministic (fixed colours and order; no timestamps). Names (classes, images) are drawn literally
(:func:`~lightning_seg.reports.drawing.literal`: a ``$`` is not mathtext).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lightning_seg.reports.drawing import (
    class_legend,
    classes_shown,
    clear_classes,
    drawable_target,
    literal,
    overlay,
    palette_with_ignored,
    show_picture,
)
from lightning_seg.reports.palette import colourize, default_palette

DPI = 100
MAX_INCHES = 28.0
"""No side of a figure beyond this (2800 pixels at ``DPI``): with many classes the rows get thinner instead."""
MIN_FONT = 6.0
"""Points: the smallest class name drawn; where the names would need less, only one in n is named (the CSV
beside each figure names them all)."""
MAX_LEGEND_CURVES = 20
"""Threshold curves drawn with a legend at most; beyond, the legend would cover the panel."""


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, MAX_INCHES), min(height, MAX_INCHES)), dpi=DPI, layout="constrained")


@dataclass
class ClassAxis:
    """How K names fit along an axis: the tick labels (blank where thinned), their font size in points, and
    ``step``: every ``step``-th class is named (1: all)."""

    labels: list[str]
    fontsize: float
    step: int

    @property
    def note(self) -> str:
        """What an axis label adds when names were left out."""
        return f" (1 name in {self.step}; all in the CSV)" if self.step > 1 else ""


def class_axis(names: Sequence[str], inches: float) -> ClassAxis:
    """Fit ``names`` along an axis about ``inches`` long: all at up to 10 pt, else every n-th at
    :data:`MIN_FONT` so that labels never overlap."""
    pitch = 72 * inches / max(len(names), 1)  # points per class
    fontsize = min(10.0, 0.8 * pitch)
    step = 1 if fontsize >= MIN_FONT else math.ceil(MIN_FONT / (0.8 * pitch))
    labels = [literal(name) if i % step == 0 else "" for i, name in enumerate(names)]
    return ClassAxis(labels, max(fontsize, MIN_FONT), step)


def _bar_rows_height(k: int, per_row: float = 0.32, base: float = 1.2) -> float:
    """Inches of a figure of K horizontal bars: ``per_row`` each, capped at 20 (then the rows get thinner)."""
    return min(max(base + per_row * k, 2.5), 20.0)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def class_colours(num_classes: int) -> list[tuple[float, float, float]]:
    """The K mask colours of :func:`default_palette` as matplotlib RGB triples in [0, 1]."""
    return [tuple(c / 255 for c in row) for row in default_palette(num_classes).tolist()]


# ------------------------------------------------------------------------------------- training curves
LABEL_CURVES = ("label_f1", "label_acc", "label_mAP")
"""The image-level head's scores drawn in one panel (train solid, val dashed)."""


def curves_figure(
    train: Sequence[dict[str, float]],
    val: Sequence[dict[str, float]],
    monitor: str = "mIoU",
    mode: Literal["max", "min"] = "max",
) -> Any | None:
    """Loss terms, mIoU, the monitored score, the image-level head's scores and the learning rate against
    the epoch; train solid, val dashed. A panel without a number is left out (a history from before a score
    was kept shows what it has: val mIoU alone).

    Args:
        train: rows ``{"epoch": epochs done, "train/loss": ..., "train/loss/<term>": ..., "lr": ...,
            "lr/<group>": ..., "train/mIoU": ..., "train/<monitor>": ..., "train/label_f1": ...}``, one per
            training epoch.
        val: rows ``{"epoch": epochs done (fractional inside an epoch), "val/loss": ...,
            "val/loss/<term>": ..., "val/mIoU": ..., "val/<monitor>": ..., "val/label_f1": ...}``, one per
            validation.
        monitor: the score the checkpoint callback monitors, without its stage (``val/dice`` → "dice"):
            its best val value is marked; a panel of its own unless it is mIoU.
        mode: "max" or "min", the monitored score's better direction.
    """
    rows = [*train, *val]
    terms = sorted(
        {key.split("/", 2)[2] for row in rows for key in row if key.startswith(("train/loss/", "val/loss/"))}
    )
    losses = [("loss", "train/loss", "val/loss")] + [(t, f"train/loss/{t}", f"val/loss/{t}") for t in terms]
    has_loss = any(_finite(row.get(key)) for row in rows for _, *keys in losses for key in keys)

    def present(name: str) -> bool:
        return any(_finite(row.get(f"{split}/{name}")) for row in rows for split in ("train", "val"))

    scores = [name for name in dict.fromkeys(("mIoU", monitor)) if present(name)]
    labels = [name for name in LABEL_CURVES if present(name)]
    groups = sorted({key for row in train for key in row if key == "lr" or key.startswith("lr/")})
    wanted = [
        ("loss", has_loss),
        *((f"score:{name}", True) for name in scores),
        ("labels", labels),
        ("lr", groups),
    ]
    panels = [name for name, shown in wanted if shown]
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator

    figure = _figure(4.2 * len(panels), 3.8)
    axes = dict(zip(panels, figure.subplots(1, len(panels), squeeze=False)[0], strict=True))

    def series(rows: Sequence[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
        points = [(row["epoch"], row[key]) for row in rows if _finite(row.get(key))]
        return [x for x, _ in points], [y for _, y in points]

    def train_and_val(ax: Any, name: str, colour: str, width: float = 1.5, label: str | None = None) -> None:
        for rows, split, style in ((train, "train", "-"), (val, "val", "--")):
            x, y = series(rows, f"{split}/{name}")
            if x:
                shown = f"{literal(label or name)} ({split})"
                ax.plot(x, y, style, color=colour, lw=width, marker="o", ms=3, label=shown)

    if "loss" in axes:
        ax = axes["loss"]
        for i, (name, train_key, _) in enumerate(losses):
            # a term's train and val lines share a colour
            train_and_val(ax, train_key.split("/", 1)[1], f"C{i % 10}", 2.0 if name == "loss" else 1.2, name)
        ax.set_title("loss terms (train solid, val dashed)")
        ax.set_ylabel("loss")
        # below the axes: inside, it hides the curves it names
        ax.legend(fontsize="x-small", ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    for name in scores:
        ax = axes[f"score:{name}"]
        train_and_val(ax, name, "C0")
        x, y = series(val, f"val/{name}")
        better = mode if name == monitor else "max"
        if y:  # the best validation, as the checkpoint callback picks it (the first of equals)
            sign = -1.0 if better == "max" else 1.0
            best = min(range(len(y)), key=lambda i: (sign * y[i], i))
            ax.annotate(f"best {y[best]:.3f}", (x[best], y[best]), textcoords="offset points", xytext=(0, 6))
        values = series(train, f"train/{name}")[1] + y
        if all(0 <= v <= 1 for v in values):  # a weighted score may leave [0, 1]
            ax.set_ylim(0, 1.02)
        monitored = " (monitored)" if name == monitor else ""
        ax.set_title(f"{literal(name)}{monitored}: train solid, val dashed")
        ax.set_ylabel(literal(name))
        ax.legend(fontsize="x-small", loc="lower right")
    if "labels" in axes:
        ax = axes["labels"]
        for i, name in enumerate(labels):
            train_and_val(ax, name, f"C{i % 10}", 1.5, name.removeprefix("label_"))
        ax.set_title("image-level head (train solid, val dashed)")
        ax.set_ylabel("score")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize="x-small", ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    if "lr" in axes:
        ax = axes["lr"]
        values = []
        for i, key in enumerate(groups):
            x, y = series(train, key)
            values += y
            ax.plot(x, y, "-", marker="o", ms=3, color=f"C{i % 10}", label="group 0" if key == "lr" else key)
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_yscale("log")
        ax.set_title("learning rate (at each epoch's end)")
        ax.set_ylabel("lr")
        if len(groups) > 1:
            ax.legend(fontsize="x-small")
    for ax in axes.values():
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return figure


# ---------------------------------------------------------------------------------- per-class scores
def confusion_figure(confusion: torch.Tensor, class_names: Sequence[str], title: str) -> Any | None:
    """The row-normalised confusion matrix: each true class's pixels split over the predicted classes.

    Up to 15 classes each cell shows its share; beyond, the colours alone (the counts are in the CSV), and
    with many classes (150: ADE20K) only one name in n is written along each axis so that none overlap.

    Args:
        confusion: int64 K×K pixel counts (rows: target, columns: prediction).
        class_names: the K names.
        title: the figure's title (which split, which stage).
    """
    counts = confusion.detach().to("cpu", torch.float64)
    if counts.numel() == 0 or counts.sum() == 0:
        return None
    k = len(class_names)
    totals = counts.sum(1, keepdim=True)
    shares = torch.where(totals > 0, counts / totals.clamp_min(1), torch.nan)  # a class with no pixel: blank
    side = min(max(3.0 + 0.45 * k, 4.5), 18.0)
    figure = _figure(side + 1.2, side)
    ax = figure.subplots()
    from matplotlib import colormaps

    cmap = colormaps["Blues"].with_extremes(bad="0.85")
    image = ax.imshow(shares.numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    absent = (totals[:, 0] == 0).tolist()
    # about 3 inches of the side go to the names, the title and the axis labels
    columns = class_axis(class_names, side - 3.0)
    rows = class_axis(
        [f"{n} (no pixel)" if a else n for n, a in zip(class_names, absent, strict=True)], side - 3.0
    )
    rotation, align = (90, "center") if k > 30 else (45, "right") if k > 4 else (0, "center")
    ax.set_xticks(range(k), columns.labels, rotation=rotation, ha=align, fontsize=columns.fontsize)
    ax.set_yticks(range(k), rows.labels, fontsize=rows.fontsize)
    ax.set_xlabel("predicted class" + columns.note)
    ax.set_ylabel("true class" + rows.note)
    if k <= 15:  # numbers stay readable up to about 15 classes
        for (row, col), value in zip(
            [(r, c) for r in range(k) for c in range(k)], shares.flatten().tolist(), strict=True
        ):
            if math.isfinite(value):
                colour = "white" if value > 0.5 else "black"
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize="x-small", color=colour)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's pixels")
    ax.set_title(title)
    return figure


def _class_bars(ax: Any, values: Sequence[float | None], names: ClassAxis, score: str) -> None:
    """K horizontal bars of one per-class score in [0, 1] on ``ax``, its mean over the classes with a value
    dashed; a class without a value (None) is named, without a bar."""
    k = len(values)
    small = min(names.fontsize, 8.0)  # the numbers beside the bars: no larger than x-small
    rows = range(k)
    bars = [v if _finite(v) else 0.0 for v in values]
    ax.barh(rows, bars, color=class_colours(k), edgecolor="0.3", linewidth=0.5 if k <= 60 else 0.0)
    for row, value in zip(rows, values, strict=True):
        if row % names.step:
            continue  # rows too thin for a number each: the CSV has them
        if _finite(value):
            ax.text(min(value, 0.88) + 0.01, row, f"{value:.3f}", va="center", fontsize=small)
        else:
            ax.text(0.01, row, "absent from the split", va="center", fontsize=small, style="italic")
    present = [v for v in values if _finite(v)]
    if present:
        mean = sum(present) / len(present)
        label = f"{'mIoU' if score == 'IoU' else 'mean ' + score} {mean:.3f} ({len(present)} classes)"
        ax.axvline(mean, color="0.3", ls="--", lw=1, label=label)
        ax.legend(fontsize="x-small", loc="lower right")
    ax.set_xlim(0, 1)
    ax.set_xlabel(score + names.note)
    ax.grid(axis="x", alpha=0.3)


def iou_figure(
    class_names: Sequence[str],
    iou: Sequence[float | None],
    title: str,
    dice: Sequence[float | None] | None = None,
) -> Any | None:
    """Per-class IoU as horizontal bars, and per-class Dice beside it (a second panel, the same rows) when
    given; a class absent from the split (None) is named, without a bar.

    Args:
        class_names: the K names.
        iou: the K IoU values in [0, 1], None for a class absent from targets and predictions.
        title: the figure's title.
        dice: the K Dice values in [0, 1] (None where absent), or None for the IoU alone.
    """
    if not any(_finite(v) for v in iou):
        return None
    k = len(class_names)
    height = _bar_rows_height(k)
    panels = [("IoU", iou)] + ([("Dice", dice)] if dice is not None else [])
    figure = _figure(6.0 + 4.5 * (len(panels) - 1), height)
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    names = class_axis(class_names, height - 1.2)
    for ax, (score, values) in zip(axes, panels, strict=True):
        _class_bars(ax, values, names, score)
    axes[0].set_yticks(list(range(k)), names.labels, fontsize=names.fontsize)
    axes[0].invert_yaxis()  # class 0 on top, as in the tables (the panels share the axis)
    if len(panels) == 1:
        axes[0].set_title(title)
    else:
        figure.suptitle(title)
    return figure


def label_head_figure(record: dict[str, Any] | None, title: str) -> Any | None:
    """Precision and recall of each image-level label (a net with a class head; None without one).

    Args:
        record: ``pl_module.results.get(prefix).label_scores``: ``names``, ``precision``, ``recall`` (None where
            undefined), ``f1``, ``acc``.
    """
    if not record or not any(_finite(v) for v in [*record["precision"], *record["recall"]]):
        return None
    names = record["names"]
    height = _bar_rows_height(len(names), per_row=0.4, base=1.4)
    figure = _figure(6.0, height)
    ax = figure.subplots()
    axis = class_axis(names, height - 1.4)
    height = 0.4
    for offset, kind, colour in ((-height / 2, "precision", "C0"), (height / 2, "recall", "C1")):
        values = [v if _finite(v) else 0.0 for v in record[kind]]
        ax.barh([i + offset for i in range(len(names))], values, height=height, color=colour, label=kind)
    ax.set_yticks(range(len(names)), axis.labels, fontsize=axis.fontsize)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (a missing bar: undefined, no prediction or no image of the label)" + axis.note)
    ax.set_title(f"{title} (F1 {record['f1']:.3f}, acc {record['acc']:.3f})")
    ax.legend(fontsize="x-small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return figure


# ----------------------------------------------------------------------------------------------- data
def label_histogram_figure(
    class_names: Sequence[str],
    pixel_share: Sequence[float],
    image_share: Sequence[float] | None,
    num_images: int,
    split: str = "train",
) -> Any | None:
    """The share of labelled pixels per class and the share of images containing each class.

    Args:
        class_names: the K names.
        pixel_share: K shares of the labelled pixels (summing to 1).
        image_share: K shares of the images in which the class has a pixel, or None.
        num_images: images counted.
    """
    if not any(v > 0 for v in pixel_share):
        return None
    k = len(class_names)
    panels = 2 if image_share is not None else 1
    height = _bar_rows_height(k, base=1.4)
    figure = _figure(4.2 * panels + 1.0, height)
    axes = figure.subplots(1, panels, squeeze=False, sharey=True)[0]
    names = class_axis(class_names, height - 1.4)
    small = min(names.fontsize, 8.0)
    colours = class_colours(k)
    shown = [(axes[0], [100 * v for v in pixel_share], f"share of labelled {split} pixels (%)")]
    if image_share is not None:
        shown.append(
            (
                axes[1],
                [100 * v for v in image_share],
                f"{split} images containing the class (% of {num_images})",
            )
        )
    for ax, values, label in shown:
        ax.barh(range(k), values, color=colours, edgecolor="0.3", linewidth=0.5 if k <= 60 else 0.0)
        for row, value in enumerate(values):
            if row % names.step == 0:  # rows too thin for a number each: the CSV has them
                ax.text(value, row, f" {value:.1f}", va="center", fontsize=small)
        ax.set_xlabel(label + names.note)
        ax.set_xlim(0, max(max(values) * 1.18, 1.0))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(k), names.labels, fontsize=names.fontsize)
    axes[0].invert_yaxis()
    figure.suptitle(f"labels of the {split} split")
    return figure


# ------------------------------------------------------------------------------------ best and worst
@dataclass
class RankedImage:
    """One evaluated image kept for the best/worst figure, on the host.

    Attributes:
        name: the image's name.
        score: its per-image score (mean IoU over the classes in its target or prediction).
        image: uint8 3×H×W, as stored.
        target: integer H×W true classes (may hold ``ignore_index``), in the smallest type holding them
            (uint8 up to 255 classes: see :func:`~lightning_seg.callbacks.image_ranking.compact_class_map`).
        prediction: integer H×W final predicted classes, the same type.
    """

    name: str
    score: float
    image: torch.Tensor
    target: torch.Tensor
    prediction: torch.Tensor


def best_worst_figure(
    worst: Sequence[RankedImage],
    best: Sequence[RankedImage],
    class_names: Sequence[str],
    ignore_index: int,
    split: str = "test",
) -> Any | None:
    """Rows of image | target | prediction | overlay (the prediction over the image), the worst images first,
    then the best, with a legend of the classes shown (only those: with 150 classes, not 150 entries). Many
    rows make the cells smaller, not the figure taller than :data:`MAX_INCHES`.

    Args:
        worst: the worst images, worst first.
        best: the best images, best first.
        class_names: the K names (the palette is :func:`default_palette` of K).
        ignore_index: the targets' ignored value (drawn white).
    """
    rows = [(f"worst {i + 1}", item) for i, item in enumerate(worst)]
    rows += [(f"best {i + 1}", item) for i, item in enumerate(best)]
    if not rows:
        return None
    k = len(class_names)
    palette = default_palette(k)
    with_ignored = palette_with_ignored(k)
    clear = clear_classes(class_names)
    columns = ("image", "target", "prediction", "overlay (prediction)")
    maps = [
        (drawable_target(item.target, k, ignore_index), item.prediction.long().clamp(0, k - 1))
        for _, item in rows
    ]
    shown, ignored = classes_shown([t for t, _ in maps], [p for _, p in maps], k)
    handles = class_legend(class_names, shown, ignored)
    # the legend's columns as wide as its longest name (about 0.07 inch a character at its font size)
    longest = max((len(str(handle.get_label())) for handle in handles), default=1)
    width = 2.3 * len(columns) + 0.6
    ncols = max(1, min(len(handles), int(width // (0.45 + 0.07 * longest))))
    legend_height = 0.25 * math.ceil(len(handles) / ncols) + 0.2
    cell = min(2.2, (MAX_INCHES - 0.9 - legend_height) / len(rows))
    figure = _figure(width, cell * len(rows) + 0.9 + legend_height)  # the width stays: the legend fits it
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, ((label, item), (target, prediction)) in enumerate(zip(rows, maps, strict=True)):
        pictures = (
            item.image,
            colourize(target, with_ignored),
            colourize(prediction, palette),
            overlay(item.image, prediction, palette, clear=clear),
        )
        for c, picture in enumerate(pictures):
            show_picture(axes[r, c], picture, columns[c] if r == 0 else None)
        axes[r, 0].set_ylabel(f"{label}\n{literal(item.name)}\nmIoU {item.score:.3f}", fontsize="x-small")
    fontsize = "small" if len(handles) <= 24 else "x-small"
    figure.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=fontsize)
    figure.suptitle(f"{split}: worst and best images by per-image mIoU (final class maps, original size)")
    return figure


# ------------------------------------------------------------------------ a binary head's PR curve
def precision_recall_figure(
    curve: dict[str, Any], final: tuple[float, float] | None = None, title: str = "foreground pixels"
) -> Any | None:
    """Precision against recall of a one-channel head's foreground decision ``p >= t`` over a grid of
    thresholds, the point at the threshold in use marked, and where the final class maps landed.

    Args:
        curve: :meth:`~lightning_seg.task.evaluation.EvaluationPath.foreground_curve`'s record:
            ``thresholds`` (ascending), ``precision`` and ``recall`` (None where undefined),
            ``average_precision``, ``positives``, ``pixels``, ``threshold``, ``threshold_source``.
        final: (recall, precision) of the final class maps (after every post-processing step), or None.
        title: the figure's title (the AP is added to it).
    """
    points = [
        (r, p) for r, p in zip(curve["recall"], curve["precision"], strict=True) if _finite(r) and _finite(p)
    ]
    if not points or not curve.get("positives"):
        return None
    figure = _figure(5.6, 4.8)
    ax = figure.subplots()
    # from the highest threshold down: recall grows, as the table reads bottom up
    points.reverse()
    # a step curve: the area under it is the average precision (each recall gained at its precision)
    recall_points, precision_points = [r for r, _ in points], [p for _, p in points]
    ax.plot(recall_points, precision_points, color="C0", lw=1.5, drawstyle="steps-pre", label="p ≥ t")
    prevalence = curve["positives"] / max(curve["pixels"], 1)
    ax.axhline(prevalence, color="0.5", ls=":", lw=1, label=f"foreground share {prevalence:.3f}")
    thresholds = curve["thresholds"]
    at = min(range(len(thresholds)), key=lambda j: abs(thresholds[j] - curve["threshold"]))
    recall, precision = curve["recall"][at], curve["precision"][at]
    if _finite(recall) and _finite(precision):
        label = f"t = {curve['threshold']:.3f} ({curve['threshold_source']})"
        ax.plot([recall], [precision], "o", color="C1", ms=7, mec="black", mew=0.6, label=label)
    if final is not None:
        ax.plot([final[0]], [final[1]], "s", color="C2", ms=6, mec="black", mew=0.6, label="final class maps")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ap = curve.get("average_precision")
    ap_text = f"AP {ap:.3f}" if _finite(ap) else "AP undefined"
    ax.set_title(f"{literal(title)}: {ap_text} ({curve['pixels']} pixels)")
    ax.legend(fontsize="x-small", loc="lower left")
    ax.grid(alpha=0.3)
    return figure


# ------------------------------------------------------------------------------------ tune's curves
@dataclass
class ThresholdPanel:
    """One family of threshold curves (the mask classes, or the labels of an image-level head).

    Attributes:
        title: the panel's title.
        names: one name per curve.
        scores: per name, the score at each threshold of ``grid`` (None where undefined).
        chosen: per name, the chosen threshold (None: untuned, no curve drawn).
        metric: the score's name (Dice, IoU, F1).
    """

    title: str
    names: Sequence[str]
    scores: Sequence[Sequence[float | None]]
    chosen: Sequence[float | None]
    metric: str


def threshold_curves_figure(grid: Sequence[float], panels: Sequence[ThresholdPanel]) -> Any | None:
    """Per name, the one-vs-rest score against the threshold, the chosen threshold marked with a dot and
    the default 0.5 dashed. Panels without a tuned name are left out; a panel of more than
    :data:`MAX_LEGEND_CURVES` tuned names has no legend (its title says so: the thresholds are in the
    command's ``summary.json``)."""
    panels = [p for p in panels if any(t is not None for t in p.chosen)]
    if not panels:
        return None
    figure = _figure(5.6 * len(panels), 4.2)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        colours = class_colours(len(panel.names))
        for i, (name, scores, chosen) in enumerate(zip(panel.names, panel.scores, panel.chosen, strict=True)):
            if chosen is None:
                continue
            colour = colours[i] if len(panel.names) > 1 else "C0"
            points = [(t, s) for t, s in zip(grid, scores, strict=True) if _finite(s)]
            ax.plot(
                [t for t, _ in points],
                [s for _, s in points],
                color=colour,
                lw=1.3,
                label=f"{literal(name)} (t={chosen:.2f})",
            )
            at = min(range(len(grid)), key=lambda j: abs(grid[j] - chosen))
            if _finite(scores[at]):
                ax.plot([chosen], [scores[at]], "o", color=colour, ms=6, mec="black", mew=0.6)
        ax.axvline(0.5, color="0.4", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("probability threshold (dashed: 0.5; dot: chosen)")
        ax.set_ylabel(f"one-vs-rest {panel.metric}")
        ax.grid(alpha=0.3)
        tuned = sum(t is not None for t in panel.chosen)
        if tuned <= MAX_LEGEND_CURVES:
            ax.set_title(literal(panel.title))
            ax.legend(fontsize="x-small", ncols=2 if tuned > 8 else 1)
        else:  # a legend of 150 names would hide the curves: the colours are the class palette's
            ax.set_title(f"{literal(panel.title)} ({tuned} curves; thresholds in summary.json)")
    return figure


def reliability_figure(
    reliability: torch.Tensor, ece: float | None, title: str = "test pixels"
) -> Any | None:
    """The top-label reliability diagram: each confidence bin's accuracy against its mean confidence (the
    diagonal is calibration), bar width the bin, and the share of pixels per bin below.

    Args:
        reliability: float64 bins×3 (pixels, mean confidence, accuracy; NaN for an empty bin), as
            :class:`~lightning_seg.metrics.calibration.CalibrationBins` computes it.
        ece: the top-label ECE, for the title.
        title: the figure's title.
    """
    count, confidence, accuracy = (column.tolist() for column in reliability.unbind(1))
    total = sum(count)
    if not total:
        return None
    bins = len(count)
    edges = [b / bins for b in range(bins)]
    figure = _figure(5.6, 5.6)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    shown = [(e, a, c) for e, a, c in zip(edges, accuracy, confidence, strict=True) if _finite(a)]
    top.bar(
        [e for e, _, _ in shown],
        [a for _, a, _ in shown],
        width=1 / bins,
        align="edge",
        color="C0",
        edgecolor="black",
        lw=0.4,
        label="accuracy",
    )
    top.plot(
        [c for _, _, c in shown], [a for _, a, _ in shown], "o", color="C1", ms=3, label="mean confidence"
    )
    top.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="calibrated")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    ece_text = f", ECE {ece:.4f}" if ece is not None and _finite(ece) else ""
    top.set_title(f"reliability: {title}{ece_text}")
    bottom.bar(
        edges,
        [c / total for c in count],
        width=1 / bins,
        align="edge",
        color="0.6",
        edgecolor="black",
        lw=0.4,
    )
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (highest class probability)")
    bottom.set_ylabel("share of pixels")
    return figure
