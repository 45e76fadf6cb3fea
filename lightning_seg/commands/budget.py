"""``fit --budget 20m``: measure a few real training and validation batches, then choose ``max_epochs`` so
the learning-rate schedule ends inside the budget.

``trainer.max_time`` alone stops a warmup-cosine or one-cycle schedule wherever the clock runs out, with the
learning rate still high. Here the schedule is sized to the budget instead. A probe (a copy of the model, its
own Trainer with the run's accelerator and precision, no logger, checkpoints in a scratch folder) runs
``PROBE_EPOCHS`` short epochs and times their training steps, their validation batches and the gap between
the epochs (validation's start and end, a checkpoint, the loader's restart); the epochs that fit in what is
left of the budget become ``max_epochs``. Whole epochs alone leave up to one epoch of the budget unused (13%
of a 10-minute CamVid run), so when one more, slightly shorter epoch trains more steps, the plan takes it and
``limit_train_batches`` shortens every epoch alike: each still draws its batches from a fresh shuffle of the
whole training set, and validation and checkpoints run at each epoch's end as usual. The command's start-up
and the probe count against the budget. Like Lightning's learning-rate finder the probe brings its own
Trainer and leaves the run's untouched; the run then starts from the seed as if there had been no probe. No
``max_time`` backstop is set: it would stop the schedule it has just sized.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_seg.errors import ConfigError

BUDGET_OPTION = "budget"
"""fit's wall-clock budget option (not a Trainer argument: LightningCLI passes only those to trainer.fit)."""
PROBE_EPOCHS = 2
PROBE_BATCHES = 4
"""Training batches of each probe epoch: the first pays for the loader's start, the others are timed."""
PROBE_VAL_BATCHES = 3
EPOCH_OVERHEAD = 0.05
"""Share of each epoch's estimate added for what the probe does not run: the run's other callbacks (sample
overlays, plots) and its logger."""
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_budget(text: str) -> float:
    """Seconds of ``"20m"``, ``"1h30m"``, ``"90s"`` or ``"1.5h"``; refused in one line otherwise."""
    match = _DURATION.match(str(text))
    if not match or not any(match.groups()):
        raise ConfigError(f"--budget {text!r}: a duration such as 20m, 1h30m or 90s")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--budget {text!r}: must be longer than 0")
    return total


class _StepClock(Callback):
    """Times (device-synchronised) every training step but each epoch's first, every validation batch but
    each loop's first (they pay for the loaders' start), and ``gap``: from epoch 0's last training step to
    epoch 1's first, less the validation batches in between. The gap is what an epoch costs besides its
    batches: validation's start and end, epoch-end hooks, the training loader's restart."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []
        self.gap: float | None = None
        self._start = 0.0
        self._last_step_end: float | None = None
        self._val_since_step = 0.0

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = self._now(pl_module)
        if batch_idx == 0 and self._last_step_end is not None and self.gap is None:
            self.gap = now - self._last_step_end - self._val_since_step
        self._start = now

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = self._now(pl_module)
        if batch_idx > 0:
            self.train.append(now - self._start)
        self._last_step_end, self._val_since_step = now, 0.0

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._start = self._now(pl_module)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        *args: Any,
    ) -> None:
        seconds = self._now(pl_module) - self._start
        self._val_since_step += seconds
        if batch_idx > 0:
            self.val.append(seconds)


@dataclass(frozen=True)
class BudgetPlan:
    """What the probe measured and the epochs chosen from it."""

    budget_s: float
    startup_s: float
    """Seconds the command spent before the probe (parsing, building the model, loading weights)."""
    probe_s: float
    step_s: float
    val_batch_s: float
    epoch_gap_s: float
    """An epoch's cost besides its batches (validation's start and end, the loader's restart)."""
    steps_per_epoch: int
    """Optimizer steps in a whole pass over the training set."""
    val_batches: int
    epochs: int
    epoch_steps: int
    """Optimizer steps each epoch runs: ``steps_per_epoch``, or fewer when one more, shorter epoch trains
    more steps within the budget."""

    @property
    def fixed_s(self) -> float:
        """An epoch's seconds that do not depend on its training steps: validation and the gap."""
        return self.val_batches * self.val_batch_s + self.epoch_gap_s

    @property
    def epoch_s(self) -> float:
        """The estimated seconds of one epoch of ``epoch_steps``, validation included."""
        return _epoch_s(self.epoch_steps, self.step_s, self.fixed_s)

    def line(self) -> str:
        """One line for the log and the record."""
        steps = (
            f"{self.epoch_steps} steps"
            if self.epoch_steps == self.steps_per_epoch
            else f"{self.epoch_steps} of {self.steps_per_epoch} steps"
        )
        return (
            f"budget {dt.timedelta(seconds=round(self.budget_s))}: measured {self.step_s:.3g} s a training step, "
            f"{self.val_batch_s:.3g} s a validation batch, {self.epoch_gap_s:.2g} s between epochs "
            f"({self.startup_s:.0f} s of start-up, {self.probe_s:.0f} s of probing): {self.epochs} epochs of "
            f"{steps}, about {dt.timedelta(seconds=round(self.epochs * self.epoch_s))}"
        )


