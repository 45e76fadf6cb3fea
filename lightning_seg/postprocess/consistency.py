"""``LabelConsistency``: a class map that agrees with the image-level head.

Pixels of a class that the image-level head says is absent from the image take the most probable class
that it says is present, or the background (which is always allowed). Vectorised: one masked argmax per
image. The head's decision comes from its own probabilities (with tuned label thresholds when the
thresholds file has them); ``labels: <file.csv>`` reads them from a file instead (another model's, e.g. the
image classifier's ``predict`` output ``labels.csv``, see :class:`~lightning_seg.labels.table.LabelTable`),
so a net without a head can be corrected by a classifier; ``oracle: true`` uses the true labels, an
ablation that shows the ceiling of this step and is labelled "oracle" wherever its results appear.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_seg.errors import ConfigError
from lightning_seg.labels.table import LabelTable
from lightning_seg.postprocess.base import Prediction, Step
from lightning_seg.utils.class_argmax import class_argmax


class LabelConsistency(Step):
    """Remove the classes an image-level head says are absent (see the module's docstring).

    Args:
        oracle: use the true image labels (from the masks) instead of the head's: an ablation only.
        labels: a CSV of 0/1 image labels by image name (:class:`~lightning_seg.labels.table.LabelTable`)
            to use instead of the head's; None: the head's.
        class_names: the model's K classes (set by :meth:`for_classes`; the file's columns name them).
    """

    acts_on = "classes"
    name = "consistency"

    def __init__(
        self, oracle: bool = False, labels: str | None = None, class_names: list[str] | None = None
    ) -> None:
        if oracle and labels is not None:
            raise ConfigError(
                "model.postprocess LabelConsistency: oracle: true and labels: <file> both name the labels; keep one"
            )
        self.oracle = oracle
        self.labels = labels
        # read once, when the model's classes are known (the file's columns are checked against them)
        self.table = (
            LabelTable(labels, class_names) if labels is not None and class_names is not None else None
        )

    def for_classes(self, class_names: list[str]) -> LabelConsistency:
        return LabelConsistency(self.oracle, self.labels, list(class_names)) if self.labels else self

    def apply(self, predictions: list[Prediction]) -> None:
        for prediction in predictions:
            present = prediction.present_classes
            if present is None:
                raise ConfigError(
                    "model.postprocess LabelConsistency needs a net with an image-level head, a labels file "
                    "(labels: <file.csv>), or oracle: true on data with masks"
                )
            assert prediction.classes is not None
            allowed = present.to(prediction.classes.device).clone()
            allowed[0] = True  # the background is always possible
            probabilities = prediction.probabilities
            replacement = class_argmax(torch.where(allowed.view(-1, 1, 1), probabilities, -1.0), 0)
            prediction.classes = torch.where(allowed[prediction.classes], prediction.classes, replacement)

    def describe(self) -> str:
        if self.oracle:
            return "consistency (oracle labels)"
        return f"consistency (labels of {Path(self.labels).name})" if self.labels else "consistency"
