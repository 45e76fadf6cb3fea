"""``ScheduleTimeCheck``: say once when ``max_time`` will stop a run before its schedule ends.

OneCycle, warmup-cosine and poly schedules are measured in optimizer steps from ``max_epochs``; a run stopped
by ``max_time`` halfway ends with the learning rate still high, and its final weights are a mid-schedule
snapshot. After the first epoch of a run (the speed is measured then), this callback projects the steps that
the remaining time allows and warns once, naming the ``max_epochs`` that would fit. The CLI adds one when a
config lists none; it does nothing without ``max_time``.
"""

from __future__ import annotations

import datetime as dt
import math

import lightning as L
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_warn


class ScheduleTimeCheck(L.Callback):
    """Warn when ``trainer.max_time`` will end training before a step-measured LR schedule ends."""

    def __init__(self) -> None:
        self._checked = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._checked:
            return
        self._checked = True
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        total = next(
            filter(None, (_schedule_length(c.scheduler) for c in trainer.lr_scheduler_configs)), None
        )

        if timer is None or timer._duration is None or not total or trainer.global_step == 0:
            return
        elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train") or 0.0
        reachable = trainer.global_step + trainer.global_step / max(elapsed, 1e-9) * remaining
        if reachable >= 0.98 * total:
            return
        per_epoch = trainer.global_step / max(trainer.current_epoch + 1, 1)
        name = type(trainer.lr_scheduler_configs[0].scheduler).__name__
        rank_zero_warn(
            f"max_time {dt.timedelta(seconds=round(timer._duration))} will stop training near step "
            f"{reachable:.0f}, {reachable / total:.0%} of the way through the {total}-step {name} schedule "
            f"(its learning rate will not have come down); trainer.max_epochs: "
            f"{max(1, math.floor(reachable / per_epoch))} fits the schedule in the time"
        )


def _schedule_length(scheduler: object) -> int | None:
    """Optimizer steps of a step-measured schedule: OneCycleLR's ``total_steps``, or that of the factor of
    :class:`~lightning_seg.task.schedulers.WarmupCosineLR` / ``PolyLR``; None for other schedules."""
    if getattr(scheduler, "total_steps", None):
        return int(scheduler.total_steps)  # type: ignore[attr-defined]
    lambdas = getattr(scheduler, "lr_lambdas", None) or [None]
    length = getattr(lambdas[0], "total_steps", None)
    return int(length) if length else None
