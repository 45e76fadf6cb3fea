"""The threshold of binary masks, decided once per dataset from the values its mask files hold.

A binary dataset stores its masks as 0/1, 0/255, or 0/255 with JPEG noise or antialiased edges. One
file cannot tell which: a 0/1 mask with one stray 255 pixel looks like a 0/255 mask, and a 0/1/2 index
mask read as binary looks like an almost empty 0/255 mask. So the values of every mask are counted once
(a 256-bin histogram of each file's brightest channel, in the data module's worker processes), and:

- the two most frequent values ``a < b`` of the whole dataset are background and foreground, and the
  threshold is their midpoint (0/1 → 1, 0/255 → 128);
- values around ``a`` and ``b`` within a tolerance are noise (none for lossless files, ±24 when any mask is
  JPEG); values between the two count as edges (antialiasing, JPEG ringing) while they stay rare: at most
  5 % of the pixels in all, and no single value above 1 % (edges spread over many levels, a label sits on
  one; a third label rarer than that would go unnoticed);
- anything else is a third label, and the dataset is refused with the value and a file that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from lightning_seg.data.io import LOSSY_EXTENSIONS, brightest_channel, read_mask
from lightning_seg.data.workers import map_in_workers
from lightning_seg.errors import ConfigError

#: the farthest a lossy (JPEG) value strays from the value it encodes, in grey levels
LOSSY_TOLERANCE = 24
#: the largest share of pixels that may lie between background and foreground (edges, not a label)
MAX_EDGE_FRACTION = 0.05
#: the largest share of pixels one value between background and foreground may hold (edges spread out)
MAX_EDGE_LEVEL_FRACTION = 0.01
_HINT = "binary masks hold two values (0/1 or 0/255); for class indices use data.mask_mode: index"


class _ValueHistograms(Dataset):
    """int64 (256,) histogram of each mask's brightest channel; None for a file that cannot be read (the
    file check at setup reports or skips it)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | None:
        try:
            raw = read_mask(self.paths[index], color=True)
        except ConfigError:
            return None
        return torch.bincount(brightest_channel(raw).reshape(-1).long(), minlength=256)


def decide_binary_threshold(paths: Sequence[Path], num_workers: int = 0) -> int:
    """The threshold (1..255) that splits every mask of a binary dataset into background and foreground.

    Args:
        paths: every mask file of the dataset (all splits).
        num_workers: worker processes for the pass over the files.

    Raises:
        ConfigError: the masks hold a third label (a value far from both), or too many pixels between
            the two values, or JPEG masks whose values are too close to tell from compression noise.
    """
    paths = list(dict.fromkeys(Path(p) for p in paths))  # each file once (VOC-style val == test)
    total = torch.zeros(256, dtype=torch.int64)
    present = torch.zeros(len(paths), 256, dtype=torch.bool)  # which file holds which value, for messages
    for i, hist in enumerate(map_in_workers(_ValueHistograms(paths), num_workers)):
        if hist is not None:
            total += hist
            present[i] = hist > 0
    if not bool(total.any()):
        return 128  # nothing readable: the file check names the files
    lossy = any(p.suffix.lower() in LOSSY_EXTENSIONS for p in paths)
    tolerance = LOSSY_TOLERANCE if lossy else 0
    counts = total.clone()
    low_peak = int(counts.argmax())
    # the second value must lie outside the first one's noise band
    counts[max(0, low_peak - 2 * tolerance) : low_peak + 2 * tolerance + 1] = 0
    values = torch.nonzero(total).flatten().tolist()
    if not bool(counts.any()):
        if lossy and 0 < values[-1] < 2 * LOSSY_TOLERANCE:
            raise ConfigError(
                f"{_first_file(paths, present, values[-1])}: JPEG masks hold only values {values[0]}..{values[-1]}, "
                "too close to tell from compression noise; save the masks as PNG"
            )
        return 128  # one value everywhere: the class statistics at setup refuse a class with no pixel
    background, foreground = sorted((low_peak, int(counts.argmax())))
    levels = torch.arange(256)
    outside = (levels < background - tolerance) | (levels > foreground + tolerance)
    if bool(total[outside].any()):
        strays = torch.nonzero(total * outside).flatten()
        third = int(strays[total[strays].argmin()])  # the rarest: most likely the odd file's value
        raise ConfigError(
            f"{_first_file(paths, present, third)}: value {third} in binary masks whose other values are "
            f"{background} and {foreground} ({_list(values)} in all); {_HINT}"
        )
    between = (levels > background + tolerance) & (levels < foreground - tolerance)
    edge_pixels, pixels = int(total[between].sum()), int(total.sum())
    busiest_level = int(torch.where(between, total, 0).max())
    if edge_pixels > MAX_EDGE_FRACTION * pixels or busiest_level > MAX_EDGE_LEVEL_FRACTION * pixels:
        third = int(torch.where(between, total, 0).argmax())
        raise ConfigError(
            f"{_first_file(paths, present, third)}: binary masks hold more than two values ({_list(values)}; "
            f"{100 * edge_pixels / pixels:.0f}% of pixels between {background} and {foreground}); {_HINT}"
        )
    return (background + foreground + 1) // 2


def _first_file(paths: Sequence[Path], present: torch.Tensor, value: int) -> Path:
    return paths[int(present[:, value].to(torch.uint8).argmax())]


def _list(values: list[int]) -> str:
    return (
        str(values) if len(values) <= 6 else f"{values[:3]} ... {values[-3:]}".replace("] ... [", ", ..., ")
    )
