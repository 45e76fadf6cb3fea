"""Batch augmentation on the device with Kornia: image and mask move together.

Masks are carried through Kornia as float32 ``mask + 1`` so that pixels a geometric transform invents
(padding, rotation corners, zoom-out borders) come out as 0 and can be told apart from real class 0; they
become ``ignore_index``. float32 holds every label exactly (reduced precision would round 257 to 256), and
Kornia resamples the ``mask`` data key with nearest interpolation, so labels are never blended.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn


def ordered_color_jitter(
    brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0, p: float = 1.0
) -> K.ColorJitter:
    """``kornia.augmentation.ColorJitter`` with a fixed order of the adjustments it is given.

    Kornia's default random order is read back to the host (``order.tolist()``) and each step is guarded by
    a Python ``if factors.any()``: host syncs on every batch. A fixed ``order`` makes Kornia select each
    step's result with ``torch.where`` on the device instead, and it then computes every step it lists on
    the whole batch, so only the adjustments in use are listed (hue, an RGB↔HSV round trip, is the costly
    one). In YAML: ``order: [0, 1]`` for brightness and contrast, ``[0, 1, 2, 3]`` for all four.
    """
    factors = (brightness, contrast, saturation, hue)
    order = tuple(i for i, factor in enumerate(factors) if factor)
    return K.ColorJitter(brightness, contrast, saturation, hue, p=p, order=order)


class SegAugmentation(nn.Module):
    """Apply one Kornia pipeline to a batch of images and their masks.

    Args:
        augmentations: Kornia augmentation modules (geometric ones move the mask too, intensity ones
            touch only the image). Empty means identity.
        ignore_index: label given to pixels invented by a geometric transform.
    """

    def __init__(self, augmentations: Sequence[nn.Module], ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.pipeline = (
            K.AugmentationSequential(*augmentations, data_keys=["input", "mask"]) if augmentations else None
        )

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch.

        Args:
            image: float B×C×H×W in [0, 1].
            mask: int64 B×H×W class indices (may hold ``ignore_index``), or None.

        Returns:
            image: float32 B×C×H'×W'; mask: int64 B×H'×W' (or None).
        """
        if self.pipeline is None:
            return image, mask
        # Kornia must see float32 for both tensors, also under autocast (fp16 would round labels).
        with torch.autocast(device_type=image.device.type, enabled=False):
            if mask is None:
                return self.pipeline(image.float(), data_keys=["input"]), None
            carried = (mask + 1).unsqueeze(1).to(torch.float32)
            image, carried = self.pipeline(image.float(), carried)
        mask = carried.squeeze(1).round().to(torch.int64) - 1
        return image, torch.where(mask < 0, torch.full_like(mask, self.ignore_index), mask)


def natural_image_augmentations(
    size: tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.5, 1.0),
    degrees: float = 10.0,
    vertical_flip: bool = False,
    color_jitter: bool = True,
) -> list[nn.Module]:
    """The default training pipeline for photographs: a reasonable start for most datasets.

    Flip, scale/crop back to ``size`` (aspect ratio within ±33% of the target's; no crop when ``size`` is
    None), a small rotation on 30% of the batch (its corners become ignore_index) and colour jitter (image
    only).
    """
    augs: list[nn.Module] = [K.RandomHorizontalFlip()]
    if vertical_flip:
        augs.append(K.RandomVerticalFlip())
    if size is not None:
        aspect = size[1] / size[0]
        # "resample": one batched warp for the whole batch (Kornia's default "slice" crops and resizes image
        # by image in a Python loop); masks are still sampled nearest, labels exact
        augs.append(
            K.RandomResizedCrop(
                size=tuple(size), scale=scale, ratio=(aspect * 0.75, aspect / 0.75), cropping_mode="resample"
            )
        )
    if degrees:
        augs.append(K.RandomAffine(degrees=degrees, p=0.3))
    if color_jitter:
        augs.append(ordered_color_jitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5))
    return augs
