"""A callback for benchmarks: save the model at given minutes of training, to score what a budget buys.

Used by ``benchmarks/camvid.py --marks 5,10,20``; the checkpoint at minute M is ``minute{M:06.2f}.ckpt`` in
``dirpath``. Minutes count from the start of the first training batch, validation included (what a user
waiting for the run sees).
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class SaveAtMinutes(Callback):
    """Save a full checkpoint the first time a training batch ends past each of ``minutes``.

    Args:
        minutes: the marks, in minutes of training.
        dirpath: where the checkpoints go (created).
    """

    def __init__(self, minutes: list[float], dirpath: str) -> None:
        self.marks = sorted(float(m) for m in minutes)
        self.dirpath = Path(dirpath)
        self.start: float | None = None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int
    ) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        assert self.start is not None
        elapsed = (time.perf_counter() - self.start) / 60
        while self.marks and elapsed >= self.marks[0]:
            mark = self.marks.pop(0)
            self.dirpath.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.dirpath / f"minute{mark:06.2f}.ckpt")
