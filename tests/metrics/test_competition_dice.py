"""The competition's Dice (``competition_dice``) against a NumPy computation from its definition: the
Dice of each image's stacked foreground planes, averaged over images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_seg.metrics import SegMetrics, competition_dice_per_image, per_image_confusion

IGNORE = 255


def _reference(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float | None:
    """One image's score from the sets of (class ≥ 1, pixel) pairs; None for a wholly void image."""
    valid = target != IGNORE
    if not valid.any():
        return None
    classes = np.arange(1, num_classes)[:, None, None]
    p = (pred[None] == classes) & valid  # (K-1)×H×W stacked foreground planes
    t = (target[None] == classes) & valid
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else 2.0 * (p & t).sum() / total


def _batches(num_classes: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(3):
        target = torch.randint(0, num_classes, (4, 13, 19), generator=generator)
        pred = torch.randint(0, num_classes, (4, 13, 19), generator=generator)
        target[torch.rand(target.shape, generator=generator) < 0.25] = IGNORE
        batches.append((pred, target))
    pred, target = batches[0]
    pred[1] = 0  # image 1: background only in both (void pixels aside) → scores 1
    target[1][target[1] != IGNORE] = 0
    target[2] = IGNORE  # image 2: wholly void → skipped
    pred[3][:, :5] = target[3][:, :5].clamp_max(num_classes - 1)  # image 3: partly right
    return batches


@pytest.mark.parametrize("num_classes", [2, 4])
def test_competition_dice_matches_numpy_image_by_image(num_classes: int) -> None:
    metrics = SegMetrics(num_classes, IGNORE)
    per_image: list[float] = []
    skipped = 0
    for pred, target in _batches(num_classes):
        metrics.update(pred, target)
        confusion = per_image_confusion(pred, target, num_classes, IGNORE)
        dice, counted = competition_dice_per_image(confusion)
        for i, (p, t) in enumerate(zip(pred.numpy(), target.numpy(), strict=True)):
            expected = _reference(p, t, num_classes)
            assert bool(counted[i]) == (expected is not None)
            if expected is None:
                skipped += 1
                continue
            assert np.isclose(dice[i].item(), expected)
            per_image.append(expected)
    assert skipped == 1
    assert per_image[1] == 1.0  # the image empty in both
    scores = metrics.compute()
    assert scores["competition_dice"].dtype == torch.float32
    assert scores["competition_dice"].shape == ()
    assert metrics.competition_dice.images.item() == len(per_image) == 11
    assert np.isclose(scores["competition_dice"].item(), np.mean(per_image))
    metrics.reset()
    assert metrics.competition_dice.images.item() == 0
    assert metrics.competition_dice.dice.item() == 0


def test_competition_dice_is_one_for_a_perfect_prediction() -> None:
    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (5, 8, 8), generator=generator)
    target[0] = 0  # no foreground at all: empty-empty
    target[torch.rand(target.shape, generator=generator) < 0.1] = IGNORE
    pred = torch.where(target == IGNORE, 2, target)  # whatever is predicted on void pixels does not count
    metrics = SegMetrics(3, IGNORE)
    metrics.update(pred, target)
    assert metrics.compute()["competition_dice"].item() == 1.0


def test_competition_dice_ignores_background_and_pools_classes() -> None:
    # one image, 2×4: target [[1,1,1,0],[2,0,0,0]], pred [[1,1,0,0],[1,0,0,0]]
    # P = {(1,a),(1,b),(1,e)}, T = {(1,a),(1,b),(1,c),(2,e)}: 2·2 / (3 + 4) = 4/7, whatever the background
    target = torch.tensor([[[1, 1, 1, 0], [2, 0, 0, 0]]])
    pred = torch.tensor([[[1, 1, 0, 0], [1, 0, 0, 0]]])
    metrics = SegMetrics(3, IGNORE)
    metrics.update(pred, target)
    assert metrics.compute()["competition_dice"].item() == pytest.approx(4 / 7)


def test_competition_dice_is_nan_before_any_image_is_counted() -> None:
    metrics = SegMetrics(3, IGNORE)
    metrics.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), IGNORE))
    assert torch.isnan(metrics.compute()["competition_dice"])
