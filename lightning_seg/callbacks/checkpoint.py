"""``ModelCheckpoint``: Lightning's, with a ``last.ckpt`` that is always the end of the latest epoch.

Lightning (2.5 and later) rewrites ``last.ckpt`` only in a step where it also wrote a top-k checkpoint, so
with a monitor it follows the best score: a finished 12-epoch run ended with ``last.ckpt`` at epoch 11, and
a run killed in epoch 3 resumed from epoch 1 and silently trained an epoch twice. This subclass writes it at
the end of every epoch (every validation), optionally also every N training steps for long epochs, and never
writes a checkpoint of non-finite weights. Its arguments are Lightning's plus ``last_every_n_train_steps``;
the CLI uses it in place of ``lightning.pytorch.callbacks.ModelCheckpoint`` where a config names that one.

Private API kept on purpose: ``_save_last_checkpoint``, ``_save_checkpoint``, ``_monitor_candidates`` and
``_should_save_on_train_epoch_end`` are ModelCheckpoint's own steps; no public hook says "write last.ckpt
now" or "this save is about to happen", so the subclass calls and extends them (checked against Lightning
2.5 and 2.6 by tests/runs/test_runs.py's resume tests).
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from lightning_seg.callbacks.base import SaveGuard
from lightning_seg.checkpoints.files import nonfinite_tensors, written_checkpoint
from lightning_seg.errors import TrainingDiverged, short_path


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (same arguments) whose ``last.ckpt`` is always the latest epoch's.

    Args:
        last_every_n_train_steps: also rewrite ``last.ckpt`` every this many optimizer steps inside an
            epoch (a killed run then loses at most that many steps); None: at the ends of epochs only.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        last_every_n_train_steps: int | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=save_last,
            save_top_k=save_top_k,
            save_on_exception=save_on_exception,
            save_weights_only=save_weights_only,
            mode=mode,
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=enable_version_counter,
        )
        if last_every_n_train_steps is not None and last_every_n_train_steps < 1:
            raise ValueError(f"last_every_n_train_steps must be >= 1, got {last_every_n_train_steps}")
        self.last_every_n_train_steps = last_every_n_train_steps
        self._last_saved_at_step: int | None = None
        self._last_was_step_save = False
        self._previous_step = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._evaluating = stage != "fit"
        if self.dirpath is None and trainer.loggers and isinstance(trainer.loggers[0], WandbLogger):
            # Lightning would use <save_dir>/<project>/<run id>/checkpoints; the run folder is save_dir
            # (trainer.log_dir), like a TensorBoard run's (see lightning_seg.runs.wandb)
            self.dirpath = str(Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints")
        with warnings.catch_warnings():
            # Lightning's "directory exists and is not empty" is said on every resume, the one case where the
            # CLI lets a fit write into a folder with checkpoints (it refuses a new run there)
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if getattr(self, "_evaluating", False):
            # validate/test/predict write into their own record folder: Lightning would warn that the
            # checkpoint's folder differs, about bookkeeping that only a resumed fit uses
            self.best_model_path = state_dict.get("best_model_path", self.best_model_path)
            return
        super().load_state_dict(state_dict)

    # ------------------------------------------------------------------------------------- last.ckpt
    def _may_save_last(self, trainer: L.Trainer) -> bool:
        return bool(
            self.save_last
            and not trainer.fast_dev_run
            and trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and self._last_saved_at_step != trainer.global_step
        )

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_saved_at_step = trainer.global_step
        self._last_was_step_save = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # a resumed run starts with its checkpoint's step already saved
        self._last_saved_at_step = self._previous_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._last_was_step_save and self._last_saved_at_step == trainer.global_step:
            self._last_saved_at_step = None  # written before this validation: rewrite it with its results
        # where Lightning saves at the end of the training epoch (after this), so does last.ckpt: written
        # here it would count as this step's save and Lightning would then skip the top-k one
        if self._may_save_last(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # the end of every epoch, validated or not (validation every n epochs, or inside the epoch); after
        # a validation at the epoch's end this is the same step, already written
        if self._may_save_last(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stepped, self._previous_step = trainer.global_step != self._previous_step, trainer.global_step
        every = self.last_every_n_train_steps
        if (
            every
            and stepped  # not inside a gradient accumulation window: its gradients are not in a checkpoint
            and trainer.global_step % every == 0
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch  # the epoch's end is next
            and self._may_save_last(trainer)
        ):
            # a step save must not count as "saved at this step" for the top-k save of a validation
            # that may follow in the same step
            saved = self._last_global_step_saved, self._last_checkpoint_saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved, self._last_checkpoint_saved = saved
            self._last_was_step_save = True

    # ------------------------------------------------------------------------------ finite weights only
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        for callback in trainer.callbacks:  # its message names the bad step and the loss terms
            if isinstance(callback, SaveGuard):
                callback.check(trainer)
        bad = nonfinite_tensors(trainer.lightning_module)
        if bad:
            # whichever of these is on disk is finite (an existing last.ckpt is the previous one: it is
            # not replaced)
            kept = written_checkpoint(filepath, self.last_model_path, self.best_model_path)
            raise TrainingDiverged(
                f"training diverged: non-finite weights at step {trainer.global_step} ({', '.join(bad[:3])}"
                f"{', …' if len(bad) > 3 else ''}); not saved"
                + (f"; last finite checkpoint: {short_path(kept)}" if kept else "")
            )
        super()._save_checkpoint(trainer, filepath)
