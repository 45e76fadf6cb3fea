"""``fit`` without a val split (``data.refit``, or ``val_fraction: 0`` without a val list): the final model on
all the training data, as the source notebooks trained their submissions.

Nothing is validated, so nothing can be monitored: every checkpoint callback that watches a metric is
replaced by one that keeps the latest epoch (``epoch{epoch:03d}.ckpt`` and ``last.ckpt``), ``EarlyStopping``
is left out, and a scheduler that steps on a validation metric (ReduceLROnPlateau) is refused. One line says
what is off. The data module says whether it validates (:attr:`SegDataModule.validates`); the trainer is
told ``limit_val_batches=0``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_seg.callbacks.checkpoint import ModelCheckpoint
from lightning_seg.errors import ConfigError
from lightning_seg.task.net_builder import builder_class

EPOCH_FILENAME = "epoch{epoch:03d}"
TRAINER_OPTIONS = {"limit_val_batches": 0, "num_sanity_val_steps": 0}
"""What the trainer is told: no validation batches, no sanity check."""


def without_validation(callbacks: list[L.Callback], model: Any) -> tuple[list[L.Callback], str]:
    """``callbacks`` for a run without validation, and the line that says what changed.

    Raises:
        ConfigError: in one line, for a scheduler that steps on a validation metric.
    """
    builder = getattr(model, "scheduler_builder", None)
    scheduler = builder_class(builder) if builder is not None else None
    if scheduler is not None and issubclass(scheduler, ReduceLROnPlateau):
        raise ConfigError(
            f"model.lr_scheduler ReduceLROnPlateau steps on {getattr(model, 'scheduler_monitor', 'a val metric')}, "
            "and this run has no val split (data.refit / val_fraction 0); use a schedule by steps (WarmupCosineLR, "
            "OneCycleLR)"
        )
    kept: list[L.Callback] = []
    changed: list[str] = []
    for callback in callbacks:
        if isinstance(callback, EarlyStopping):
            changed.append(f"EarlyStopping on {callback.monitor} left out")
            continue
        if isinstance(callback, LightningModelCheckpoint) and callback.monitor is not None:
            changed.append(f"checkpoints by epoch instead of by {callback.monitor}")
            callback = ModelCheckpoint(
                dirpath=callback.dirpath,
                filename=EPOCH_FILENAME,
                auto_insert_metric_name=False,
                save_last=True,
                save_top_k=1,
                last_every_n_train_steps=getattr(callback, "last_every_n_train_steps", None),
            )
        kept.append(callback)
    line = "fit: no val split (data.refit, or val_fraction 0 without a val list): nothing is validated" + (
        f"; {', '.join(changed)}" if changed else ""
    )
    return kept, line
