"""``LabelTask``: what a model's image-level head means (single- or multi-label), its targets, probabilities and
decisions, and the metrics it is scored with (see :mod:`lightning_seg.labels.targets`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric

from lightning_seg.errors import ConfigError
from lightning_seg.labels.metrics import MultiLabelMetrics, SingleLabelMetrics
from lightning_seg.labels.targets import (
    DEFAULT_THRESHOLD,
    NO_LABEL,
    LabelMode,
    classes_of_labels,
    dominant_class,
    label_class_map,
    label_decisions,
    label_probabilities,
    presence_labels,
    resolve_label_mode,
)


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
        relative: float | None = None,
    ) -> None:
        super().__init__()
        if relative is not None and (mode != "multi" or not 0 < relative <= 1):
            raise ConfigError(
                f"model.label_relative: a share in (0, 1] of the image's highest label probability, for "
                f"multi-label heads; got {relative} with a {mode}-label head"
            )
        self.relative = relative
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

    @classmethod
    def of_model(
        cls,
        mode: LabelMode | None,
        data_label_names: Sequence[str] | None,
        class_names: Sequence[str],
        thresholds: Sequence[float] | None,
        ignore_index: int,
        label_classes: Sequence[str | None] | None = None,
        relative: float | None = None,
    ) -> LabelTask:
        """The task of a model's head from its config: ``mode`` resolved (:func:`resolve_label_mode`), and
        without data labels the labels derived from the masks (multi: the foreground classes; single: every
        class)."""
        resolved = resolve_label_mode(mode, data_label_names)
        derived = not data_label_names
        if derived:
            names = list(class_names[1:]) if resolved == "multi" else list(class_names)
        else:
            names = list(data_label_names or ())
        return cls(
            resolved,
            names,
            class_names,
            derived,
            thresholds,
            len(class_names),
            ignore_index,
            label_classes=label_classes or None,
            relative=relative,
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
        """float B×L probabilities → bool B×L: :func:`label_decisions` with ``thresholds`` (None: the
        configured ones); with the relative rule, ``p >= relative · max p`` per image instead (the label
        thresholds, tuned or not, are then not used)."""
        if self.relative is not None:
            return probabilities >= self.relative * probabilities.amax(1, keepdim=True)
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
