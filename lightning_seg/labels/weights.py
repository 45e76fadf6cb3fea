"""Label weights of the loss from the training split's label counts (the pixel rules of
:meth:`~lightning_seg.data.stats.ClassStatistics.weights`, with images in place of pixels)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from lightning_seg.data.stats import DEFAULT_BETA, ClassStatistics
from lightning_seg.errors import ConfigError

if TYPE_CHECKING:
    from lightning_seg.labels.task import LabelTask


def rule_weights(counts: torch.Tensor, rule: str, beta: float = DEFAULT_BETA) -> torch.Tensor:
    """float32 (L,) label weights from each label's image count, by the pixel rules of
    :meth:`~lightning_seg.data.stats.ClassStatistics.weights` with images in place of pixels: a label's
    frequency is its share of the label counts (every image "contains" every label, so median-frequency
    balancing is ``median(p) / p_l``); labels that never occur get 0."""
    counts = counts.to(torch.int64)
    total = torch.full_like(counts, int(counts.sum()))
    stats = ClassStatistics(counts, total, counts, ignored_pixels=0, num_images=int(counts.sum()))
    return stats.weights(rule, beta)  # type: ignore[arg-type]


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


def label_weight_source(datamodule: Any, task: LabelTask) -> Callable[[str, float], torch.Tensor] | None:
    """What resolves a ``loss.label_class_weights`` rule: the rule → float32 (L,) weights from the training
    split's label counts; None without a data module that has them."""
    if datamodule is None or not hasattr(datamodule, "class_statistics"):
        return None

    def weights(rule: str, beta: float = DEFAULT_BETA) -> torch.Tensor:
        counts = label_counts(datamodule, task)
        if counts is None:
            raise ConfigError(
                f"loss.label_class_weights={rule!r} needs data labels or model.label_mode multi "
                "(dominant-class labels are not counted)"
            )
        return rule_weights(counts, rule, beta)

    return weights
