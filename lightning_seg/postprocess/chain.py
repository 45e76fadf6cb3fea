"""``PostProcess``: the list of steps after inference, in the same order for test, predict, tune and
submissions (``model.init_args.postprocess`` in YAML).

Order: steps on probabilities (a dense CRF), then the decision (per-class thresholds, or the argmax when
the list has no thresholds step), then steps on the class map (image-level consistency, small
components). A list in another order is refused: a CRF after the decision would have nothing to refine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lightning_seg.errors import ConfigError
from lightning_seg.postprocess.base import Prediction, Step
from lightning_seg.postprocess.temperature import TemperatureScaling
from lightning_seg.postprocess.thresholds import ClassThresholds

ORDER = {"probabilities": 0, "decision": 1, "classes": 2}

Decide = Callable[[Prediction], None]
"""Sets ``prediction.classes`` from ``prediction.probabilities`` without thresholds (the argmax)."""

Report = Callable[[str, list[Prediction]], None]
"""Called after each stage with the stage's name and the predictions with their class maps."""


class PostProcess:
    """The post-processing steps of a model, checked for order once.

    Args:
        steps: the steps (see the module's docstring for the order).
    """

    def __init__(self, steps: Sequence[Step] = ()) -> None:
        self.steps = list(steps)
        for step in self.steps:
            if not isinstance(step, Step):
                raise ConfigError(f"model.postprocess: {type(step).__name__} is not a post-processing step")
        ranks = [ORDER[step.acts_on] for step in self.steps]
        if ranks != sorted(ranks):
            order = " → ".join(f"{s.name} ({s.acts_on})" for s in self.steps)
            raise ConfigError(
                f"model.postprocess: steps out of order ({order}); steps on probabilities (DenseCRF) come "
                "first, then ClassThresholds, then steps on the class map (LabelConsistency, SmallComponents)"
            )
        temperatures = [i for i, step in enumerate(self.steps) if isinstance(step, TemperatureScaling)]
        if temperatures and temperatures != [0]:
            raise ConfigError(
                "model.postprocess: TemperatureScaling comes first, once (the steps after it read calibrated "
                "probabilities)"
            )
        if ranks.count(ORDER["decision"]) > 1:
            raise ConfigError("model.postprocess: more than one decision step (ClassThresholds)")

    @property
    def needs_image(self) -> bool:
        """Whether a step reads the image (the data then keeps each original image)."""
        return any(step.needs_image for step in self.steps)

    @property
    def thresholds(self) -> ClassThresholds | None:
        return next((s for s in self.steps if isinstance(s, ClassThresholds)), None)

    def find(self, kind: type) -> Step | None:
        return next((s for s in self.steps if isinstance(s, kind)), None)

    def before_decision(self) -> list[Step]:
        """The steps whose output the thresholds are tuned on (steps on probabilities)."""
        return [s for s in self.steps if s.acts_on == "probabilities"]

    def describe(self) -> list[str]:
        return [step.describe() for step in self.steps]

    def run(self, predictions: list[Prediction], decide: Decide, report: Report | None = None) -> None:
        """Every step on the predictions of one batch, in place; each ends with a class map.

        With ``report``, the class map after each step is reported (a step on probabilities is followed
        by the plain decision for its report), which is the stage table of ``test``.
        """
        decided = False  # the class maps are up to date with the probabilities
        for step in self.steps:
            if step.acts_on == "classes" and not decided:
                self.decide_all(predictions, decide)
                decided = True
            step.apply(predictions)
            if step.acts_on == "decision":
                decided = True
            elif step.acts_on == "probabilities":
                decided = False
                if report is not None:
                    self.decide_all(predictions, decide)
                    decided = True
            if report is not None:
                report(step.describe(), predictions)
        if not decided:
            self.decide_all(predictions, decide)

    @staticmethod
    def decide_all(predictions: list[Prediction], decide: Decide) -> None:
        """The plain decision for each prediction (the chain's own fallback, and the stage table's rows)."""
        for prediction in predictions:
            decide(prediction)

    def close(self) -> None:
        """Release what steps hold (the CRF's process pool)."""
        for step in self.steps:
            close = getattr(step, "close", None)
            if callable(close):
                close()
