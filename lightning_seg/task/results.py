"""``StageResults``: what a stage of the model leaves for the callbacks that record a run, declared in one
place. The module fills one per stage at the epoch's end; ``RunSummary`` and ``RunPlots`` read them
(``pl_module.results.get("test")``), beside the metrics it logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class StageResults:
    """One stage's results beyond its logged metrics.

    Attributes:
        scored_at: "original size" (against each mask as stored) or "batch size" (the masks resized for
            batching); None before a batch was scored.
        confusion: int64 K×K confusion matrix of the stage's last epoch, on the host (rows: targets).
        label_scores: the image-level head's scores as plain data (see
            :func:`lightning_seg.labels.plain_scores`), when the net has a head.
        table: the stage table (raw; + inference; + each post-processing step), for stages scored through
            the whole path (``test``).
        notes: lines a reader of the numbers must see beside them (e.g. a test split that is the val split).
        intervals: the bootstrap intervals of the stage's metrics over images (test; see
            :mod:`lightning_seg.metrics.intervals`): ``{"resamples", "seed", "level", "unit", "metrics":
            {name: [low, high] | None}}``.
        image_names: the images scored, in the order of ``image_counts`` (test, one process only).
        image_counts: int64 N×K×3 per-image (TP, FP, FN) per class of the final class maps (test), on the host.
        reliability: float64 bins×3 top-label reliability curve (pixels, mean confidence, accuracy) of the
            probabilities test's decision read (see :class:`~lightning_seg.metrics.calibration.CalibrationBins`).
    """

    scored_at: str | None = None
    confusion: torch.Tensor | None = None
    label_scores: dict[str, Any] | None = None
    table: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    intervals: dict[str, Any] | None = None
    reliability: torch.Tensor | None = None
    image_names: list[str] = field(default_factory=list)
    image_counts: torch.Tensor | None = None


class TaskResults:
    """The :class:`StageResults` of every stage a module ran, by stage name ("train", "val", "test")."""

    def __init__(self) -> None:
        self._stages: dict[str, StageResults] = {}

    def stage(self, name: str) -> StageResults:
        """The results of ``name``, made empty on first use (the module's writer side)."""
        return self._stages.setdefault(name, StageResults())

    def reset(self, name: str) -> None:
        """Start ``name`` afresh (a second test in one process records its own images)."""
        self._stages[name] = StageResults()

    def get(self, name: str) -> StageResults:
        """The results of ``name`` (empty when the stage has not run): the readers' side."""
        return self._stages.get(name) or StageResults()
