"""Device-to-host copies of a batch's outputs, one copy per batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def masks_to_host(masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The batch's masks on the CPU, in one device-to-host copy (masks of different sizes: one flat tensor,
    split again on the host); masks already there are used as they are."""
    if all(mask.device.type == "cpu" for mask in masks):
        return list(masks)
    flat = torch.cat([mask.reshape(-1) for mask in masks]).cpu()
    pieces = flat.split([mask.numel() for mask in masks])
    return [piece.view(mask.shape) for piece, mask in zip(pieces, masks, strict=True)]
