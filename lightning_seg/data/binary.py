"""The threshold of binary masks, decided once per dataset from the values its mask files hold.

A binary dataset stores its masks as 0/1, 0/255, or 0/255 with JPEG noise or antialiased edges. One
file cannot tell which: a 0/1 mask with one stray 255 pixel looks like a 0/255 mask, and a 0/1/2 index
mask read as binary looks like an almost empty 0/255 mask. So the values of every mask are counted once
(a 256-bin histogram of each file's brightest channel, in the data module's worker processes), and:

- background is the most frequent value; foreground is the value farthest from it among those that hold
  at least 1 % of the other pixels (so one stray pixel is not the foreground); the threshold is their
  midpoint (0/1 → 1, 0/255 → 128);
- values within a tolerance of either are noise (none for lossless files, ±24 when any mask is JPEG);
  values between the two are edges (antialiasing, JPEG ringing) while they spread over several levels:
  one level holding most of them (and over 1 % of the pixels) is a label, and so is any value between
  two lossless values at most 8 apart (0/1/2), where no smoothing can have made it;
- a value beyond either is a third label (for JPEG masks: more than 1 % of the pixels beyond them);
- masks of two or more hues (red and green objects) are colour masks, not binary ones.

Anything else that is not two values is refused with one line naming a file that shows it. A threshold
given in the config is used as it is, only checked against JPEG noise.
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
#: a value (or a hue) that holds less than this share of the non-background pixels is not a label
MIN_LABEL_SHARE = 0.01
#: beyond this share of all pixels, one level between background and foreground is a label, not an edge
MAX_EDGE_LEVEL_SHARE = 0.01
#: the share of the pixels between background and foreground that one level of smooth edges may hold
MAX_EDGE_LEVEL_CONCENTRATION = 0.6
#: lossless values this close cannot have smoothed edges between them (0/1/2 are three labels)
MIN_SMOOTH_RANGE = 8
_HUES = 9  # levels per channel of a pixel's hue signature (its colour divided by its brightest channel)


class _ValueHistograms(Dataset):
    """Per mask: int64 (256,) histogram of the brightest channel and int64 (9**3,) histogram of the hues of
    its non-black pixels (None for a grey mask); None for a file that cannot be read (the file check at
    setup reports or skips it)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        try:
            raw = read_mask(self.paths[index], color=True)
        except ConfigError:
            return None
        value = brightest_channel(raw)
        values = torch.bincount(value.reshape(-1).long(), minlength=256)
        if raw.shape[0] == 1 or (torch.equal(raw[0], raw[1]) and torch.equal(raw[0], raw[2])):
            return values, None
        lit = value > 0
        rgb, top = raw[:, lit].long(), value[lit].long()
        signature = (rgb * (_HUES - 1) + top // 2) // top  # 0..8 per channel, the same for every shade
        keys = (signature[0] * _HUES + signature[1]) * _HUES + signature[2]
        return values, torch.bincount(keys, minlength=_HUES**3)


def decide_binary_threshold(paths: Sequence[Path], num_workers: int = 0, given: int | None = None) -> int:
    """The threshold (1..255) that splits every mask of a binary dataset into background and foreground.

    Args:
        paths: every mask file of the dataset (all splits).
        num_workers: worker processes for the pass over the files.
        given: a threshold from the config: returned as it is unless it lies in the JPEG noise of a value.

    Raises:
        ConfigError: the masks hold a third label, two hues, or JPEG values too close to tell from noise;
            or ``given`` lies in the noise. The line names a file that shows it and what to set.
    """
    paths = list(dict.fromkeys(Path(p) for p in paths))  # each file once (VOC-style val == test)
    total = torch.zeros(256, dtype=torch.int64)
    hues = torch.zeros(_HUES**3, dtype=torch.int64)
    present = torch.zeros(len(paths), 256, dtype=torch.bool)  # which file holds which value, for messages
    hue_present = torch.zeros(len(paths), _HUES**3, dtype=torch.bool)
    for i, result in enumerate(map_in_workers(_ValueHistograms(paths), num_workers)):
        if result is not None:
            total += result[0]
            present[i] = result[0] > 0
            if result[1] is not None:
                hues += result[1]
                hue_present[i] = result[1] > 0
    if not bool(total.any()):
        return given or 128  # nothing readable: the file check names the files
    lossy = any(p.suffix.lower() in LOSSY_EXTENSIONS for p in paths)
    tolerance = LOSSY_TOLERANCE if lossy else 0
    levels = torch.arange(256)
    values = torch.nonzero(total).flatten().tolist()
    background = int(total.argmax())
    far = (levels - background).abs() > 2 * tolerance  # outside the background's noise band
    others = int(total[far].sum())
    candidates = torch.nonzero(far & (total >= max(1, MIN_LABEL_SHARE * others))).flatten()
    if len(candidates) == 0:
        if lossy and 0 < values[-1] < 2 * LOSSY_TOLERANCE:
            raise ConfigError(
                f"{_first(paths, present, values[-1])}: JPEG masks hold only values {values[0]}..{values[-1]}, "
                "too close to tell from compression noise; save the masks as PNG"
            )
        return (
            given or 128
        )  # one value everywhere: the class statistics at setup refuse a class with no pixel
    foreground = int(candidates[(candidates - background).abs().argmax()])
    low, high = sorted((background, foreground))
    midpoint = (low + high + 1) // 2
    if given is not None:
        if lossy and (abs(given - low) <= tolerance or abs(given - high) <= tolerance):
            raise ConfigError(
                f"data.binary_threshold {given} lies in the JPEG noise of the mask value "
                f"{low if abs(given - low) <= tolerance else high}; use {low + tolerance + 1}..{high - tolerance} "
                "or leave it unset"
            )
        return given
    pixels = int(total.sum())
    edges = f"if the masks are antialiased on purpose, set data.binary_threshold: {midpoint}"
    labels = "fix that file, or for class indices use data.mask_mode: index"

    # values beyond background and foreground: a third label (JPEG overshoot is a thin tail)
    beyond = (levels < low - tolerance) | (levels > high + tolerance)
    if int(total[beyond].sum()) > (MAX_EDGE_LEVEL_SHARE * pixels if lossy else 0):
        strays = torch.nonzero(total * beyond).flatten()
        third = int(strays[total[strays].argmin()])  # the rarest: most likely the odd file's value
        index_like = high - low <= MIN_SMOOTH_RANGE or third < 16  # small integers: class indices
        hint = labels if index_like else f"is {third} a label? remove it, or {edges}"
        raise ConfigError(
            f"{_first(paths, present, third)}: value {third} in binary masks whose values are otherwise "
            f"{low} and {high} ({_values(values)}); {hint}"
        )
    # values between them: edges spread over levels; a label sits on one
    between = (levels > low + tolerance) & (levels < high - tolerance)
    in_between = torch.where(between, total, 0)
    busiest = int(in_between.argmax())
    smooth_impossible = not lossy and high - low <= MIN_SMOOTH_RANGE
    one_level = int(in_between[busiest]) > max(
        MAX_EDGE_LEVEL_SHARE * pixels, MAX_EDGE_LEVEL_CONCENTRATION * int(in_between.sum())
    )
    if (smooth_impossible and bool(in_between.any())) or one_level:
        hint = labels if smooth_impossible else f"is {busiest} a label? {labels}; {edges}"
        raise ConfigError(
            f"{_first(paths, present, busiest)}: binary masks hold a third value {busiest} between {low} and "
            f"{high} ({_values(values)}); {hint}"
        )
    # colour masks: two hues, each a real share of the lit pixels
    strong = torch.nonzero(hues >= max(1, MIN_LABEL_SHARE * int(hues.sum()))).flatten()
    if len(strong) > 1:
        second = int(strong[hues[strong].argsort(descending=True)[1]])
        raise ConfigError(
            f"{_first(paths, hue_present, second)}: masks of {len(strong)} colours read as binary; "
            "for one class per colour use data.mask_mode: rgb with data.colors"
        )
    return midpoint


def _first(paths: Sequence[Path], present: torch.Tensor, value: int) -> Path:
    """The first file in which ``value`` is present."""
    return paths[int(present[:, value].to(torch.uint8).argmax())]


def _values(values: list[int]) -> str:
    return (
        str(values) if len(values) <= 6 else f"{values[:3]} ... {values[-3:]}".replace("] ... [", ", ..., ")
    )
