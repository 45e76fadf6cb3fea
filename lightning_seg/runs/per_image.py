"""A test record's per-image counts (``<run>/test/<date-time>/per_image.npz``): each image's name and its
per-class (TP, FP, FN) of the final class maps, from which every test metric and its bootstrap interval
follow, and which ``compare`` pairs two runs on (:mod:`lightning_seg.metrics.intervals`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from lightning_seg.errors import ConfigError, short_path
from lightning_seg.utils.atomic import atomic_write

PER_IMAGE_FILE = "per_image.npz"


@dataclass(frozen=True)
class ImageCounts:
    """One test's per-image counts: ``counts`` int64 N×K×3 (TP, FP, FN per class), the N image ``names``
    (empty when the test ran in several processes), the K ``class_names``."""

    counts: torch.Tensor
    names: list[str]
    class_names: list[str]


def write_image_counts(
    path: Path, counts: torch.Tensor, names: Sequence[str], class_names: Sequence[str]
) -> str:
    """Write the file atomically (plain arrays: ``np.load(allow_pickle=False)`` reads it); returns its path."""

    def write(handle: BinaryIO) -> None:
        np.savez_compressed(
            handle,
            counts=counts.numpy().astype(np.int64),
            names=np.asarray(list(names), dtype=str),
            class_names=np.asarray(list(class_names), dtype=str),
        )

    atomic_write(path, write)
    return str(path)


def read_image_counts(path: Path) -> ImageCounts:
    """Read a file :func:`write_image_counts` wrote; one line naming it when it is missing or not one."""
    where = short_path(str(path))
    if not path.is_file():
        raise ConfigError(
            f"{where}: no per-image counts (a test record written before they were kept? run test again)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            counts, names, classes = data["counts"], data["names"], data["class_names"]
    except (OSError, KeyError, ValueError) as error:
        raise ConfigError(f"{where}: not a per-image counts file ({error})") from error
    if counts.ndim != 3 or counts.shape[2] != 3 or counts.shape[1] != len(classes):
        raise ConfigError(f"{where}: counts of shape {counts.shape} for {len(classes)} classes")
    return ImageCounts(torch.from_numpy(counts), [str(n) for n in names], [str(c) for c in classes])