def _epoch_s(steps: int, step_s: float, fixed_s: float) -> float:
    return (steps * step_s + fixed_s) * (1 + EPOCH_OVERHEAD)


def fit_epochs(left_s: float, steps: int, step_s: float, fixed_s: float) -> tuple[int, int]:
    """(epochs, steps per epoch) that train the most optimizer steps in ``left_s`` seconds, an epoch costing
    ``steps * step_s + fixed_s`` (plus :data:`EPOCH_OVERHEAD`): as many whole epochs of ``steps`` as fit, or
    one more epoch with each shortened alike when that trains more (on a tie, whole epochs). (0, steps) when
    not one whole epoch fits."""
    whole = math.floor(left_s / _epoch_s(steps, step_s, fixed_s))
    if whole < 1:
        return 0, steps
    more = whole + 1
    shorter = math.floor((left_s / more / (1 + EPOCH_OVERHEAD) - fixed_s) / step_s)
    if shorter >= 1 and more * min(steps, shorter) > whole * steps:
        return more, min(steps, shorter)
    return whole, steps


def plan_epochs(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    budget_s: float,
    startup_s: float = 0.0,
) -> BudgetPlan:
    """Probe a copy of ``model`` on ``datamodule`` with ``trainer``'s accelerator, devices and precision, and
    return the epochs that fit in ``budget_s`` (``startup_s``, the command's time before this call, and the
    probe's own time deducted).

    Raises ConfigError in one line when not even one epoch fits, naming the budget that would."""
    start = time.perf_counter()
    clock = _StepClock()
    scratch = tempfile.mkdtemp(prefix="lightning_seg_budget_")  # nothing of the probe lands in the run
    probe = L.Trainer(
        default_root_dir=scratch,
        accelerator=trainer.accelerator,
        devices=1,
        precision=trainer.precision,
        max_epochs=PROBE_EPOCHS,
        limit_train_batches=PROBE_BATCHES,
        limit_val_batches=PROBE_VAL_BATCHES if trainer.limit_val_batches != 0 else 0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # a checkpoint every epoch, as the run writes (best and last): its cost is part of the gap
        callbacks=[clock, ModelCheckpoint(dirpath=scratch, save_last=True)],
    )
    probe_model = copy.deepcopy(model)
    try:
        with torch.random.fork_rng(devices=[]):  # the run's own random draws stay as without a probe
            probe.fit(probe_model, datamodule=datamodule)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        del probe_model
    if not clock.train or clock.gap is None:
        raise ConfigError(
            "--budget: the probe could not time training steps (fewer than 2 training batches?)"
        )
    train_batches = _batches(trainer.limit_train_batches, len(datamodule.train_dataloader()))
    steps = max(1, train_batches // max(1, trainer.accumulate_grad_batches))
    val_limit = trainer.limit_val_batches
    val_batches = _batches(val_limit, len(datamodule.val_dataloader())) if val_limit != 0 else 0
    step_s = statistics.median_high(clock.train) * max(1, trainer.accumulate_grad_batches)
    val_s = statistics.median_high(clock.val) if clock.val else 0.0
    probe_s = time.perf_counter() - start
    measured = BudgetPlan(
        budget_s, startup_s, probe_s, step_s, val_s, max(clock.gap, 0.0), steps, val_batches, 1, steps
    )
    epochs, epoch_steps = fit_epochs(budget_s - startup_s - probe_s, steps, step_s, measured.fixed_s)
    if epochs < 1:
        needed = startup_s + probe_s + measured.epoch_s
        raise ConfigError(
            f"--budget {budget_s:g}s is shorter than one epoch here ({measured.line()}); give at least "
            f"{math.ceil(needed)}s"
        )
    return replace(measured, epochs=epochs, epoch_steps=epoch_steps)


def _batches(limit: int | float | None, total: int) -> int:
    """Batches an epoch runs of a loader of ``total``, with a Trainer's ``limit_*_batches`` applied (an int
    counts batches, a float a share; 0 turns the loop off)."""
    if limit is None:
        return total
    return int(min(total, limit)) if isinstance(limit, int) else int(total * float(limit))
