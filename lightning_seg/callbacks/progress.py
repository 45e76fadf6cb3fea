"""Progress display: Lightning's ``RichProgressBar`` on a terminal, :class:`PlainProgressBar` elsewhere.

On a terminal, :class:`TerminalProgressBar` is Lightning's ``RichProgressBar`` with one change: its live display
ends with the loop (training, or an evaluation) instead of at teardown, so that what is printed after the loop
(:class:`~lightning_seg.callbacks.RunSummary`'s table) is not drawn over by the bar's last refresh.

A bar that redraws itself is noise in a CI log, a file or a pipe (every redraw is a carriage return, and
a captured log keeps them all). :class:`PlainProgressBar` takes the progress bar's place there and prints
one line per training epoch and one at the end of each evaluation::

    epoch 3/12  train/loss 0.4121  train/mIoU 0.7405  val/loss 0.3902  val/mIoU 0.7712  lr 3.1e-03  12.3 s
    test: 128 images in 4.2 s, test/loss 0.3011  test/mIoU 0.8595

The values are the progress-bar metrics (``self.log(..., prog_bar=True)``) read through ``get_metrics`` as
the built-in bars read them, only at epoch ends where they are already reduced: nothing is read from the
device per step. The CLI picks the bar when a config lists none (:func:`default_progress_bar`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.utilities.data import extract_batch_size

from lightning_seg.callbacks.base import command_pass

STAGE_ORDER = ("train", "val", "test")
"""Metrics of these stages come first in a line, in this order; others follow by name."""


PROGRESS_ENV = "LIGHTNING_SEG_PROGRESS"
"""The bar the first process chose ("terminal"/"plain"), read by the processes Lightning starts for DDP: the
plain bar sums its image count across processes, so every process must run the same kind."""


def default_progress_bar(stream: IO[str] | None = None) -> ProgressBar:
    """:class:`TerminalProgressBar` (rich) when ``stream`` (default ``sys.stdout``) is a terminal, else
    :class:`PlainProgressBar`; in a DDP process started by the first one, whatever that one chose."""
    chosen = os.environ.get(PROGRESS_ENV) if os.environ.get("LOCAL_RANK", "0") != "0" else None
    if chosen is None:
        stream = sys.stdout if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        chosen = "terminal" if callable(isatty) and isatty() else "plain"
        os.environ[PROGRESS_ENV] = chosen
    return TerminalProgressBar() if chosen == "terminal" else PlainProgressBar()


def format_value(value: float) -> str:
    """A metric for a log line: 4 decimals in the usual range, scientific notation outside it (an lr)."""
    if value != 0 and not 1e-3 <= abs(value) < 1e5:
        return f"{value:.1e}"
    return f"{value:.4f}"


def _batch_images(batch: Any) -> int:
    """Images in a batch: the rows of its B×3×H×W ``image`` (host metadata, no device read)."""
    if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
        return int(batch["image"].shape[0])
    if isinstance(batch, dict) and isinstance(batch.get("name"), list | tuple):
        return len(batch["name"])
    return extract_batch_size(batch)


class TerminalProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar`` (same arguments), its live display closed when a loop ends.

    Lightning stops the display at teardown, after ``on_fit_end``/``on_test_end``; a table printed in those
    hooks by another rich ``Console`` goes around the live display, whose final refresh then erases the
    table's last lines and draws the bar again below it. The CLI puts this bar first among the callbacks, so
    it closes before :class:`~lightning_seg.callbacks.RunSummary` prints.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version, cut to 4 characters; the run folder names it
        return items

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._stop_progress()  # Lightning's own way to end the display (it calls it at teardown)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.state.fn != "fit":  # inside fit the training bar goes on
            self._stop_progress()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_end(trainer, pl_module)
        self._stop_progress()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_predict_end(trainer, pl_module)
        self._stop_progress()


class PlainProgressBar(ProgressBar):
    """Progress as plain lines on stdout, for output that is not a terminal (no bar, no redraws).

    ``fit`` prints one line per training epoch: its number, the progress-bar metrics of the epoch (training
    ones, then those of the validation run at its end), the learning rate of the first optimizer's first
    parameter group at the end of the epoch and the epoch's wall time (its validation included). ``validate``,
    ``test`` and ``predict`` (and ``tune``'s and ``attack``'s passes, which run those loops) print one line at
    their end: the images seen (summed across processes), the time and that stage's progress-bar metrics.
    Only the global-zero process prints. ``trainer.enable_progress_bar: false`` removes it (nothing printed).
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._epoch_start = 0.0
        self._validated = False
        # the line of the epoch that ended, completed with what the module logs after the callbacks'
        # on_train_epoch_end (e.g. train/mIoU in its own on_train_epoch_end) and printed at the next hook
        self._pending: dict[str, Any] | None = None
        self._eval_start = 0.0
        self._images = 0

    # ----------------------------------------------------------------------------- ProgressBar's API
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            kwargs.setdefault("flush", True)  # a line per epoch should reach a CI log when it is printed
            print(*args, **kwargs)

    # ------------------------------------------------------------------------------------- training
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_epoch_line(trainer, pl_module)
        self._epoch_start = time.monotonic()
        self._validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._validated = True
        else:
            self._eval_line(trainer, pl_module, "val")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizers = trainer.optimizers
        lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers and optimizers[0].param_groups else None
        self._pending = {
            "epoch": trainer.current_epoch,
            "seconds": time.monotonic() - self._epoch_start,
            "lr": lr,
            "validated": self._validated,
        }

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_epoch_line(trainer, pl_module)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        with contextlib.suppress(Exception):  # a line is not worth hiding the run's own exception
            self._flush_epoch_line(trainer, pl_module)

    def _flush_epoch_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending, self._pending = self._pending, None
        if pending is None or not self._enabled:
            return
        metrics = self._metrics(trainer, pl_module)
        if not pending["validated"]:
            # the last validation's values stay in the progress-bar metrics; this epoch did not make them
            metrics = {k: v for k, v in metrics.items() if not k.startswith("val/")}
        number = f"epoch {pending['epoch'] + 1}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            number += f"/{trainer.max_epochs}"
        parts = [number, *(f"{name} {format_value(value)}" for name, value in metrics.items())]
        if pending["lr"] is not None:
            parts.append(f"lr {pending['lr']:.1e}")
        parts.append(f"{pending['seconds']:.1f} s")
        self.print("  ".join(parts))

    # ----------------------------------------------------------------------------------- evaluations
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_eval()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_eval()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_eval()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._images += _batch_images(batch)

    # the same count for every evaluation loop
    on_test_batch_end = on_validation_batch_end
    on_predict_batch_end = on_validation_batch_end

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_line(trainer, pl_module, "test")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_line(trainer, pl_module, None)

    def _start_eval(self) -> None:
        self._eval_start = time.monotonic()
        self._images = 0

    def _eval_line(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str | None) -> None:
        images = self._images
        if trainer.world_size > 1:  # every process counted its share; a collective, so on every rank
            total = trainer.strategy.reduce(torch.tensor(images, device=pl_module.device), reduce_op="sum")
            images = int(total)
        if not self._enabled:
            return
        seconds = time.monotonic() - self._eval_start
        name = str(trainer.state.fn.value if trainer.state.fn is not None else "evaluate")
        running = command_pass(trainer)
        if running is not None:  # a command's own pass: named after the command
            name = running.name
        line = f"{name}: {images} images in {seconds:.1f} s"
        if prefix is not None:
            metrics = {
                k: v for k, v in self._metrics(trainer, pl_module).items() if k.startswith(f"{prefix}/")
            }
            if metrics:
                line += ", " + "  ".join(f"{k} {format_value(v)}" for k, v in metrics.items())
        self.print(line)

    # ------------------------------------------------------------------------------------------ values
    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The progress-bar metrics that are numbers, as floats, ordered train, val, test, then the rest
        (``v_num``, the logger's version, is left out: the run folder names it)."""
        values: dict[str, float] = {}
        for name, value in self.get_metrics(trainer, pl_module).items():
            if name == "v_num":
                continue
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)

        def order(name: str) -> tuple[int, str]:
            stage = name.split("/", 1)[0]
            return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), name)

        return {name: values[name] for name in sorted(values, key=order)}
