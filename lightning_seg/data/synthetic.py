"""``SyntheticShapes``: a procedurally generated segmentation task that needs no download.

Discs, squares, triangles and rings of random size, colour, rotation and position, overlapping, on
textured, noisy backgrounds. Colour says nothing about the class (only shape does), so a net has to learn
geometry. Every image is a pure function of (seed, index): the same seed gives the same dataset anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from lightning_seg.data.base import SegDataModule
from lightning_seg.data.workers import single_threaded
from lightning_seg.errors import ConfigError

SHAPE_NAMES = ("disc", "square", "triangle", "ring")


def _shape_mask(kind: str, yy: torch.Tensor, xx: torch.Tensor, cy: float, cx: float, r: float, angle: float):
    """Boolean H×W mask of one shape centred at (cy, cx) with circumradius ``r``."""
    dy, dx = yy - cy, xx - cx
    if kind == "disc":
        return dy.square() + dx.square() <= r * r
    if kind == "ring":
        d2 = dy.square() + dx.square()
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    if kind == "square":
        half = r / math.sqrt(2.0)
        return (u.abs() <= half) & (v.abs() <= half)
    # equilateral triangle: inside the three half-planes whose normals point at 90°, 210°, 330°
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(3):
        theta = math.pi / 2 + k * 2 * math.pi / 3
        inside &= u * math.cos(theta) + v * math.sin(theta) <= r / 2
    return inside


def render_shapes(
    size: int, generator: torch.Generator, max_shapes: int = 4, noise: float = 0.06
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one image and its mask.

    Returns:
        image: uint8 3×size×size; mask: int64 size×size with 0 = background, 1.. = ``SHAPE_NAMES`` order.
    """

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator)

    ys = torch.arange(size, dtype=torch.float32).view(-1, 1).expand(size, size)
    xs = torch.arange(size, dtype=torch.float32).view(1, -1).expand(size, size)
    dark_background = bool(rand(1) < 0.5)
    # background: a base colour, a low-frequency blotch field and oriented stripes
    base = rand(3, 1, 1) * 0.35 + (0.05 if dark_background else 0.6)
    blotches = F.interpolate(rand(1, 3, 5, 5), size=(size, size), mode="bicubic", align_corners=False)[0]
    freq, phase, theta = rand(1) * 0.5 + 0.2, rand(1) * 6.28, rand(1) * 3.14
    stripes = torch.sin(freq * (xs * torch.cos(theta) + ys * torch.sin(theta)) + phase)
    image = base + 0.15 * (blotches - 0.5) + 0.05 * stripes
    mask = torch.zeros(size, size, dtype=torch.int64)

    for _ in range(int(torch.randint(1, max_shapes + 1, (1,), generator=generator))):
        cls = int(torch.randint(0, len(SHAPE_NAMES), (1,), generator=generator))
        r = float(rand(1) * 0.12 * size + 0.11 * size)
        cy, cx = (float(v) for v in rand(2) * (size - 2 * r * 0.7) + r * 0.7)
        inside = _shape_mask(SHAPE_NAMES[cls], ys, xs, cy, cx, r, float(rand(1) * 2 * math.pi))
        # shapes contrast with the background but their colour is random otherwise
        colour = rand(3, 1, 1) * 0.4 + (0.55 if dark_background else 0.0)
        image = torch.where(inside, colour.expand(3, size, size), image)
        mask[inside] = cls + 1

    image = image + noise * torch.randn(image.shape, generator=generator)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), mask


class SyntheticShapes(Dataset):
    """``num_samples`` images rendered once at construction (a few MB), indexed thereafter.

    Args:
        num_samples: images in the split.
        size: side length in pixels.
        seed: the split's seed; each image uses ``seed * 1_000_003 + index``.
        max_shapes: at most this many shapes per image (at least one).
        noise: std of the Gaussian pixel noise, in [0, 1] units.
    """

    def __init__(
        self, num_samples: int, size: int = 64, seed: int = 0, max_shapes: int = 4, noise: float = 0.06
    ):
        self.images = torch.empty(num_samples, 3, size, size, dtype=torch.uint8)
        self.masks = torch.empty(num_samples, size, size, dtype=torch.int64)
        # the tensors are tiny: intra-op threads cost more in wake-ups than they save (10× here)
        with single_threaded():
            for i in range(num_samples):
                generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
                self.images[i], self.masks[i] = render_shapes(size, generator, max_shapes, noise)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index],
            "mask": self.masks[index],
            "name": f"shapes_{self.seed}_{index:05d}",
            "orig_size": torch.tensor(self.images.shape[-2:]),
        }


class SyntheticDataModule(SegDataModule):
    """The offline default: ``SyntheticShapes`` with disjoint seeds per split.

    Args:
        num_train: training images.
        num_val: validation images.
        num_test: test images (``predict`` uses the first ``num_predict`` of another seed).
        num_predict: images for ``predict``.
        size: image side length.
        max_shapes: shapes per image, at most.
        noise: pixel noise std.
        seed: base seed; splits use ``seed``, ``seed + 1``, ...
        mean: normalisation mean (the images' own statistics, not ImageNet's).
        std: normalisation std.
        **kwargs: :class:`SegDataModule` arguments (batch size, workers, augmentation, normalisation).
    """

    class_names = ("background", *SHAPE_NAMES)

    def __init__(
        self,
        num_train: int = 1024,
        num_val: int = 128,
        num_test: int = 128,
        num_predict: int = 8,
        size: int = 64,
        max_shapes: int = 4,
        noise: float = 0.06,
        seed: int = 0,
        mean: Sequence[float] | None = (0.5, 0.5, 0.5),
        std: Sequence[float] | None = (0.25, 0.25, 0.25),
        **kwargs,
    ) -> None:
        super().__init__(mean=mean, std=std, **kwargs)
        if size < 16:
            raise ConfigError(f"data.size must be >= 16 pixels, got {size}")
        self.counts = {"train": num_train, "val": num_val, "test": num_test, "predict": num_predict}
        self.size, self.max_shapes, self.noise, self.seed = size, max_shapes, noise, seed

    def sample_ids(self, split: str) -> list[str] | None:
        """``shapes_<split seed>_<index>``: a sample is its generator seed and index (disjoint per split)."""
        seed = self.seed * 10 + {"train": 0, "val": 1, "test": 2, "predict": 3}[split]
        return [f"shapes_{seed}_{i:05d}" for i in range(self.counts[split])]

    def build_dataset(self, split: str) -> Dataset:
        offset = {"train": 0, "val": 1, "test": 2, "predict": 3}[split]
        return SyntheticShapes(
            self.counts[split], self.size, self.seed * 10 + offset, self.max_shapes, self.noise
        )

    def default_train_augmentations(self) -> list[nn.Module]:
        import kornia.augmentation as K

        from lightning_seg.data.augment import ordered_color_jitter

        # shapes are rotation/flip invariant; RandomAffine invents border pixels, which become ignore_index
        return [
            K.RandomHorizontalFlip(),
            K.RandomVerticalFlip(),
            K.RandomAffine(degrees=30.0, scale=(0.8, 1.2), p=0.5),
            ordered_color_jitter(brightness=0.1, contrast=0.1, p=0.5),
        ]
