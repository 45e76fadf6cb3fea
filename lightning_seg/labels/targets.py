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

from collections.abc import Sequence
from typing import Literal

import torch
from torch.nn import functional as F

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
