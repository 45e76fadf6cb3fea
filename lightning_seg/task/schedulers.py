"""Learning-rate schedules that torch lacks in the form segmentation papers use, stepped per optimizer step.

``total_steps=None`` is filled in by :class:`~lightning_seg.task.module.SegmentationModule` with the run's
number of optimizer steps (``trainer.estimated_stepping_batches``), as it does for ``OneCycleLR``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lightning_seg.errors import ConfigError


def _warmup_then(
    total_steps: int | None, warmup: float, decay: Callable[[float], float]
) -> Callable[[int], float]:
    """LambdaLR factor: linear warmup over ``warmup`` (fraction if < 1, else steps), then ``decay(progress)``."""
    if total_steps is None:
        raise ConfigError("lr_scheduler.total_steps is null and no trainer filled it in")
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay(min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    # the schedule's length, read by ScheduleTimeCheck; on the function, not the scheduler, whose
    # state_dict would restore a resumed run's old length over the one its schedule uses
    factor.total_steps = total_steps  # type: ignore[attr-defined]
    return factor


class WarmupCosineLR(LambdaLR):
    """Linear warmup from 0 then cosine decay to ``min_lr_ratio`` × base lr.

    Args:
        optimizer: the optimizer.
        total_steps: optimizer steps in the run (None: filled in by the module).
        warmup: warmup length, a fraction of ``total_steps`` if < 1, else a number of steps.
        min_lr_ratio: final lr as a fraction of the base lr.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup: float = 0.05,
        min_lr_ratio: float = 0.0,
    ) -> None:
        def cosine(progress: float) -> float:
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, _warmup_then(total_steps, warmup, cosine))


class PolyLR(LambdaLR):
    """Optional linear warmup, then polynomial decay ``(1 - t)**power`` (DeepLab's "poly" policy).

    Args:
        optimizer: the optimizer.
        total_steps: optimizer steps in the run (None: filled in by the module).
        power: decay exponent (0.9 in DeepLab).
        warmup: warmup length, a fraction of ``total_steps`` if < 1, else a number of steps.
    """

    def __init__(
        self, optimizer: Optimizer, total_steps: int | None = None, power: float = 0.9, warmup: float = 0.0
    ) -> None:
        super().__init__(
            optimizer, _warmup_then(total_steps, warmup, lambda progress: (1 - progress) ** power)
        )
