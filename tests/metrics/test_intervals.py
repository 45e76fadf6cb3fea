"""Bootstrap intervals over images: the point estimate is the test metric itself, the intervals cover a known
value as often as they claim, and a paired difference between two models is computed on the same resamples."""

from __future__ import annotations

import pytest
import torch

from lightning_seg.metrics import SegMetrics
from lightning_seg.metrics.intervals import bootstrap_intervals, paired_differences, scores_of_counts

NAMES = ["background", "a", "b", "c"]


def _random_maps(seed: int, images: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, (images, 9, 9), generator=generator)
    target[0] = 255  # a wholly ignored image counts in no metric
    target[1, :3] = 255
    noise = torch.randint(0, 4, target.shape, generator=generator)
    pred = torch.where(torch.rand(target.shape, generator=generator) < 0.6, target.clamp(max=3), noise)
    return pred, target


def test_the_evaluation_itself_gives_each_test_metric() -> None:
    pred, target = _random_maps(0)
    metrics = SegMetrics(4, 255, keep_per_image=True)
    metrics.update(pred[:5], target[:5])
    metrics.update(pred[5:], target[5:])
    scores = metrics.compute()
    counts = metrics.kept_counts()
    assert counts.shape == (12, 4, 3)
    point = scores_of_counts(torch.ones(1, 12, dtype=torch.float64), counts, NAMES)
    for name in (
        "mIoU",
        "dice",
        "dice_fg",
        "acc",
        "image_dice_fg",
        "image_IoU_fg",
        "image_mIoU",
        "competition_dice",
    ):
        assert float(point[name][0]) == pytest.approx(float(scores[name]), abs=1e-6), name
    for index, name in enumerate(NAMES):
        assert float(point[f"IoU/{name}"][0]) == pytest.approx(float(scores["iou"][index]), abs=1e-6)


def _one_class_counts(generator: torch.Generator, images: int, error: float) -> torch.Tensor:
    """Images of 100 foreground pixels, each missed with probability ``error``: per-image and pooled
    foreground IoU both have expectation 1 - error."""
    missed = torch.binomial(torch.full((images,), 100.0), torch.full((images,), error), generator=generator)
    counts = torch.zeros(images, 2, 3, dtype=torch.long)
    counts[:, 1, 0] = (100 - missed).long()  # TP
    counts[:, 1, 2] = missed.long()  # FN (predicted background)
    counts[:, 0, 1] = missed.long()  # the background's FP
    return counts


def test_95_percent_intervals_cover_the_true_value_in_at_least_93_of_100_trials() -> None:
    generator = torch.Generator().manual_seed(1)
    covered = {"image_IoU_fg": 0, "IoU/fg": 0}
    for trial in range(100):
        counts = _one_class_counts(generator, 150, 0.3)
        intervals = bootstrap_intervals(
            lambda w, c=counts: scores_of_counts(w, c, ["bg", "fg"]), 150, seed=trial
        )
        for name in covered:
            low, high = intervals[name]
            covered[name] += low <= 0.7 <= high
    assert all(hits >= 93 for hits in covered.values()), covered


def test_paired_differences_draw_the_same_images_for_both_models() -> None:
    generator = torch.Generator().manual_seed(2)
    a = _one_class_counts(generator, 80, 0.3)
    b = a.clone()
    better = torch.arange(80) % 2 == 0  # B finds 5 more pixels on every other image
    b[better, 1, 0] += 5
    b[better, 1, 2] -= 5
    b[better, 0, 1] -= 5
    same = paired_differences(*(lambda w, c=c: scores_of_counts(w, c, ["bg", "fg"]) for c in (a, a)), 80)
    assert same["image_IoU_fg"]["difference"] == 0 and same["image_IoU_fg"]["interval"] == [0.0, 0.0]
    diff = paired_differences(*(lambda w, c=c: scores_of_counts(w, c, ["bg", "fg"]) for c in (a, b)), 80)
    row = diff["image_IoU_fg"]
    assert row["difference"] == pytest.approx(0.025)  # 5 of 100 pixels on half the images
    low, high = row["interval"]
    assert 0 < low <= 0.025 <= high  # paired: the shared image-to-image spread cancels
    assert row["p_not_better"] == 0.0
