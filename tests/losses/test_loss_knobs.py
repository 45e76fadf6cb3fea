"""The loss knobs the source notebooks used, each against a direct formula: focal α, focal-Tversky γ, Dice
smoothing, class-balanced weights by the effective number of samples, and a background factor on any rule."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lightning_seg.data.stats import ClassStatistics
from lightning_seg.errors import ConfigError
from lightning_seg.losses import CompoundLoss
from lightning_seg.models.outputs import NetOutput

IGNORE = 255
K = 4


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits B×K×H×W, a mask with ignored pixels, its one-hot (zero where ignored) and the valid map."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, K, 8, 8, generator=generator)
    mask = torch.randint(0, K, (2, 8, 8), generator=generator)
    mask[:, :2] = IGNORE
    valid = (mask != IGNORE)[:, None].float()
    onehot = F.one_hot(torch.where(mask == IGNORE, 0, mask), K).permute(0, 3, 1, 2).float() * valid
    return logits, mask, onehot, valid


def _term(name: str, logits: torch.Tensor, mask: torch.Tensor, **options) -> float:
    return float(
        CompoundLoss(weights={name: 1.0}, **options).for_task(K, IGNORE)(NetOutput(logits), mask)[name]
    )


def test_focal_alpha_weighs_positives_by_alpha_and_negatives_by_one_minus_alpha() -> None:
    logits, mask, onehot, valid = _data()
    p = logits.sigmoid()
    p_t = p * onehot + (1 - p) * (1 - onehot)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    alpha_t = 0.25 * onehot + 0.75 * (1 - onehot)
    per_class = (alpha_t * (1 - p_t) ** 2 * bce * valid).sum((0, 2, 3)) / valid.sum()
    assert _term("focal", logits, mask, focal_alpha=0.25) == pytest.approx(float(per_class.mean()), rel=1e-5)
    assert _term("focal", logits, mask, focal_alpha=0.25) != pytest.approx(
        _term("focal", logits, mask), rel=1e-3
    )


def test_focal_tversky_raises_the_tversky_loss_to_gamma() -> None:
    logits, mask, onehot, valid = _data()
    p = logits.softmax(1) * valid
    tp, fp, fn = (
        (p * onehot).sum((0, 2, 3)),
        (p * (1 - onehot)).sum((0, 2, 3)),
        ((1 - p) * onehot).sum((0, 2, 3)),
    )
    index = tp / (tp + 0.3 * fp + 0.7 * fn).clamp_min(1e-7)
    present = onehot.sum((0, 2, 3)) > 0
    plain = ((1 - index) * present).mean()
    options = {"tversky_alpha": 0.3, "tversky_beta": 0.7}
    assert _term("tversky", logits, mask, **options) == pytest.approx(float(plain), rel=1e-5)
    # SMP's focal Tversky: the class-averaged loss to the power gamma
    focal = _term("tversky", logits, mask, tversky_gamma=0.75, **options)
    assert focal == pytest.approx(float(plain**0.75), rel=1e-5)


def test_dice_smooth_adds_to_numerator_and_denominator() -> None:
    logits, mask, onehot, valid = _data()
    p = logits.softmax(1) * valid
    inter, card = (p * onehot).sum((0, 2, 3)), (p + onehot).sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    expected = ((1 - (2 * inter + 1.0) / (card + 1.0)) * present).mean()
    assert _term("dice", logits, mask, dice_smooth=1.0) == pytest.approx(float(expected), rel=1e-5)


def test_effective_number_weights_follow_cui_and_a_background_factor_applies_once() -> None:
    images = torch.tensor([100, 10, 1, 0])
    stats = ClassStatistics(images * 50, images * 400, images, ignored_pixels=0, num_images=100)
    beta = 0.99
    raw = (1 - beta) / (1 - beta ** images[:3].double())
    expected = raw * 3 / raw.sum()
    torch.testing.assert_close(stats.weights("effective_number", beta)[:3], expected.float())
    assert float(stats.weights("effective_number", beta)[3]) == 0.0  # absent class
    torch.testing.assert_close(stats.weights("effective_number", 0.0)[:3], torch.ones(3))  # β 0: equal
    # the rule's β and the background factor reach the data's statistics through the loss
    asked = []

    def source(rule: str, given_beta: float) -> torch.Tensor:
        asked.append((rule, given_beta))
        return stats.weights(rule, given_beta)

    loss = CompoundLoss(class_weights="effective_number", class_weight_beta=beta, background_weight=10.0)
    made = loss.for_task(K, IGNORE, class_weight_source=source)
    logits, mask, _, _ = _data()
    made(NetOutput(logits), mask)
    assert asked == [("effective_number", beta)]
    resolved = stats.weights("effective_number", beta)
    torch.testing.assert_close(made.weight_tensor, resolved * torch.tensor([10.0, 1, 1, 1]))
    made.set_class_weights(made.weight_tensor)  # restored from a checkpoint: not multiplied again
    torch.testing.assert_close(made.weight_tensor[0], resolved[0] * 10)
    # on a list, and with no weights at all
    listed = CompoundLoss(class_weights=[1.0, 2.0, 3.0, 4.0], background_weight=10.0).for_task(K, IGNORE)
    assert listed.weight_tensor.tolist() == [10.0, 2.0, 3.0, 4.0]
    plain = CompoundLoss(weights={"ce": 1.0}, background_weight=10.0).for_task(K, IGNORE)
    assert plain.weight_tensor.tolist() == [10.0, 1.0, 1.0, 1.0]
    expected_ce = F.cross_entropy(logits, mask, weight=torch.tensor([10.0, 1, 1, 1]), ignore_index=IGNORE)
    assert float(plain(NetOutput(logits), mask)["ce"]) == pytest.approx(float(expected_ce), rel=1e-6)


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("class_weight_beta", 1.0, "class_weight_beta must be in [0, 1)"),
        ("focal_alpha", 1.5, "focal_alpha must be in [0, 1] or null"),
        ("background_weight", 0.0, "background_weight must be > 0"),
        ("dice_smooth", -1.0, "dice_smooth must be >= 0"),
        ("tversky_gamma", 0.0, "tversky_gamma must be > 0"),
    ],
)
def test_bad_knobs_are_one_line(option: str, value: float, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", "\\[").replace("(", "\\(").replace(")", "\\)")):
        CompoundLoss(**{option: value})
