"""Segmentation metrics from per-image confusion matrices (:mod:`.segmentation`)."""

from lightning_seg.metrics.segmentation import (
    CompetitionDice,
    ConfusionMatrix,
    NamedSums,
    PerImageScores,
    SegMetrics,
    class_iou,
    competition_dice_per_image,
    confusion_counts,
    per_image_confusion,
    per_image_foreground_iou,
    per_image_scores,
    scores_from_confusion,
)

__all__ = [
    "CompetitionDice",
    "ConfusionMatrix",
    "NamedSums",
    "PerImageScores",
    "SegMetrics",
    "class_iou",
    "competition_dice_per_image",
    "confusion_counts",
    "per_image_confusion",
    "per_image_foreground_iou",
    "per_image_scores",
    "scores_from_confusion",
]
