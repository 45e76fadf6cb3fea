"""Boundary IoU against a direct NumPy/SciPy implementation of the reference code (a zero border, a 3×3
erosion iterated d times, the band = mask − erosion), on shapes; and through test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TinyRun, tiny_args
from scipy import ndimage

from lightning_seg.cli import run_cli
from lightning_seg.metrics.boundary import BoundaryIoU, band_width


def _reference_band(mask: np.ndarray, d: int) -> np.ndarray:
    """bowenc0221/boundary-iou-api's mask_to_boundary, with SciPy's erosion in place of OpenCV's."""
    padded = np.pad(mask, 1)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3)), iterations=d, border_value=1)
    return mask & ~eroded[1:-1, 1:-1]


def _shapes(seed: int, h: int = 50, w: int = 70) -> tuple[torch.Tensor, torch.Tensor]:
    generator = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    target = np.zeros((h, w), dtype=np.int64)
    target[(yy - 20) ** 2 + (xx - 30) ** 2 < 15**2] = 1  # a disc
    target[5:25, 45:68] = 2  # a box cut by no border
    target[40:, :20] = 2  # a box cut by the image border
    target[0:3, 0:10] = 255  # ignored
    prediction = target.copy()
    prediction[prediction == 255] = 0
    shift = generator.integers(-3, 4, size=2)
    prediction = np.roll(prediction, tuple(shift), axis=(0, 1))
    return torch.from_numpy(prediction), torch.from_numpy(target)


def test_boundary_iou_equals_the_reference_on_shapes() -> None:
    metric = BoundaryIoU(3, 255)
    inter, union = np.zeros(3), np.zeros(3)
    for seed in range(3):
        prediction, target = _shapes(seed)
        metric.update(prediction, target)
        t, p = target.numpy(), prediction.numpy()
        d = band_width(*t.shape)
        valid = t != 255
        for c in range(3):
            truth = _reference_band(t == c, d) & valid
            predicted = _reference_band((p == c) & valid, d) & valid  # ignored pixels: a hole on both sides
            inter[c] += (truth & predicted).sum()
            union[c] += (truth | predicted).sum()
    scores = metric.compute()
    expected = inter / union
    np.testing.assert_allclose(scores["boundary_iou"].numpy(), expected, rtol=1e-6)
    assert float(scores["boundary_mIoU"]) == pytest.approx(expected.mean(), rel=1e-6)
    assert 0 < expected.min() < 1  # a shifted shape loses part of its band, not all


def test_test_logs_boundary_iou_on_request(run_root: Path, tiny_run: TinyRun) -> None:
    args = [*tiny_args(run_root), "--ckpt_path", str(tiny_run.last), "--model.init_args.boundary_iou=true"]
    metrics = run_cli(["test", *args]).trainer.callback_metrics
    assert 0.0 <= float(metrics["test/boundary_mIoU"]) <= 1.0
    assert any(name.startswith("test/boundary_IoU/") for name in metrics)


def test_a_perfect_prediction_around_an_ignored_hole_scores_one() -> None:
    target = torch.ones(100, 100, dtype=torch.long)
    target[45:55, 45:55] = 255  # void inside the object, as VOC outlines its objects
    prediction = torch.ones(100, 100, dtype=torch.long)  # the void predicted as the object around it
    metric = BoundaryIoU(2, 255)
    metric.update(prediction, target)
    assert float(metric.compute()["boundary_iou"][1]) == 1.0
