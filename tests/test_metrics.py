"""Metrics against an independent computation (scikit-learn's confusion matrix and NumPy formulas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from lightning_seg.metrics import SegMetrics, WeightedMean, per_image_foreground_iou, scores_from_confusion

IGNORE = 255


def _random_batch(generator: torch.Generator, num_classes: int, absent: int | None = None):
    target = torch.randint(0, num_classes, (3, 17, 23), generator=generator)
    pred = torch.randint(0, num_classes, (3, 17, 23), generator=generator)
    if absent is not None:  # a class that appears in neither targets nor predictions
        target[target == absent] = 0
        pred[pred == absent] = 0
    target[torch.rand(target.shape, generator=generator) < 0.2] = IGNORE
    return pred, target


def _numpy_scores(preds, targets, num_classes):
    t = torch.cat([x.flatten() for x in targets]).numpy()
    p = torch.cat([x.flatten() for x in preds]).numpy()
    keep = t != IGNORE
    cm = confusion_matrix(t[keep], p[keep], labels=list(range(num_classes)))
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    present = (tp + fp + fn) > 0
    iou = np.full(num_classes, np.nan)
    iou[present] = tp[present] / (tp + fp + fn)[present]
    dice = np.full(num_classes, np.nan)
    dice[present] = 2 * tp[present] / (2 * tp + fp + fn)[present]
    return cm, iou, dice, tp.sum() / cm.sum()


@pytest.mark.parametrize("absent", [None, 3])
def test_seg_metrics_match_sklearn_over_several_batches(absent) -> None:
    generator = torch.Generator().manual_seed(0)
    num_classes = 5
    metrics = SegMetrics(num_classes, IGNORE)
    preds, targets = [], []
    for _ in range(4):
        pred, target = _random_batch(generator, num_classes, absent)
        metrics.update(pred, target)
        preds.append(pred)
        targets.append(target)
    scores = metrics.compute()
    cm, iou, dice, acc = _numpy_scores(preds, targets, num_classes)
    np.testing.assert_array_equal(scores["confusion"].numpy(), cm)
    np.testing.assert_allclose(scores["iou"].numpy(), iou, rtol=1e-6)
    # absent classes are NaN and excluded from the mean, not counted as 0
    assert np.isnan(scores["iou"].numpy()).sum() == (0 if absent is None else 1)
    assert scores["mIoU"].item() == pytest.approx(np.nanmean(iou), rel=1e-6)
    assert scores["dice"].item() == pytest.approx(np.nanmean(dice), rel=1e-6)
    assert scores["dice_fg"].item() == pytest.approx(np.nanmean(dice[1:]), rel=1e-6)
    assert scores["acc"].item() == pytest.approx(acc, rel=1e-6)


def test_perfect_prediction_scores_one_and_reset_clears() -> None:
    target = torch.tensor([[[0, 1], [2, IGNORE]]])
    metrics = SegMetrics(3, IGNORE)
    metrics.update(torch.tensor([[[0, 1], [2, 0]]]), target)
    scores = metrics.compute()
    assert scores["mIoU"].item() == 1.0 and scores["acc"].item() == 1.0
    metrics.reset()
    assert not metrics.updated


def test_binary_task_reports_foreground_and_per_image_iou() -> None:
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, :2] = 1  # image 0: 8 foreground pixels
    pred = torch.zeros_like(target)
    pred[0, :1] = 1  # image 0: 4 of them found; image 1: empty and predicted empty → IoU 1
    metrics = SegMetrics(2, IGNORE)
    metrics.update(pred, target)
    scores = metrics.compute()
    assert scores["IoU_fg"].item() == pytest.approx(0.5)
    assert scores["image_IoU"].item() == pytest.approx((0.5 + 1.0) / 2)
    per_image = per_image_foreground_iou(pred, target, IGNORE)
    assert per_image.tolist() == pytest.approx([0.5, 1.0])


def test_scores_from_confusion_handles_an_empty_matrix() -> None:
    scores = scores_from_confusion(torch.zeros(3, 3, dtype=torch.long))
    assert torch.isnan(scores["mIoU"]) and scores["acc"].item() == 0.0


def test_weighted_mean_weights_by_batch_size() -> None:
    mean = WeightedMean()
    mean.update(torch.tensor(1.0), 4)
    mean.update(torch.tensor(2.0), 3)
    assert mean.compute().item() == pytest.approx((4 * 1.0 + 3 * 2.0) / 7)
