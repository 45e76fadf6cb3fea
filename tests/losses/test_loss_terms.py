"""The focal and Lovász terms written without host syncs give SMP's values and gradients."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from lightning_seg.losses.terms import FocalLoss, LovaszLoss

IGNORE = 255


def _batch(channels: int, seed: int, absent: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 B×C×H×W logits and int64 B×H×W targets with ~20% ignored pixels (class ``absent`` never
    occurs)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, channels, 9, 11, generator=generator, dtype=torch.float64) * 2
    classes = max(channels, 2)
    target = torch.randint(0, classes, (3, 9, 11), generator=generator)
    if absent is not None:
        target[target == absent] = (absent + 1) % classes
    target[torch.rand(3, 9, 11, generator=generator) < 0.2] = IGNORE
    return logits, target


def _value_and_gradient(term: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor):
    logits = logits.clone().requires_grad_(True)
    value = term(logits, target)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("channels", [1, 5])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_equals_smp(channels: int, weighted: bool) -> None:
    weights = [0.5, 1.0, 2.0, 1.5, 3.0] if weighted and channels > 1 else None
    mode = "binary" if channels == 1 else "multiclass"
    logits, target = _batch(channels, seed=1)
    ours = _value_and_gradient(FocalLoss(IGNORE, gamma=2.0, class_weights=weights), logits, target)
    theirs = _value_and_gradient(
        smp.losses.FocalLoss(mode, gamma=2.0, ignore_index=IGNORE, class_weights=weights), logits, target
    )
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("channels", [1, 5])
@pytest.mark.parametrize("absent", [None, 2])
def test_lovasz_equals_smp(channels: int, absent: int | None) -> None:
    mode = "binary" if channels == 1 else "multiclass"
    logits, target = _batch(channels, seed=2, absent=absent if channels > 1 else None)
    logits = logits.float()  # SMP's Lovász works in float32 only
    ours = _value_and_gradient(LovaszLoss(IGNORE), logits, target)
    theirs = _value_and_gradient(smp.losses.LovaszLoss(mode, ignore_index=IGNORE), logits, target)
    torch.testing.assert_close(ours, theirs)


def test_lovasz_softmax_of_a_wholly_ignored_batch_is_zero_as_smp() -> None:
    logits, target = _batch(4, seed=3)
    target[:] = IGNORE
    value, gradient = _value_and_gradient(LovaszLoss(IGNORE), logits, target)
    assert value == 0 and torch.count_nonzero(gradient) == 0
