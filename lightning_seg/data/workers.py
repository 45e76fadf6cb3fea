"""Per-sample CPU passes spread over DataLoader worker processes, and atomic file writes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset


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


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: a concurrent reader never
    sees half a file, and a killed process never leaves one. A failed write (a full disk) raises OSError
    naming ``path`` and leaves no temporary file."""
    path = Path(path)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from error


def save_png(image: torch.Tensor, path: Path | str) -> None:
    """uint8 C×H×W → PNG file, atomically. Not torchvision's ``write_png``: it ignores write errors, so a
    full disk leaves empty or cut files without a word (seen writing to /dev/full)."""
    from torchvision.io import encode_png

    atomic_write(Path(path), encode_png(image.contiguous()).numpy().tobytes())
