"""The image-level class head: what its labels mean (:mod:`.targets`), the task a model holds
(:class:`LabelTask`), its metrics (:mod:`.metrics`) and the loss's label weights (:mod:`.weights`)."""

from lightning_seg.labels.metrics import MultiLabelMetrics, SingleLabelMetrics, plain_scores
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
from lightning_seg.labels.task import LabelTask
from lightning_seg.labels.weights import label_counts, label_weight_source, rule_weights

__all__ = [
    "DEFAULT_THRESHOLD",
    "NO_LABEL",
    "LabelMode",
    "LabelTask",
    "MultiLabelMetrics",
    "SingleLabelMetrics",
    "classes_of_labels",
    "dominant_class",
    "label_class_map",
    "label_counts",
    "label_decisions",
    "label_probabilities",
    "label_weight_source",
    "plain_scores",
    "presence_labels",
    "resolve_label_mode",
    "rule_weights",
]
