"""What a post-processing step sees: one image's prediction at its original size, and the step interface.

The chain (:class:`~lightning_seg.postprocess.chain.PostProcess`) moves a list of :class:`Prediction` (one per
image of a batch) through its steps. A step acts either on the probabilities, before the class map is
decided (a dense CRF), or on the class map after it (image-level consistency, small components); the
per-class thresholds step is the decision itself. Steps change the predictions in place, a batch at a
time, so a step that parallelises across images (the CRF's process pool) sees all of them at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class Prediction:
    """One image's prediction at its original size, as it moves through the chain.

    Attributes:
        probabilities: float32 K×H×W class probabilities (K ≥ 2; a one-channel head is given as
            [1 - p, p]), on the device that computed them.
        classes: int64 H×W class map once decided (None before the decision).
        image: uint8 3×H×W RGB image at the same size, as stored (None unless a step needs it).
        present_classes: bool (K,), the mask classes an image-level head says the image holds (decided
            with its tuned thresholds; background always True), or the true ones for an oracle ablation;
            None for a net without a class head.
    """

    probabilities: torch.Tensor
    classes: torch.Tensor | None = None
    image: torch.Tensor | None = None
    present_classes: torch.Tensor | None = None


class Step:
    """A post-processing step. Subclasses set ``acts_on`` and ``name`` and implement :meth:`apply`.

    ``acts_on``: "probabilities" (runs before the decision, changes ``probabilities``), "decision" (sets
    ``classes`` from ``probabilities``) or "classes" (runs after the decision, changes ``classes``).
    """

    acts_on: Literal["probabilities", "decision", "classes"] = "classes"
    name: str = "step"
    needs_image: bool = False
    """Whether :attr:`Prediction.image` must be given (the data module then keeps the original images)."""

    def apply(self, predictions: list[Prediction]) -> None:
        """Change the predictions of one batch in place."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs and the stage table, e.g. ``crf (5 iterations)``."""
        return self.name

    def for_classes(self, class_names: list[str]) -> Step:
        """This step for a model's K class names (background first): itself, or a new step complete with them
        (a step configured by class name); the model builds its chain from these."""
        bind = getattr(self, "bind", None)
        if callable(bind):  # a step written for the release before (bind after construction)
            warnings.warn(
                f"{type(self).__name__}.bind(class_names) is deprecated: override Step.for_classes",
                FutureWarning,
                stacklevel=2,
            )
            bind(list(class_names))
        return self
