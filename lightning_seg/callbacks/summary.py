"""``RunSummary``: a short table at the end of a run and ``summary.json`` for scripts."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from lightning_seg.callbacks.base import command_pass, stage_files, stage_results
from lightning_seg.checkpoints.files import written_checkpoint
from lightning_seg.errors import TrainingDiverged
from lightning_seg.runs.log_dir import local_log_dir, run_directory
from lightning_seg.runs.per_image import PER_IMAGE_FILE, write_image_counts
from lightning_seg.utils.atomic import atomic_write


def parameter_counts(pl_module: L.LightningModule) -> dict[str, int]:
    """``{"total", "trainable"}`` parameters of the module's ``net`` (the whole module when it has none)."""
    net = getattr(pl_module, "net", pl_module)
    params = list(net.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _fit_prefix(trainer: L.Trainer) -> str:
    """The metrics a fit's record shows: val's, or train's for a run without validation (``data.refit``)."""
    return "val" if trainer.limit_val_batches else "train"


def _fit_status(trainer: L.Trainer) -> dict[str, Any]:
    """How a ``fit`` that returned normally ended: all its epochs, or stopped early by what."""
    from lightning.pytorch.callbacks import EarlyStopping, Timer

    if trainer.max_steps not in (-1, None) and trainer.global_step >= trainer.max_steps:
        return {"status": "stopped", "stopped_by": "max_steps"}
    if trainer.max_epochs not in (-1, None) and trainer.current_epoch >= trainer.max_epochs:
        return {"status": "completed"}
    for callback in trainer.callbacks:
        if (
            isinstance(callback, Timer)
            and callback.time_remaining() is not None
            and callback.time_remaining() <= 0
        ):
            return {"status": "stopped", "stopped_by": "max_time"}
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch:
            return {"status": "stopped", "stopped_by": "early_stopping"}
    return {"status": "stopped" if trainer.should_stop else "completed"}


def print_stage_table(console: Any, rows: list[dict[str, Any]], title: str) -> None:
    """The stage table (raw; + inference; + each post-processing step) as a rich table."""
    from rich.table import Table

    table = Table(title=title)
    fields = ("mIoU", "dice", "dice_fg", "image_dice_fg", "competition_dice")
    table.add_column("stage")
    for field in fields:
        table.add_column(field, justify="right")
    for row in rows:
        table.add_row(row["stage"], *("n/a" if row.get(f) is None else f"{row[f]:.4f}" for f in fields))
    console.print(table)


class RunSummary(L.Callback):
    """Print per-class IoU, mIoU and where the checkpoint and config are; write ``summary.json``.

    ``summary.json`` lands in the command's folder (a training run's, beside ``config.yaml`` and
    ``checkpoints/``; an evaluation's own ``<run>/<stage>/<date-time>/``) with ``{"stage", "status",
    "metrics": {"val/mIoU": ..., "val/IoU/<class>": ...}, "epochs_completed", "global_step",
    "best_checkpoint", "best_score", "last_checkpoint", "config", "log_dir", "plots" (RunPlots' files),
    "confusion"?, "labels"?}``;
    ``labels`` (a net with a class head): ``mode``, ``names``, the L×L ``rows_target_cols_prediction``
    (single-label; null for multi), per-label ``precision``/``recall`` (null where undefined), ``f1``,
    ``acc`` and for multi-label per-label ``ap`` and ``mAP``.

    ``status`` of a ``fit``: "completed", "stopped" (with ``stopped_by``: max_time, early_stopping, max_steps),
    "interrupted" (Ctrl-C: what was completed before it) or "diverged" (with ``last_finite_checkpoint``).
    A summary is only replaced by a command that evaluated something: a resume with nothing left to do,
    or one interrupted before its first validation, leaves the previous one.

    A ``fit`` also records ``"parameters": {"total", "trainable"}`` of the net and ``"seconds_per_epoch"``:
    the mean wall time of the epochs this process ran whole, each from ``on_train_epoch_start`` to
    ``on_train_epoch_end`` (its training and its end-of-epoch validation; not setup or the sanity check);
    null when none ran whole (a resume counts only its own epochs).

    Args:
        print_table: print the table to the console (rich) as well as writing the file.
    """

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table
        self._has_results = False
        self._start_step = 0
        self._epoch_started: float | None = None
        self._epoch_seconds: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._has_results = False
        self._start_step = trainer.global_step
        self._epoch_started, self._epoch_seconds = None, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch a resume starts inside is not a whole epoch: not timed (the loop's batch count is the
        # checkpoint's here; the loop resets it after this hook, so only the first epoch of a fit can tell)
        batches = trainer.fit_loop.epoch_loop.batch_progress
        inside = (
            not self._epoch_seconds
            and trainer.global_step > 0
            and batches.current.completed > 0
            and not batches.is_last_batch
        )
        self._epoch_started = None if inside else time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_started is not None:
            self._epoch_seconds.append(time.perf_counter() - self._epoch_started)
            self._epoch_started = None
        if trainer.global_step > self._start_step:  # a run without validation has results too: its training
            self._has_results = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._has_results = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._has_results:
            self._summarise(trainer, pl_module, "fit", _fit_prefix(trainer), _fit_status(trainer))
        elif trainer.is_global_zero:
            print(f"nothing was trained or evaluated; {run_directory(trainer) / 'summary.json'} is unchanged")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != "fit":
            return
        if isinstance(exception, KeyboardInterrupt):
            status: dict[str, Any] = {"status": "interrupted"}
        elif isinstance(exception, TrainingDiverged):
            status = {"status": "diverged", "reason": str(exception)}
        else:
            return
        if not trainer.is_global_zero:
            return
        # not run_directory(): a broadcast, and other ranks may not be here (an exception on one rank)
        log_dir = local_log_dir(trainer)
        if self._has_results or not (log_dir / "summary.json").exists():
            plots = stage_files(trainer, pl_module, "fit", log_dir, interrupted=True)
            self._write(trainer, pl_module, "fit", _fit_prefix(trainer), log_dir, status, plots)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a command's own pass over val (tune) writes its own record
        if trainer.state.fn == "validate" and command_pass(trainer) is None:
            self._summarise(trainer, pl_module, "validate", "val", {"status": "completed"})

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a command's own pass (attack) drives test's loop without test's metrics and writes its own record
        if command_pass(trainer) is None:
            self._summarise(trainer, pl_module, "test", "test", {"status": "completed"})

    def _summarise(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        prefix: str,
        status: dict[str, Any],
    ) -> None:
        log_dir = run_directory(trainer)  # every rank asks: a broadcast under DDP
        plots = stage_files(trainer, pl_module, stage, log_dir)
        self._write(trainer, pl_module, stage, prefix, log_dir, status, plots)

    @rank_zero_only
    def _write(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        prefix: str,
        log_dir: Path,
        status: dict[str, Any],
        plots: list[str] | None = None,
    ) -> None:
        metrics = {
            k: _plain(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(f"{prefix}/")
        }
        checkpoint = trainer.checkpoint_callback
        best = written_checkpoint(getattr(checkpoint, "best_model_path", None))
        last = written_checkpoint(getattr(checkpoint, "last_model_path", None))
        summary: dict[str, Any] = {
            "stage": stage,
            **status,
            "metrics": metrics,
            "best_checkpoint": best,
            "best_score": _plain(getattr(checkpoint, "best_model_score", None)) if best else None,
            # what best_score is a score of (a loss with mode min, say): None without a checkpoint callback
            "monitor": getattr(checkpoint, "monitor", None),
            "mode": getattr(checkpoint, "mode", None),
            "last_checkpoint": last,
            "evaluated_checkpoint": trainer.ckpt_path,
            "config": str(log_dir / "config.yaml") if (log_dir / "config.yaml").exists() else None,
            "log_dir": str(log_dir),
            "plots": plots or [],  # RunPlots' files (PNG figures, CSV tables) in <log_dir>/plots/
        }
        if stage == "test" and hasattr(pl_module, "inference"):
            summary["inference"] = pl_module.inference.describe()
        results = stage_results(pl_module, prefix)
        scored_at = results.scored_at
        if scored_at:
            summary["scored_at"] = scored_at  # "original size": against each mask as stored
        if stage == "fit":
            summary["epochs_completed"] = trainer.fit_loop.epoch_progress.current.completed
            summary["global_step"] = trainer.global_step
            summary["parameters"] = parameter_counts(pl_module)
            seconds = self._epoch_seconds
            summary["seconds_per_epoch"] = sum(seconds) / len(seconds) if seconds else None
            if summary["status"] == "diverged":
                summary["last_finite_checkpoint"] = last or best
        stages = results.table if stage != "fit" else None
        if stages:
            # one row per stage of the inference path: what each post-processing step buys
            summary["stages"] = stages
            summary["postprocess"] = pl_module.postprocess.describe()
        confusion = results.confusion
        if confusion is not None:
            summary["confusion"] = {"rows_target_cols_prediction": confusion.tolist()}
        labels = results.label_scores
        if labels is not None:  # the image-level head: label confusion (single), per-label precision/recall
            summary["labels"] = labels
        if results.notes:
            summary["notes"] = list(results.notes)
        log_dir.mkdir(parents=True, exist_ok=True)
        if results.intervals is not None:  # how sure each number is: bootstrap over the images
            summary["intervals"] = results.intervals
        if results.image_counts is not None:  # what `compare` pairs two runs on
            summary["per_image"] = write_image_counts(
                log_dir / PER_IMAGE_FILE, results.image_counts, results.image_names, pl_module.class_names
            )
        atomic_write(log_dir / "summary.json", json.dumps(summary, indent=2))
        if self.print_table:
            self._print(summary, prefix, log_dir)

    @staticmethod
    def _print(summary: dict[str, Any], prefix: str, log_dir: Path) -> None:
        from rich import get_console
        from rich.table import Table

        table = Table(title=f"{summary['stage']}: {prefix} metrics")
        table.add_column("metric")
        table.add_column("value", justify="right")
        intervals = (summary.get("intervals") or {}).get("metrics") or {}
        if intervals:
            level = round(100 * summary["intervals"]["level"])
            table.add_column(f"{level}% interval (images)", justify="right")
        for name, value in summary["metrics"].items():
            if name.startswith(f"{prefix}/loss/"):
                continue
            cells = [name, "n/a" if value is None else f"{value:.4f}"]
            if intervals:
                interval = intervals.get(name.split("/", 1)[1])
                cells.append(f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
            table.add_row(*cells)
        # rich's shared console: a live progress bar on it is not redrawn over the table
        console = get_console()
        console.print(table)
        if len(summary.get("stages") or []) > 1:
            print_stage_table(
                console, summary["stages"], f"{summary['stage']}: {prefix} by stage of the path"
            )
        for note in summary.get("notes") or []:
            console.print(f"note: {note}", soft_wrap=True, highlight=False)
        for key in ("best_checkpoint", "last_checkpoint", "config"):
            if summary.get(key):
                console.print(f"{key}: {summary[key]}", soft_wrap=True)  # a path is not wrapped
        console.print(f"summary: {log_dir / 'summary.json'}", soft_wrap=True)
