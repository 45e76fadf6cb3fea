"""Losses: :class:`CompoundLoss` (a weighted sum of named terms, :mod:`.compound`), the pixel terms written here
(:mod:`.terms`) and the split-level sums evaluation losses are computed from (:mod:`.split_sums`)."""

from lightning_seg.losses.compound import LABEL_LOSSES, PIXEL_TERMS, CompoundLoss, RuleOrListWeights
from lightning_seg.losses.terms import BinaryCrossEntropy, FocalLoss, LovaszLoss

__all__ = [
    "LABEL_LOSSES",
    "PIXEL_TERMS",
    "BinaryCrossEntropy",
    "CompoundLoss",
    "FocalLoss",
    "LovaszLoss",
    "RuleOrListWeights",
]
