"""CPU-side steps that make one decoded sample batchable (the only per-sample work in the loaders)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def resize_sample(
    image: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize an image (bilinear, antialiased) and its mask (nearest) to ``size``.

    Args:
        image: uint8 C×H×W.
        mask: int64 H×W or None.
        size: (height, width), or None to keep the sample as it is.

    Returns:
        uint8 C×h×w image and int64 h×w mask (or None).
    """
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    resized = F.interpolate(image[None].float(), size=tuple(size), mode="bilinear", antialias=True)[0]
    image = resized.round_().clamp_(0, 255).to(torch.uint8)
    if mask is not None:
        mask = resize_mask(mask, size)
    return image, mask


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize an int64 H×W mask to ``size`` (nearest), e.g. for a statistics pass that skips the image."""
    if size is None or tuple(mask.shape[-2:]) == tuple(size):
        return mask
    # nearest-exact keeps labels (never blends them) and picks the pixel centre on downscaling;
    # float32 holds every label below 2**24 exactly
    return F.interpolate(mask[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0].long()
