"""``LabelConsistency``: a class map that agrees with the image-level head.

Pixels of a class that the image-level head says is absent from the image take the most probable class
that it says is present, or the background (which is always allowed). Vectorised: one masked argmax per
image. The head's decision comes from its own probabilities (with tuned label thresholds when the
thresholds file has them); ``oracle: true`` uses the true labels instead, an ablation that shows the
ceiling of this step and is labelled "oracle" wherever its results appear.
"""

from __future__ import annotations

import torch

from lightning_seg.errors import ConfigError
from lightning_seg.postprocess.base import Prediction, Step
from lightning_seg.utils.class_argmax import class_argmax


class LabelConsistency(Step):
    """Remove the classes an image-level head says are absent (see the module's docstring).

    Args:
        oracle: use the true image labels (from the masks) instead of the head's: an ablation only.
    """

    acts_on = "classes"
    name = "consistency"

    def __init__(self, oracle: bool = False) -> None:
        self.oracle = oracle

    def apply(self, predictions: list[Prediction]) -> None:
        for prediction in predictions:
            present = prediction.present_classes
            if present is None:
                raise ConfigError(
                    "model.postprocess LabelConsistency needs a net with an image-level head "
                    "(or oracle: true on data with masks)"
                )
            assert prediction.classes is not None
            allowed = present.to(prediction.classes.device).clone()
            allowed[0] = True  # the background is always possible
            probabilities = prediction.probabilities
            replacement = class_argmax(torch.where(allowed.view(-1, 1, 1), probabilities, -1.0), 0)
            prediction.classes = torch.where(allowed[prediction.classes], prediction.classes, replacement)

    def describe(self) -> str:
        return "consistency (oracle labels)" if self.oracle else "consistency"
