"""``RunSummary``: a short table at the end of a run and ``summary.json`` for scripts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def run_directory(trainer: L.Trainer) -> Path:
    """The run's log directory (``runs/<name>/version_N``). A collective under DDP: call it on every rank."""
    return Path(trainer.log_dir or trainer.default_root_dir)


class RunSummary(L.Callback):
    """Print per-class IoU, mIoU and where the checkpoint and config are; write ``summary.json``.

    ``summary.json`` lands in the run's log directory (beside ``config.yaml`` and ``checkpoints/``) with
    ``{"stage", "metrics": {"val/mIoU": ..., "val/IoU/<class>": ...}, "best_checkpoint", "best_score",
    "last_checkpoint", "config", "log_dir", "confusion"?}``.

    Args:
        print_table: print the table to the console (rich) as well as writing the file.
    """

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._summarise(trainer, pl_module, "fit", "val")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._summarise(trainer, pl_module, "validate", "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._summarise(trainer, pl_module, "test", "test")

    def _summarise(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, prefix: str) -> None:
        log_dir = run_directory(trainer)  # every rank asks: a broadcast under DDP
        self._write(trainer, pl_module, stage, prefix, log_dir)

    @rank_zero_only
    def _write(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, prefix: str, log_dir: Path
    ) -> None:
        metrics = {
            k: _plain(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(f"{prefix}/")
        }
        checkpoint = trainer.checkpoint_callback
        summary: dict[str, Any] = {
            "stage": stage,
            "metrics": metrics,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "best_score": _plain(getattr(checkpoint, "best_model_score", None)),
            "last_checkpoint": getattr(checkpoint, "last_model_path", None) or None,
            "evaluated_checkpoint": trainer.ckpt_path,
            "config": str(log_dir / "config.yaml") if (log_dir / "config.yaml").exists() else None,
            "log_dir": str(log_dir),
        }
        confusion = getattr(pl_module, "last_confusion", {}).get(prefix)
        if confusion is not None:
            summary["confusion"] = {"rows_target_cols_prediction": confusion.tolist()}
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.print_table:
            self._print(summary, prefix, log_dir)

    @staticmethod
    def _print(summary: dict[str, Any], prefix: str, log_dir: Path) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{summary['stage']}: {prefix} metrics")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in summary["metrics"].items():
            if name.startswith(f"{prefix}/loss/"):
                continue
            table.add_row(name, "n/a" if value is None else f"{value:.4f}")
        console = Console()
        console.print(table)
        for key in ("best_checkpoint", "last_checkpoint", "config"):
            if summary.get(key):
                console.print(f"{key}: {summary[key]}")
        console.print(f"summary: {log_dir / 'summary.json'}")
