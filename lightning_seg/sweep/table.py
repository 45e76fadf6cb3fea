"""The results table of a sweep: one row per trial from its run's ``summary.json``, best first by the ranked
metric (:class:`Ranking`: a sweep file's ``rank_by``, ``mode`` and ``columns``; default val/mIoU, max).

Two columns of the ranked metric, never mixed up with another metric: the best checkpoint's score, only when
the run's ``ModelCheckpoint`` monitors that metric with the same mode (with another monitor, ``best_score``
is that metric: a loss, say), and the last validation's; then the last validation's value of each listed
column (default val/dice). Rows rank by the first, else the second.

``results.csv`` keeps full precision and each swept value exactly as the trial passed it (a string as
written, anything else as JSON); ``results.md`` and the console table round the numbers and shorten the
values. Rows that did not finish (failed, invalid, interrupted, diverged, running, pending) come last, in
trial order.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_seg.sweep.spec import DEFAULT_RANKING, Ranking, column_names, option_value, short_value
from lightning_seg.utils.atomic import atomic_write

SUCCEEDED = ("completed", "stopped")
"""Trial statuses with results: the run trained to its end (or was stopped by max_time/early stopping)."""


@dataclass(frozen=True)
class ResultRow:
    """One trial's line. ``best``: the best checkpoint's score of the ranked metric (None unless its
    checkpoint callback monitors that metric with the ranking's mode); ``last``: the last validation's
    metrics (``summary["metrics"]``); ``checkpoint``: the best checkpoint by the run's own monitor."""

    trial: str
    values: dict[str, Any]
    status: str
    best: float | None = None
    last: dict[str, float] = field(default_factory=dict)
    parameters: int | None = None
    trainable_parameters: int | None = None
    seconds_per_epoch: float | None = None
    epochs: int | None = None
    checkpoint: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCEEDED

    def score(self, ranking: Ranking = DEFAULT_RANKING) -> float | None:
        """What the row ranks by: the best checkpoint's score, else the last validation's."""
        return self.best if self.best is not None else self.last.get(ranking.metric)


def result_row(
    trial: str,
    values: dict[str, Any],
    status: str,
    error: str | None,
    summary: dict | None,
    ranking: Ranking = DEFAULT_RANKING,
) -> ResultRow:
    """A row from the trial's record (``status``, ``error``) and its run's ``summary.json`` (or None)."""
    summary = summary or {}
    parameters = summary.get("parameters") or {}
    metrics = summary.get("metrics") or {}
    # best_score is whatever the checkpoint monitors: the ranked metric's only when it monitors that, alike
    monitors = summary.get("monitor") == ranking.metric and summary.get("mode") == ranking.mode
    return ResultRow(
        trial=trial,
        values=values,
        status=status,
        best=summary.get("best_score") if monitors else None,
        last={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        parameters=parameters.get("total"),
        trainable_parameters=parameters.get("trainable"),
        seconds_per_epoch=summary.get("seconds_per_epoch"),
        epochs=summary.get("epochs_completed"),
        checkpoint=summary.get("best_checkpoint"),
        error=error,
    )


def ranked(rows: list[ResultRow], ranking: Ranking = DEFAULT_RANKING) -> list[ResultRow]:
    """Finished trials by the ranked metric (:meth:`ResultRow.score`), best first (those without one after
    them), then the rest."""
    sign = -1.0 if ranking.mode == "max" else 1.0

    def order(row: ResultRow) -> tuple[int, float, str]:
        score = row.score(ranking)
        if not row.succeeded:
            return (2, 0.0, row.trial)
        return (0, sign * score, row.trial) if score is not None else (1, 0.0, row.trial)

    return sorted(rows, key=order)


def _metric_fields(ranking: Ranking) -> dict[str, tuple[str, str]]:
    """CSV header and table header of each metric column: ``val_mIoU_best_checkpoint`` /
    ``val/mIoU (best ckpt)`` for the ranked one, then ``<metric>_last`` / ``<metric> (last)``."""
    fields = {
        "best": (f"{ranking.metric.replace('/', '_')}_best_checkpoint", f"{ranking.metric} (best ckpt)")
    }
    for metric in ranking.shown:
        fields[metric] = (f"{metric.replace('/', '_')}_last", f"{metric} (last)")
    return fields


CSV_FIELDS = {
    "parameters": "parameters",
    "trainable_parameters": "trainable_parameters",
    "seconds_per_epoch": "seconds_per_epoch",
    "epochs": "epochs",
    "best_checkpoint": "checkpoint",
    "error": "error",
}
"""``results.csv`` header → :class:`ResultRow` attribute, after the status and the metric columns."""


def _metric_cells(row: ResultRow, ranking: Ranking) -> list[float | None]:
    return [row.best, *(row.last.get(metric) for metric in ranking.shown)]


def write_csv(rows: list[ResultRow], keys: list[str], path: Path, ranking: Ranking = DEFAULT_RANKING) -> None:
    names = column_names(keys)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    metrics = [csv_name for csv_name, _ in _metric_fields(ranking).values()]
    writer.writerow(["trial", *(names[k] for k in keys), "status", *metrics, *CSV_FIELDS])
    for row in rows:
        values = [option_value(row.values[k]) if k in row.values else "" for k in keys]
        cells = [*_metric_cells(row, ranking), *(getattr(row, name) for name in CSV_FIELDS.values())]
        writer.writerow([row.trial, *values, row.status, *("" if c is None else c for c in cells)])
    atomic_write(path, buffer.getvalue())


OTHER_NUMERIC = ("parameters", "s/epoch", "epochs")


def _numeric(ranking: Ranking) -> tuple[str, ...]:
    return (*(header for _, header in _metric_fields(ranking).values()), *OTHER_NUMERIC)


def _notes(ranking: Ranking) -> str:
    return (
        f"{ranking.metric} (best ckpt): the best checkpoint's score, when ModelCheckpoint monitors "
        f"{ranking.metric} with mode {ranking.mode} (else empty); (last): the last validation's. Ranked by the "
        f"first ({'highest' if ranking.mode == 'max' else 'lowest'} first), else the last validation's. "
        "parameters: the net's; s/epoch: mean wall time of an epoch (training and its validation); best "
        "checkpoint: by the run's own ModelCheckpoint monitor."
    )


def _headers(keys: list[str], ranking: Ranking) -> list[str]:
    names = column_names(keys)
    return ["trial", *(names[k] for k in keys), "status", *_numeric(ranking), "best checkpoint", "error"]


def _cells(row: ResultRow, keys: list[str], ranking: Ranking) -> list[str]:
    """The row for reading: 4 decimals, parameters with thousands separators, short values."""

    def number(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    return [
        row.trial,
        *(short_value(row.values[k]) if k in row.values else "" for k in keys),
        row.status,
        *(number(value, 4) for value in _metric_cells(row, ranking)),
        "" if row.parameters is None else f"{row.parameters:,}",
        number(row.seconds_per_epoch, 1),
        "" if row.epochs is None else str(row.epochs),
        row.checkpoint or "",
        row.error or "",
    ]


def write_markdown(
    rows: list[ResultRow], keys: list[str], path: Path, title: str, ranking: Ranking = DEFAULT_RANKING
) -> None:
    headers = _headers(keys, ranking)
    numeric = _numeric(ranking)
    lines = [
        f"# {title}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(" ---: " if h in numeric else " --- " for h in headers) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row, keys, ranking)) + " |")
    lines += [
        "",
        _notes(ranking),
        "Swept keys: " + ", ".join(f"`{name}` = `{key}`" for key, name in column_names(keys).items()) + ".",
        "",
    ]
    atomic_write(path, "\n".join(lines))


def print_results(
    rows: list[ResultRow], keys: list[str], title: str, ranking: Ranking = DEFAULT_RANKING
) -> None:
    """The table on the console, the errors under it (the checkpoint paths are in results.md)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD)
    numeric = _numeric(ranking)
    for header in _headers(keys, ranking)[:-2]:  # without checkpoint and error
        table.add_column(header, justify="right" if header in numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*_cells(row, keys, ranking)[:-2], style=None if row.succeeded else "dim")
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: rich's 80 columns would fold every cell
        console = Console(width=max(console.width, 160))
    console.print(table)
    for row in rows:
        if row.error:
            console.print(
                f"{row.trial} {row.status}: {row.error}", highlight=False, markup=False, soft_wrap=True
            )
