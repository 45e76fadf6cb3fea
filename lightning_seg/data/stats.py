"""Class pixel statistics of a split and the class weights derived from them, cached per dataset.

One pass over the masks (``bincount`` per mask, in the data module's worker processes) gives, per class,
the labelled pixels and the labelled pixels of the images in which the class appears. The result is cached
as JSON under ``$LIGHTNING_SEG_CACHE/stats`` (default ``~/.cache/lightning_seg/stats``), keyed by the
dataset's identity (its files, their sizes and times, the mask encoding and the resize), so a second run,
or another experiment on the same data, reads it back instantly. Datasets without an ``identity()`` method
are counted every time.

Weight rules (classes absent from the split get weight 0; they never occur as targets):

- ``"inverse_frequency"``: ``w_c = 1 / (K * p_c)`` with ``p_c`` the share of labelled pixels and ``K`` the number of
  classes present; a balanced dataset gets all ones and the pixel-averaged weight is 1.
- ``"median_frequency"``: median frequency balancing (Eigen & Fergus 2015, used by SegNet):
  ``w_c = median(f) / f_c`` with ``f_c`` = pixels of class c / labelled pixels of the images containing c.
- ``"enet"``: ENet's ``w_c = 1 / ln(1.02 + p_c)`` (Paszke et al. 2016), bounded in about [1, 50].
- ``"effective_number"``: class-balanced weights by the effective number of samples (Cui et al. 2019):
  ``w_c ∝ (1 - β) / (1 - β^{n_c})`` with ``n_c`` the images holding class c (a sample of the class), scaled
  so the weights of the present classes sum to their number; β → 0 gives equal weights, β → 1 inverse
  image counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar, get_args

import torch
from torch.utils.data import Dataset, Subset

from lightning_seg.data.workers import map_in_workers
from lightning_seg.errors import ConfigError
from lightning_seg.utils.atomic import atomic_write

WeightRule = Literal["inverse_frequency", "median_frequency", "enet", "effective_number"]
DEFAULT_BETA = 0.999
"""β of the ``effective_number`` rule (Cui et al. use 0.9 to 0.9999)."""
WEIGHT_RULES = get_args(WeightRule)
T = TypeVar("T")
_VERSION = 1  # bump when the counting changes, so old cache files are not reused


def default_cache_dir() -> Path:
    """``$LIGHTNING_SEG_CACHE`` or ``~/.cache/lightning_seg``."""
    return Path(os.environ.get("LIGHTNING_SEG_CACHE") or Path.home() / ".cache" / "lightning_seg")


@dataclasses.dataclass
class ClassStatistics:
    """Pixel counts of one split.

    Attributes:
        pixel_counts: int64 (C,), labelled pixels of each class.
        image_pixels: int64 (C,), labelled pixels of the images in which each class appears.
        image_counts: int64 (C,), images in which each class appears.
        ignored_pixels: pixels labelled ``ignore_index``.
        num_images: masks counted.
    """

    pixel_counts: torch.Tensor
    image_pixels: torch.Tensor
    image_counts: torch.Tensor
    ignored_pixels: int
    num_images: int

    def frequencies(self) -> torch.Tensor:
        """float64 (C,): share of labelled pixels per class (sums to 1)."""
        counts = self.pixel_counts.to(torch.float64)
        return counts / counts.sum().clamp(min=1)

    def weights(self, rule: WeightRule = "median_frequency", beta: float = DEFAULT_BETA) -> torch.Tensor:
        """float32 (C,) class weights for a weighted loss; see the module docstring for the rules (``beta``:
        the ``effective_number`` rule's)."""
        present = self.pixel_counts > 0
        p = self.frequencies()
        weights = torch.zeros_like(p)
        if rule == "inverse_frequency":
            weights[present] = 1.0 / (int(present.sum()) * p[present])
        elif rule == "median_frequency":
            f = self.pixel_counts[present].to(torch.float64) / self.image_pixels[present].to(torch.float64)
            # torch.median takes the lower middle value; the rule uses the ordinary median
            weights[present] = f.quantile(0.5) / f
        elif rule == "enet":
            weights[present] = 1.0 / torch.log(1.02 + p[present])
        elif rule == "effective_number":
            if not 0 <= beta < 1:
                raise ConfigError(f"loss.class_weight_beta must be in [0, 1), got {beta}")
            n = self.image_counts[present].to(torch.float64)
            raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
            weights[present] = raw * int(present.sum()) / raw.sum()
        else:
            raise ConfigError(f"unknown class weight rule {rule!r}; use one of {WEIGHT_RULES}")
        return weights.to(torch.float32)

    def to_dict(self) -> dict:
        return {
            "pixel_counts": self.pixel_counts.tolist(),
            "image_pixels": self.image_pixels.tolist(),
            "image_counts": self.image_counts.tolist(),
            "ignored_pixels": self.ignored_pixels,
            "num_images": self.num_images,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClassStatistics:
        return cls(
            pixel_counts=torch.tensor(data["pixel_counts"], dtype=torch.int64),
            image_pixels=torch.tensor(data["image_pixels"], dtype=torch.int64),
            image_counts=torch.tensor(data["image_counts"], dtype=torch.int64),
            ignored_pixels=int(data["ignored_pixels"]),
            num_images=int(data["num_images"]),
        )


class _MaskCounts(Dataset):
    """Per-mask counts computed in the worker, so only C numbers travel back, not the mask."""

    def __init__(self, dataset: Dataset, num_classes: int, ignore_index: int):
        self.dataset, self.num_classes, self.ignore_index = dataset, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        dataset = self.dataset
        if isinstance(dataset, Subset):  # a part of a dataset: its masks alone are still readable
            dataset, index = dataset.dataset, dataset.indices[index]
        load_mask = getattr(dataset, "load_mask", None)
        mask = load_mask(index) if load_mask is not None else dataset[index]["mask"]
        mask = mask.reshape(-1)
        valid = mask != self.ignore_index
        labelled = mask[valid]
        if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= self.num_classes):
            raise ValueError(f"sample {index}: mask labels outside 0..{self.num_classes - 1}")
        return torch.bincount(labelled, minlength=self.num_classes), int(mask.numel() - labelled.numel())


def count_classes(
    dataset: Dataset, num_classes: int, ignore_index: int, num_workers: int = 0
) -> ClassStatistics:
    """One pass over ``dataset``'s masks (its ``load_mask(i)`` when it has one, else ``dataset[i]["mask"]``)."""
    pixel_counts = torch.zeros(num_classes, dtype=torch.int64)
    image_pixels = torch.zeros(num_classes, dtype=torch.int64)
    image_counts = torch.zeros(num_classes, dtype=torch.int64)
    ignored = 0
    for counts, ignored_here in map_in_workers(_MaskCounts(dataset, num_classes, ignore_index), num_workers):
        present = counts > 0
        pixel_counts += counts
        image_pixels += present * counts.sum()
        image_counts += present
        ignored += ignored_here
    return ClassStatistics(pixel_counts, image_pixels, image_counts, ignored, len(dataset))


def image_presence(
    dataset: Dataset, num_classes: int, ignore_index: int, num_workers: int = 0
) -> torch.Tensor:
    """bool N×C: whether each class has a pixel in each mask (one pass, as :func:`count_classes`; not
    cached). What a class-balanced sampler without image labels groups the images by."""
    counted = map_in_workers(_MaskCounts(dataset, num_classes, ignore_index), num_workers)
    rows = [counts > 0 for counts, _ in counted]
    return torch.stack(rows) if rows else torch.zeros(0, num_classes, dtype=torch.bool)


def class_statistics(
    dataset: Dataset,
    num_classes: int,
    ignore_index: int,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> ClassStatistics:
    """:func:`count_classes`, cached as JSON when ``dataset`` has an ``identity()`` method.

    Args:
        dataset: yields masks (see :func:`count_classes`).
        num_classes: C.
        ignore_index: label left out of the counts.
        cache_dir: where cache files go; None: ``default_cache_dir() / "stats"``. An unwritable folder only
            disables caching.
        num_workers: worker processes for the pass.
    """
    return _cached(
        dataset,
        f"{num_classes}|{ignore_index}",
        cache_dir,
        lambda: count_classes(dataset, num_classes, ignore_index, num_workers),
        ClassStatistics.to_dict,
        ClassStatistics.from_dict,
    )


def cached_image_presence(
    dataset: Dataset,
    num_classes: int,
    ignore_index: int,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """:func:`image_presence` (bool N×C), cached as :func:`class_statistics` is (every fold of a
    cross-validation reads the same masks to draw its folds)."""
    return _cached(
        dataset,
        f"presence|{num_classes}|{ignore_index}",
        cache_dir,
        lambda: image_presence(dataset, num_classes, ignore_index, num_workers),
        lambda presence: {"present": [row.nonzero().flatten().tolist() for row in presence]},
        lambda data: _presence_from_lists(data["present"], num_classes),
    )


def _presence_from_lists(present: list[list[int]], num_classes: int) -> torch.Tensor:
    presence = torch.zeros(len(present), num_classes, dtype=torch.bool)
    for row, classes in enumerate(present):
        presence[row, classes] = True
    return presence


def _cached(
    dataset: Dataset,
    what: str,
    cache_dir: str | Path | None,
    compute: Callable[[], T],
    encode: Callable[[T], dict],
    decode: Callable[[dict], T],
) -> T:
    """``compute()``, cached as JSON under a key of ``what`` and ``dataset.identity()`` when the dataset has
    one (a damaged cache file is recomputed and replaced; an unwritable folder only disables caching)."""
    identity = getattr(dataset, "identity", None)
    if identity is None:
        return compute()
    key = hashlib.sha1(f"{_VERSION}|{what}|{identity()}".encode()).hexdigest()[:20]
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "stats"
    path = path / f"{type(dataset).__name__}-{key}.json"
    if path.is_file():
        try:
            return decode(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, IndexError):
            pass
    result = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(encode(result)))  # concurrent runs never read half a file
    except OSError:
        pass
    return result
