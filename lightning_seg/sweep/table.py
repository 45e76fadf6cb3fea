"""The results table of a sweep: one row per trial from its run's ``summary.json``, best val/mIoU first.

Two val/mIoU columns, never mixed up with another metric: the best checkpoint's score, only when the run's
``ModelCheckpoint`` monitors ``val/mIoU`` with ``mode: max`` (with another monitor, ``best_score`` is that
metric: a loss, say), and the last validation's, beside the last validation's val/dice. Rows rank by the
first, else the second.

``results.csv`` keeps full precision and each swept value exactly as the trial passed it (a string as
written, anything else as JSON); ``results.md`` and the console table round the numbers and shorten the
values. Rows that did not finish (failed, invalid, interrupted, diverged, running, pending) come last, in
trial order.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_seg.sweep.spec import column_names, option_value, short_value
from lightning_seg.utils.atomic import atomic_write

SUCCEEDED = ("completed", "stopped")
"""Trial statuses with results: the run trained to its end (or was stopped by max_time/early stopping)."""

RANK_METRIC, RANK_MODE = "val/mIoU", "max"
"""The checkpoint monitor whose ``best_score`` is the best checkpoint's val/mIoU."""

CSV_FIELDS = {
    "status": "status",
    "val_mIoU_best_checkpoint": "best_mIoU",
    "val_mIoU_last": "last_mIoU",
    "val_dice_last": "last_dice",
    "parameters": "parameters",
    "trainable_parameters": "trainable_parameters",
    "seconds_per_epoch": "seconds_per_epoch",
    "epochs": "epochs",
    "best_checkpoint": "checkpoint",
    "error": "error",
}
"""``results.csv`` header → :class:`ResultRow` attribute."""


@dataclass(frozen=True)
class ResultRow:
    """One trial's line. ``best_mIoU``: the best checkpoint's val/mIoU (None unless its checkpoint callback
    monitors val/mIoU, mode max); ``last_mIoU``, ``last_dice``: the last validation's
    (``metrics["val/mIoU"]``, ``metrics["val/dice"]``); ``checkpoint``: the best checkpoint by the run's
    own monitor."""

    trial: str
    values: dict[str, Any]
    status: str
    best_mIoU: float | None = None
    last_mIoU: float | None = None
    last_dice: float | None = None
    parameters: int | None = None
    trainable_parameters: int | None = None
    seconds_per_epoch: float | None = None
    epochs: int | None = None
    checkpoint: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCEEDED

    @property
    def score(self) -> float | None:
        """What the row ranks by: the best checkpoint's val/mIoU, else the last validation's."""
        return self.best_mIoU if self.best_mIoU is not None else self.last_mIoU


def result_row(
    trial: str, values: dict[str, Any], status: str, error: str | None, summary: dict | None
) -> ResultRow:
    """A row from the trial's record (``status``, ``error``) and its run's ``summary.json`` (or None)."""
    summary = summary or {}
    parameters = summary.get("parameters") or {}
    metrics = summary.get("metrics") or {}
    # best_score is whatever the checkpoint monitors: a val/mIoU only when it monitors that, for the highest
    monitors_miou = summary.get("monitor") == RANK_METRIC and summary.get("mode") == RANK_MODE
    return ResultRow(
        trial=trial,
        values=values,
        status=status,
        best_mIoU=summary.get("best_score") if monitors_miou else None,
        last_mIoU=metrics.get("val/mIoU"),
        last_dice=metrics.get("val/dice"),
        parameters=parameters.get("total"),
        trainable_parameters=parameters.get("trainable"),
        seconds_per_epoch=summary.get("seconds_per_epoch"),
        epochs=summary.get("epochs_completed"),
        checkpoint=summary.get("best_checkpoint"),
        error=error,
    )


def ranked(rows: list[ResultRow]) -> list[ResultRow]:
    """Finished trials by val/mIoU (:attr:`ResultRow.score`), best first (those without one after them),
    then the rest."""

    def order(row: ResultRow) -> tuple[int, float, str]:
        if not row.succeeded:
            return (2, 0.0, row.trial)
        return (0, -row.score, row.trial) if row.score is not None else (1, 0.0, row.trial)

    return sorted(rows, key=order)


def write_csv(rows: list[ResultRow], keys: list[str], path: Path) -> None:
    names = column_names(keys)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", *(names[k] for k in keys), *CSV_FIELDS])
    for row in rows:
        values = [option_value(row.values[k]) if k in row.values else "" for k in keys]
        cells = [getattr(row, name) for name in CSV_FIELDS.values()]
        writer.writerow([row.trial, *values, *("" if c is None else c for c in cells)])
    atomic_write(path, buffer.getvalue())


NUMERIC = ("val/mIoU (best ckpt)", "val/mIoU (last)", "val/dice (last)", "parameters", "s/epoch", "epochs")

NOTES = (
    "val/mIoU (best ckpt): the best checkpoint's score, when ModelCheckpoint monitors val/mIoU with mode "
    "max (else empty); val/mIoU (last), val/dice (last): the last validation's. Ranked by the first, else "
    "the second. parameters: the net's; s/epoch: mean wall time of an epoch (training and its validation); "
    "best checkpoint: by the run's own ModelCheckpoint monitor."
)


def _headers(keys: list[str]) -> list[str]:
    names = column_names(keys)
    return ["trial", *(names[k] for k in keys), "status", *NUMERIC, "best checkpoint", "error"]


def _cells(row: ResultRow, keys: list[str]) -> list[str]:
    """The row for reading: 4 decimals, parameters with thousands separators, short values."""

    def number(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    return [
        row.trial,
        *(short_value(row.values[k]) if k in row.values else "" for k in keys),
        row.status,
        number(row.best_mIoU, 4),
        number(row.last_mIoU, 4),
        number(row.last_dice, 4),
        "" if row.parameters is None else f"{row.parameters:,}",
        number(row.seconds_per_epoch, 1),
        "" if row.epochs is None else str(row.epochs),
        row.checkpoint or "",
        row.error or "",
    ]


def write_markdown(rows: list[ResultRow], keys: list[str], path: Path, title: str) -> None:
    headers = _headers(keys)
    lines = [
        f"# {title}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(" ---: " if h in NUMERIC else " --- " for h in headers) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row, keys)) + " |")
    lines += [
        "",
        NOTES,
        "Swept keys: " + ", ".join(f"`{name}` = `{key}`" for key, name in column_names(keys).items()) + ".",
        "",
    ]
    atomic_write(path, "\n".join(lines))


def print_results(rows: list[ResultRow], keys: list[str], title: str) -> None:
    """The table on the console, the errors under it (the checkpoint paths are in results.md)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD)
    for header in _headers(keys)[:-2]:  # without checkpoint and error
        table.add_column(header, justify="right" if header in NUMERIC else "left", overflow="fold")
    for row in rows:
        table.add_row(*_cells(row, keys)[:-2], style=None if row.succeeded else "dim")
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: rich's 80 columns would fold every cell
        console = Console(width=max(console.width, 160))
    console.print(table)
    for row in rows:
        if row.error:
            console.print(
                f"{row.trial} {row.status}: {row.error}", highlight=False, markup=False, soft_wrap=True
            )
