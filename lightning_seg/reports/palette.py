"""Colours of the classes: PASCAL VOC's palette for the first 21, then distinct hues for any number more."""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Iterator

import torch

from lightning_seg.errors import ConfigError

_GOLDEN = (5**0.5 - 1) / 2
"""Hue step of the colours after the first 21: consecutive classes land far apart on the colour wheel."""


def _voc_colour(index: int) -> tuple[int, int, int]:
    """PASCAL VOC's bit-interleaved colour of ``index``: a one-to-one map of 0..2^24-1 onto the RGB cube."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= (index & 1) << shift
        g |= (index >> 1 & 1) << shift
        b |= (index >> 2 & 1) << shift
        index >>= 3
    return r, g, b


def _extra_colours() -> Iterator[tuple[int, int, int]]:
    """Candidate colours after the first 21: golden-ratio hue steps cycling through four saturation and
    brightness levels (neighbours differ in hue and shade), then every RGB colour in VOC order, so that any
    number of classes finds distinct ones (the caller skips repeats)."""
    levels = ((0.85, 0.9), (0.5, 1.0), (0.95, 0.6), (0.45, 0.75))  # (saturation, value): never black/white
    for n in range(4096):
        saturation, value = levels[n % len(levels)]
        rgb = colorsys.hsv_to_rgb((n * _GOLDEN) % 1.0, saturation, value)
        red, green, blue = (round(255 * c) for c in rgb)
        yield red, green, blue
    for index in range(1, 1 << 24):
        yield _voc_colour(index)


@functools.lru_cache(maxsize=16)
def _palette_rows(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """The K distinct RGB rows of :func:`default_palette` (cached: every figure asks for them)."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    first = [(0.0, 0.0, 0.0)] + [tab20[(2 * i) % 20 + (2 * i) // 20 % 2] for i in range(20)]
    # the tab20 rows as they always were: users' colour PNGs of up to 21 classes stay the same
    rows = [(round(255 * r), round(255 * g), round(255 * b)) for r, g, b in first[:num_classes]]
    taken = {*rows, (0, 0, 0), (255, 255, 255)}  # white: the colour of ignored pixels in the drawings
    candidates = _extra_colours()
    while len(rows) < num_classes:
        colour = next(candidates, None)
        if colour is None:
            raise ConfigError(f"default_palette: {num_classes} classes is more than RGB has distinct colours")
        if colour not in taken:
            rows.append(colour)
            taken.add(colour)
    return tuple(rows)


def default_palette(num_classes: int) -> torch.Tensor:
    """uint8 K×3 colours, distinct for any K: black background, then matplotlib's tab20 hues (the first 21
    rows, the same for every K), then golden-ratio hue steps at alternating shades (then the rest of the
    RGB cube), never repeating a colour, black or white (ignored pixels)."""
    return torch.tensor(_palette_rows(num_classes), dtype=torch.uint8).reshape(-1, 3)


def colourize(mask: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """int64 H×W class indices → uint8 3×H×W colours (one gather, no loops over pixels)."""
    # long indices: a uint8 index tensor would be read as a boolean mask
    return palette[mask.long().clamp(0, len(palette) - 1)].permute(2, 0, 1).contiguous()
