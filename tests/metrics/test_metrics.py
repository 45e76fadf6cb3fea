"""Metrics against an independent computation (scikit-learn's confusion matrix and NumPy formulas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from lightning_seg.metrics import NamedSums, SegMetrics, per_image_foreground_iou, scores_from_confusion

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
    # by hand, with ignored pixels: image 0's row 0 ignored leaves row 1 as its foreground; predicted rows 0
    # and 2: on the labelled rows 1-3 TP 0, FP 4 (row 2), FN 4 (row 1) → IoU 0; image 1 wholly ignored → 1.0
    target[0, 0] = IGNORE
    pred[0, 2] = 1
    target[1] = IGNORE
    assert per_image_foreground_iou(pred, target, IGNORE).tolist() == [0.0, 1.0]


def test_scores_from_confusion_handles_an_empty_matrix() -> None:
    scores = scores_from_confusion(torch.zeros(3, 3, dtype=torch.long))
    assert torch.isnan(scores["mIoU"]) and scores["acc"].item() == 0.0


def test_named_sums_add_each_name_and_reset() -> None:
    sums = NamedSums()
    sums.update({"ce": torch.tensor([1.0, 4.0]), "aux/dice": torch.tensor([1.0, 2.0, 3.0])})
    sums.update({"ce": torch.tensor([2.0, 3.0]), "aux/dice": torch.tensor([1.0, 1.0, 1.0])})
    total = sums.compute()
    assert total["ce"].tolist() == [3.0, 7.0] and total["aux/dice"].tolist() == [2.0, 3.0, 4.0]
    assert total["ce"].dtype == torch.float64
    sums.reset()
    sums.update({"ce": torch.tensor([1.0, 1.0])})
    assert sums.compute()["ce"].tolist() == [1.0, 1.0]


def _reference_per_image(preds, targets, num_classes):
    """Per-image foreground Dice/IoU with NumPy, one image and one class at a time (K-1 class means)."""
    dice_scores, iou_scores = [], []
    for pred, target in zip(preds, targets, strict=True):
        for p, t in zip(pred.numpy(), target.numpy(), strict=True):
            keep = t != IGNORE
            if not keep.any():  # wholly ignored: not counted
                continue
            p, t = p[keep], t[keep]
            dice, iou = [], []
            for c in range(1, num_classes):
                tp = np.sum((p == c) & (t == c))
                fp = np.sum((p == c) & (t != c))
                fn = np.sum((p != c) & (t == c))
                dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
                iou.append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
            dice_scores.append(dice)
            iou_scores.append(iou)
    return np.mean(dice_scores, 0), np.mean(iou_scores, 0)


def _hand_example():
    target = torch.tensor(
        [
            [[0, 1, 1, 2], [0, 1, IGNORE, 2]],
            # class 2 is predicted on ignored pixels only: absent from both once they are excluded
            [[1, 1, 0, 0], [IGNORE, IGNORE, 0, 0]],
            [[IGNORE] * 4] * 2,  # wholly ignored: skipped, whatever is predicted
        ]
    )
    pred = torch.tensor(
        [
            [[0, 1, 2, 2], [1, 1, 0, 2]],
            [[1, 0, 0, 0], [2, 2, 0, 0]],
            [[1, 1, 2, 2], [1, 1, 2, 2]],
        ]
    )
    return pred, target


def test_per_image_dice_and_iou_by_hand() -> None:
    pred, target = _hand_example()
    # image 0: class 1 TP 2, FP 1, FN 1 → Dice 4/6, IoU 2/4; class 2 TP 2, FP 1, FN 0 → Dice 4/5, IoU 2/3
    # image 1: class 1 TP 1, FP 0, FN 1 → Dice 2/3, IoU 1/2; class 2 absent from both → 1, 1
    # image 2: skipped
    dice = [(4 / 6 + 2 / 3) / 2, (4 / 5 + 1.0) / 2]
    iou = [(2 / 4 + 1 / 2) / 2, (2 / 3 + 1.0) / 2]
    batched = SegMetrics(3, IGNORE)
    batched.update(pred, target)
    one_by_one = SegMetrics(3, IGNORE)  # as test scores images of different sizes: one at a time
    for p, t in zip(pred, target, strict=True):
        one_by_one.update(p[None], t[None])
    for metrics in (batched, one_by_one):
        scores = metrics.compute()
        assert metrics.per_image.images.item() == 2
        assert scores["image_dice_per_class"].dtype == torch.float32
        assert scores["image_dice_per_class"].shape == (2,)
        assert scores["image_dice_per_class"].tolist() == pytest.approx(dice)
        assert scores["image_iou_per_class"].tolist() == pytest.approx(iou)
        assert scores["image_dice_fg"].item() == pytest.approx(np.mean(dice))
        assert scores["image_IoU_fg"].item() == pytest.approx(np.mean(iou))
        assert "image_IoU" not in scores and "IoU_fg" not in scores  # two-class keys only
    batched.reset()
    assert batched.per_image.images.item() == 0 and batched.per_image.dice.sum().item() == 0


@pytest.mark.parametrize("num_classes", [2, 4])
def test_per_image_scores_match_a_python_reference(num_classes) -> None:
    generator = torch.Generator().manual_seed(1)
    metrics = SegMetrics(num_classes, IGNORE)
    preds, targets = [], []
    for _ in range(2):
        target = torch.randint(0, num_classes, (3, 16, 20), generator=generator)
        pred = torch.randint(0, num_classes, (3, 16, 20), generator=generator)
        # image 1 holds the last class nowhere (empty-empty scores 1); image 2 is mostly ignored
        target[1][target[1] == num_classes - 1] = 0
        pred[1][pred[1] == num_classes - 1] = 0
        target[2, :, 3:] = IGNORE
        target[torch.rand(target.shape, generator=generator) < 0.2] = IGNORE
        metrics.update(pred, target)
        preds.append(pred)
        targets.append(target)
    scores = metrics.compute()
    dice, iou = _reference_per_image(preds, targets, num_classes)
    np.testing.assert_allclose(scores["image_dice_per_class"].numpy(), dice, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores["image_iou_per_class"].numpy(), iou, rtol=0, atol=1e-6)
    assert scores["image_dice_fg"].item() == pytest.approx(dice.mean(), abs=1e-6)
    assert scores["image_IoU_fg"].item() == pytest.approx(iou.mean(), abs=1e-6)
    if num_classes == 2:  # the two-class key: the same per-image foreground IoU, the NumPy reference's
        assert scores["image_IoU"].item() == pytest.approx(iou[0], abs=1e-6)


def test_per_image_scores_are_nan_before_any_image_is_counted() -> None:
    metrics = SegMetrics(3, IGNORE)
    metrics.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), IGNORE))
    scores = metrics.compute()
    assert torch.isnan(scores["image_dice_fg"]) and torch.isnan(scores["image_IoU_fg"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_update_does_not_wait_for_the_gpu() -> None:
    pred, target = _hand_example()
    metrics = SegMetrics(3, IGNORE).cuda()
    pred, target = pred.cuda(), target.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics.update(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert metrics.compute()["image_dice_fg"].item() == pytest.approx((2 / 3 + 0.9) / 2)


def test_confusion_update_allocates_no_int64_pixel_temporaries() -> None:
    """The per-step confusion update makes one B·H·W temporary (the bin index, int32 here), not int64 ones
    (a bin index and a tensor of ones, 16 bytes a pixel)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Allocations(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.int64_pixel_buffers: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, tuple | list) else [out]:
                if (
                    isinstance(tensor, torch.Tensor)
                    and tensor.dtype == torch.int64
                    and tensor.untyped_storage().nbytes() >= pixels * 8
                    and not any(tensor.untyped_storage().data_ptr() == p for p in inputs)
                ):
                    self.int64_pixel_buffers.append(str(func))
            return out

    pred = torch.randint(0, 5, (4, 32, 40))
    target = torch.randint(0, 5, (4, 32, 40))
    target[:, :3] = IGNORE
    pixels = target.numel()
    inputs = [pred.untyped_storage().data_ptr(), target.untyped_storage().data_ptr()]
    metrics = SegMetrics(5, IGNORE)
    with Allocations() as seen:
        metrics.update(pred, target)
    assert not seen.int64_pixel_buffers
    valid = target != IGNORE
    expected = torch.zeros(5, 5, dtype=torch.long)
    for t, p in zip(target[valid].tolist(), pred[valid].tolist(), strict=True):
        expected[t, p] += 1
    assert torch.equal(metrics.compute()["confusion"], expected)


