"""Run-length encoding for submission files (lightning_seg.submission.rle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_seg.submission import decode, decode_class_planes, encode, encode_class_planes


def _reference_encode(mask: np.ndarray, order: str) -> str:
    """A plain Python loop over the pixels: the runs of True as 1-based ``start length`` pairs."""
    pairs: list[int] = []
    start = None
    flat = mask.ravel(order=order).tolist() + [False]
    for i, value in enumerate(flat):
        if value and start is None:
            start = i
        elif not value and start is not None:
            pairs += [start + 1, i - start]
            start = None
    return " ".join(map(str, pairs))


def test_class_planes_exact_example() -> None:
    # planes (class 1, 2, 3) of [[0, 1], [2, 1]] stacked and flattened: 0 1 0 1 | 0 0 1 0 | 0 0 0 0
    class_map = np.array([[0, 1], [2, 1]])
    assert encode_class_planes(class_map, [1, 2, 3]) == "2 1 4 1 7 1"
    planes = decode_class_planes("2 1 4 1 7 1", 3, 2, 2)
    np.testing.assert_array_equal(planes, np.stack([class_map == c for c in (1, 2, 3)]))


def test_class_planes_column_major() -> None:
    # F order inside each plane: class 1 plane [[0,1],[0,1]] → 0 0 1 1; class 2 plane [[0,0],[1,0]] → 0 1 0 0
    class_map = np.array([[0, 1], [2, 1]])
    assert encode_class_planes(class_map, [1, 2], order="F") == "3 2 6 1"
    np.testing.assert_array_equal(
        decode_class_planes("3 2 6 1", 2, 2, 2, order="F"), np.stack([class_map == 1, class_map == 2])
    )


@pytest.mark.parametrize("order", ["C", "F"])
def test_class_planes_round_trip(order: str) -> None:
    rng = np.random.default_rng(4)
    class_map = rng.integers(0, 5, size=(7, 11))
    classes = [4, 1, 2]
    rle = encode_class_planes(torch.from_numpy(class_map), classes, order=order)
    planes = decode_class_planes(rle, len(classes), 7, 11, order=order)
    assert planes.shape == (3, 7, 11) and planes.dtype == bool
    np.testing.assert_array_equal(planes, np.stack([class_map == c for c in classes]))


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", [(1,), (13,), (5, 7), (3, 4, 6), (64, 48)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_round_trip_on_random_masks(order: str, shape: tuple[int, ...], density: float) -> None:
    rng = np.random.default_rng([ord(order), *shape, int(density * 100)])
    mask = rng.random(shape) < density
    rle = encode(mask, order=order)
    assert rle == _reference_encode(mask, order)
    decoded = decode(rle, shape, order=order)
    assert decoded.dtype == bool and decoded.shape == shape
    np.testing.assert_array_equal(decoded, mask)


def test_row_major_and_column_major_differ() -> None:
    mask = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    assert encode(mask) == "2 3"
    assert encode(mask, order="F") == "2 2 5 1"


def test_empty_and_full_masks() -> None:
    assert encode(np.zeros((4, 5), dtype=bool)) == ""
    assert encode(np.zeros((0,), dtype=bool)) == ""
    np.testing.assert_array_equal(decode("", (4, 5)), np.zeros((4, 5), dtype=bool))
    np.testing.assert_array_equal(decode("   ", (2, 2)), np.zeros((2, 2), dtype=bool))
    assert encode(np.ones((4, 5), dtype=bool)) == "1 20"
    assert encode(np.ones((4, 5), dtype=bool), order="F") == "1 20"
    np.testing.assert_array_equal(decode("1 20", (4, 5)), np.ones((4, 5), dtype=bool))


def test_torch_tensors_are_accepted() -> None:
    mask = torch.tensor([[False, True], [True, True]])
    assert encode(mask) == encode(mask.numpy()) == "2 3"
    assert encode(torch.tensor([[0, 3], [0, 1]])) == "2 1 4 1"  # non-bool: nonzero is True


def test_adjacent_runs_decode_as_one() -> None:
    np.testing.assert_array_equal(decode("1 2 3 1", (5,)), [True, True, True, False, False])
    np.testing.assert_array_equal(decode("10 3", (3, 4)).ravel(), [False] * 9 + [True] * 3)  # to the end


@pytest.mark.parametrize(
    ("rle", "problem"),
    [
        ("1 2 5", "odd number of values"),
        ("1 2 x 1", "integers"),
        ("1.5 2", "integers"),
        ("0 2", "1-based"),
        ("-3 2", "1-based"),
        ("1 0", "non-positive length"),
        ("3 -1", "non-positive length"),
        ("5 1 2 1", "starts must increase"),
        ("1 3 2 1", "starts must increase"),
        ("4 1 4 1", "starts must increase"),
        ("11 3", "past the end"),
        ("13 1", "past the end"),
        ("1 99999999999999999", "past the end"),
        ("9223372036854775807 9223372036854775807", "past the end"),
    ],
)
def test_malformed_strings_are_refused(rle: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        decode(rle, (3, 4))
    assert "\n" not in str(caught.value)


def test_bad_order_and_class_map_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="order"):
        encode(np.zeros(3, dtype=bool), order="X")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="H×W"):
        encode_class_planes(np.zeros((2, 2, 2), dtype=int), [1])
