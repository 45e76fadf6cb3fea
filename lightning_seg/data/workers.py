"""Per-sample CPU passes spread over DataLoader worker processes, and PNG files written atomically."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_seg.utils.atomic import atomic_write


@contextlib.contextmanager
def single_threaded():
    """Run per-sample CPU work with one intra-op thread, as DataLoader workers do: on a few busy cores,
    thread wake-ups cost more than they save on tensors of one image (measured 4-10× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _collate_as_is(item):
    """``collate_fn`` for one-item-at-a-time passes (``batch_size=None``) whose items need no collating."""
    return item


def map_in_workers(dataset: Dataset, num_workers: int) -> Iterator:
    """``dataset[0], dataset[1], ...`` computed in ``num_workers`` worker processes (0: in this process),
    one item at a time and uncollated, with one intra-op thread in this process while it runs."""
    # its own generator: a DataLoader draws its base seed from the global one, and a check at setup must not
    # change the run's random stream (augmentation, shuffling) and with it the run's result
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_collate_as_is,
        generator=torch.Generator(),
    )
    with single_threaded():
        yield from loader


def save_png(image: torch.Tensor, path: Path | str) -> None:
    """uint8 C×H×W → PNG file, atomically (:func:`lightning_seg.utils.atomic.atomic_write`). Not torchvision's ``write_png``: it ignores write errors, so a
    full disk leaves empty or cut files without a word (seen writing to /dev/full)."""
    from torchvision.io import encode_png

    atomic_write(Path(path), encode_png(image.contiguous()).numpy().tobytes())