def test_an_ignore_index_inside_the_class_range_is_still_ignored() -> None:
    """Data modules refuse an ignore_index in 0..K-1, but the metric alone honours it whatever it is."""
    from lightning_seg.metrics import per_image_confusion

    target = torch.tensor([[[0, 1, 2, 0]]])
    pred = torch.tensor([[[1, 1, 2, 0]]])
    confusion = per_image_confusion(pred, target, 3, ignore_index=0)[0]
    assert confusion[0].sum() == 0 and confusion.sum() == 2


def test_image_miou_averages_each_image_over_its_own_classes_background_included() -> None:
    from lightning_seg.metrics.segmentation import SegMetrics

    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]], [[2, 2, 2, 2], [0, 0, 0, 255]]])
    pred = torch.tensor([[[0, 0, 1, 0], [0, 0, 1, 1]], [[2, 2, 0, 0], [0, 0, 0, 0]]])
    metrics = SegMetrics(3, 255)
    metrics.update(pred, target)
    # image 1: class 0 IoU 4/5, class 1 3/4 (class 2 absent from both: not counted); image 2: class 0 3/5,
    # class 2 2/4 (the ignored pixel counts nowhere)
    expected = ((4 / 5 + 3 / 4) / 2 + (3 / 5 + 2 / 4) / 2) / 2
    scores = metrics.compute()
    assert float(scores["image_mIoU"]) == pytest.approx(expected, abs=1e-6)
    # per-class Dice, pooled, beside per-class IoU
    assert float(scores["dice_per_class"][1]) == pytest.approx(2 * 3 / (2 * 3 + 0 + 1), abs=1e-6)
