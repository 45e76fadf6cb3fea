"""Run-length encoding of boolean masks, as competitions ask for in submission files.

A mask is flattened in row-major (``order="C"``) or column-major (``order="F"``) order and each run of
True pixels is written as ``start length`` with a 1-based ``start``; the pairs are joined by single spaces
and an empty mask is the empty string. A 2×3 mask ``[[0, 1, 1], [1, 0, 0]]`` is "2 3" in C order (pixels
2..4) and "2 2 5 1" in F order.

Class maps are submitted as a stack of one plane per class (``class_map == c``), plane-major and then in
``order`` within each plane: :func:`encode_class_planes` / :func:`decode_class_planes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Order = Literal["C", "F"]


def _as_numpy(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy array or a torch tensor (moved to the host)."""
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch.Tensor, without importing torch
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_order(order: str) -> None:
    if order not in ("C", "F"):
        raise ValueError(f'order must be "C" (row-major) or "F" (column-major), got {order!r}')


def encode(mask: Any, order: Order = "C") -> str:
    """The run-length encoding of a boolean mask of any shape.

    Args:
        mask: bool array (a NumPy array or a torch tensor; any other dtype is taken as ``mask != 0``).
        order: "C" flattens row-major, "F" column-major.

    Returns:
        Space-separated ``start length`` pairs with 1-based starts; "" for an empty mask.
    """
    _check_order(order)
    flat = _as_numpy(mask).astype(bool, copy=False).ravel(order=order)
    # pad with False at both ends so every run has a rising and a falling edge
    padded = np.zeros(flat.size + 2, dtype=np.int8)
    padded[1:-1] = flat
    edges = np.flatnonzero(np.diff(padded))  # 0-based index into flat of each edge; start, end, start...
    if edges.size == 0:
        return ""
    runs = edges.reshape(-1, 2)
    runs[:, 1] -= runs[:, 0]  # end (exclusive) → length
    runs[:, 0] += 1  # 1-based starts
    return " ".join(runs.ravel().astype(str).tolist())


def decode(rle: str, shape: tuple[int, ...], order: Order = "C") -> np.ndarray:
    """The boolean mask of ``shape`` that :func:`encode` writes as ``rle``.

    Raises:
        ValueError: a malformed string (a value that is not an integer, an odd number of values, a start
            below 1, a length below 1, runs not in increasing order or overlapping, a run past the end of
            the mask), naming the problem in one line.
    """
    _check_order(order)
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"RLE decode: negative dimension in shape {shape}")
    size = int(np.prod(shape, dtype=np.int64))
    text = rle.strip()
    try:
        values = np.array(text.split(), dtype=np.int64) if text else np.zeros(0, dtype=np.int64)
    except (ValueError, OverflowError):
        raise ValueError(f"RLE decode: values must be integers, got {_preview(text)}") from None
    if values.size % 2:
        raise ValueError(f"RLE decode: odd number of values ({values.size}); expected start/length pairs")
    starts, lengths = values[0::2] - 1, values[1::2]  # 0-based starts
    mask = np.zeros(size, dtype=bool)
    if starts.size == 0:
        return mask.reshape(shape, order=order)
    if (bad := np.flatnonzero(starts < 0)).size:
        raise ValueError(f"RLE decode: run {bad[0] + 1} starts at {starts[bad[0]] + 1}; starts are 1-based")
    if (bad := np.flatnonzero(lengths <= 0)).size:
        raise ValueError(f"RLE decode: run {bad[0] + 1} has non-positive length {lengths[bad[0]]}")
    if (bad := np.flatnonzero((starts >= size) | (lengths > size))).size:  # also keeps the sums below small
        i = bad[0]
        raise ValueError(
            f"RLE decode: run {i + 1} (start {starts[i] + 1}, length {lengths[i]}) ends past the end of the "
            f"mask ({size} pixels for shape {shape})"
        )
    ends = starts + lengths  # exclusive
    if (bad := np.flatnonzero(starts[1:] < ends[:-1])).size:
        i = bad[0] + 1
        raise ValueError(
            f"RLE decode: run {i + 1} (start {starts[i] + 1}) is not after the end of run {i} "
            f"(start {starts[i - 1] + 1}, length {lengths[i - 1]}): starts must increase, runs not overlap"
        )
    if ends[-1] > size:
        raise ValueError(
            f"RLE decode: run {starts.size} (start {starts[-1] + 1}, length {lengths[-1]}) ends past the "
            f"end of the mask ({size} pixels for shape {shape})"
        )
    # runs are sorted and disjoint: +1 at each start, -1 at each end, cumulative sum marks the runs
    marks = np.zeros(size + 1, dtype=np.int8)
    marks[starts] = 1
    marks[ends] -= 1  # -=: an end equal to the next run's start (adjacent runs) cancels to 0
    mask = np.cumsum(marks[:-1], dtype=np.int8) > 0
    return mask.reshape(shape, order=order)


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def encode_class_planes(class_map: Any, classes: Sequence[int], order: Order = "C") -> str:
    """The RLE of the stack of planes ``class_map == c`` for ``c`` in ``classes``.

    The planes form a len(classes)×H×W array flattened plane-major, and within each plane in ``order``
    ("C": row-major, "F": column-major); the pixel of plane i at (y, x) is number
    ``i·H·W + y·W + x + 1`` in C order (``i·H·W + x·H + y + 1`` in F order).

    Args:
        class_map: integer H×W class map (NumPy array or torch tensor).
        classes: the class of each plane, in order.
    """
    _check_order(order)
    class_map = _as_numpy(class_map)
    if class_map.ndim != 2:
        raise ValueError(f"encode_class_planes: class_map must be H×W, got shape {class_map.shape}")
    values = np.asarray(list(classes), dtype=np.int64).reshape(-1, 1, 1)
    planes = class_map[None] == values  # len(classes)×H×W
    # plane-major, then `order` inside each plane: flatten each plane in `order`, then the planes in turn
    if order == "F":
        planes = planes.transpose(0, 2, 1)  # a plane's transpose in C order is the plane in F order
    flat = planes.reshape(planes.shape[0], -1)
    return encode(flat, order="C")


def decode_class_planes(rle: str, num_planes: int, height: int, width: int, order: Order = "C") -> np.ndarray:
    """The bool num_planes×H×W stack of planes that :func:`encode_class_planes` writes as ``rle``.

    Raises:
        ValueError: a malformed string (see :func:`decode`).
    """
    _check_order(order)
    flat = decode(rle, (num_planes, height * width), order="C")
    if order == "C":
        return flat.reshape(num_planes, height, width)
    return flat.reshape(num_planes, width, height).transpose(0, 2, 1).copy()
