"""``tune``'s threshold curves as a figure of the command's record folder (and its loggers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from lightning_seg.reports import figures
from lightning_seg.reports.publish import publish_figure


def publish_threshold_curves(trainer: L.Trainer, record: dict[str, Any], folder: Path) -> list[str]:
    """``tune``'s threshold curves (``record["curves"]``: per class, and per label of a multi-label head,
    the one-vs-rest score at each threshold of the grid) with the chosen thresholds, as
    ``folder/threshold_curves.png``; the files written (none without a tuned class)."""
    curves = record.get("curves")
    if not curves:
        return []
    metric = {"dice": "Dice", "iou": "IoU"}.get(record["metric"], record["metric"])
    panels = [
        figures.ThresholdPanel(
            f"{record['split']}: mask classes",
            record["class_names"],
            curves["classes"],
            record["classes"]["thresholds"],
            metric,
        )
    ]
    if "labels" in curves and "labels" in record:
        labels = record["labels"]
        panels.append(
            figures.ThresholdPanel(
                f"{record['split']}: image labels",
                labels["names"],
                curves["labels"],
                labels["thresholds"],
                "F1",
            )
        )
    figure = figures.threshold_curves_figure(curves["thresholds"], panels)
    if figure is None:
        return []
    return [str(publish_figure(trainer, "plots/threshold_curves", figure, folder / "threshold_curves.png"))]
