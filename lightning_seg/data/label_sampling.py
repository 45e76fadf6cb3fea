"""Which training images to draw more often: each image's rarest class, and weights that draw every label
group equally often (``data.balanced_labels``)."""

from __future__ import annotations

import math

import torch

from lightning_seg.errors import ConfigError


def rarest_present_class(presence: torch.Tensor) -> torch.Tensor:
    """int64 (N,): each image's rarest present foreground class (fewest images hold it), 0 for an image
    without foreground. ``presence``: bool N×K, whether each class has a pixel in each image."""
    foreground = presence[:, 1:]
    counts = foreground.sum(0).double()
    rarity = torch.where(foreground, counts[None], math.inf)
    return torch.where(foreground.any(1), rarity.argmin(1) + 1, 0)


def balancing_weights(groups: torch.Tensor) -> torch.Tensor:
    """float64 (N,) sampling weights ∝ 1 / the frequency of each sample's group (int64 (N,); negative:
    never drawn), so that every group is drawn equally often."""
    known = groups >= 0
    if not bool(known.any()):
        raise ConfigError("data.balanced_labels: no training sample has an image-level label")
    counts = torch.bincount(groups[known]).double()
    return torch.where(known, 1.0 / counts[groups.clamp_min(0)].clamp_min(1), 0.0)
