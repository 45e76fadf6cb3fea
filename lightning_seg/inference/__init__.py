"""After training: one inference path from a batch to per-image class probabilities."""

from lightning_seg.inference.predictor import Inference

__all__ = ["Inference"]
