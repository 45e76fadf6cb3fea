"""The optimizer and learning-rate schedule of a module, from the config's builders: a null ``total_steps``
filled in with the run's optimizer-step count, the scheduler's interval chosen by what it counts, and an
``eps`` that vanishes in the weights' dtype refused."""

from __future__ import annotations

import functools
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lightning_seg.errors import ConfigError
from lightning_seg.task.schedulers import PolyLR, WarmupCosineLR


def default_optimizer(params: Any) -> torch.optim.Optimizer:
    """AdamW, lr 1e-3, weight decay 1e-4 (``model.optimizer`` unset)."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


def scheduler_with_total_steps(
    builder: LRSchedulerCallable, total_steps: int
) -> tuple[LRSchedulerCallable, bool]:
    """The scheduler builder with a null ``total_steps`` filled in with ``total_steps`` (the run's
    optimizer-step count), and whether it was; OneCycleLR given epochs + steps_per_epoch is left alone."""
    keywords = getattr(builder, "keywords", {}) or {}
    if "total_steps" in keywords and keywords["total_steps"] is None and keywords.get("epochs") is None:
        return functools.partial(builder, total_steps=total_steps), True
    return builder, False


def check_precision(optimizer: torch.optim.Optimizer, dtype: torch.dtype, precision: Any) -> None:
    """Refuse an ``eps`` that is 0 in the weights' ``dtype``: with ``precision: 16-true`` Adam's state is
    float16, its default eps 1e-8 rounds to 0 there, and a parameter without gradient divides 0 by 0 (NaN
    at the first step)."""
    for group in optimizer.param_groups:
        eps = group.get("eps")
        if isinstance(eps, float) and 0 < eps and torch.tensor(eps, dtype=dtype) == 0:
            raise ConfigError(
                f"model.optimizer eps {eps:g} is 0 in {dtype} (trainer.precision {precision}): "
                f"{type(optimizer).__name__} would divide by it; set model.optimizer.init_args.eps: 1e-4, or use "
                "a mixed precision (16-mixed, bf16-mixed)"
            )


def counts_steps(scheduler: Any) -> bool:
    """Schedules whose length is a number of optimizer steps by definition."""
    return isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR | WarmupCosineLR | PolyLR)


def optimizer_config(
    parameters: list[torch.nn.Parameter],
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None,
    interval: str | None,
    monitor: str,
    total_steps: int,
    precision: Any,
) -> Any:
    """What ``configure_optimizers`` returns: the optimizer of the trainable ``parameters``, and the
    scheduler with its interval ("step" for schedules measured in steps unless ``interval`` says) and
    ``monitor`` (ReduceLROnPlateau: per epoch)."""
    built = optimizer(parameters)
    dtype = next((p.dtype for p in parameters if p.is_floating_point()), torch.float32)
    check_precision(built, dtype, precision)
    if lr_scheduler is None:
        return built
    builder, filled = scheduler_with_total_steps(lr_scheduler, total_steps)
    scheduler = builder(built)
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        interval = "epoch"
    else:
        interval = interval or ("step" if filled or counts_steps(scheduler) else "epoch")
    config = {"scheduler": scheduler, "interval": interval, "monitor": monitor}
    return {"optimizer": built, "lr_scheduler": config}


class ConfiguredOptimizers:
    """The optimizer hooks of this project's LightningModules, from what their configs hold:
    ``optimizer_builder``, ``scheduler_builder`` (or None), ``scheduler_interval`` and ``scheduler_monitor``
    (set in their ``__init__``)."""

    optimizer_builder: OptimizerCallable
    scheduler_builder: LRSchedulerCallable | None
    scheduler_interval: str | None
    scheduler_monitor: str

    def scheduler_with_total_steps(self, total_steps: int) -> tuple[LRSchedulerCallable, bool]:
        """The scheduler builder with a null ``total_steps`` filled in (see :func:`scheduler_with_total_steps`)."""
        assert self.scheduler_builder is not None
        return scheduler_with_total_steps(self.scheduler_builder, total_steps)

    def configure_optimizers(self) -> Any:
        # only trainable parameters: a finetuning callback adds the frozen backbone as its own group later
        trainer = self.trainer  # type: ignore[attr-defined]
        return optimizer_config(
            [p for p in self.parameters() if p.requires_grad],  # type: ignore[attr-defined]
            self.optimizer_builder,
            self.scheduler_builder,
            self.scheduler_interval,
            self.scheduler_monitor,
            int(trainer.estimated_stepping_batches) if self.scheduler_builder is not None else 0,
            trainer.precision,
        )
