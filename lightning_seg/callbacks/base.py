"""Base classes through which callbacks of this package work together without importing each other.

A callback that needs another asks ``trainer.callbacks`` for instances of a base class defined here, so the
dependency points down to this module, never sideways to a sibling (the layers in ``pyproject.toml``).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import lightning as L

from lightning_seg.task.results import StageResults, TaskResults


class StageFiles(L.Callback, ABC):
    """A callback that writes files for a stage which the run's record lists (``RunPlots``; ``RunSummary``
    asks every one of them before it writes ``summary.json``, whatever the order of the callbacks)."""

    @abstractmethod
    def render(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        log_dir: Path,
        interrupted: bool = False,
    ) -> list[str]:
        """Write the stage's files once (later calls return the same list); the paths written. Never raises:
        a file that fails is warned about and left out. ``interrupted``: from ``on_exception``."""


class SaveGuard(L.Callback, ABC):
    """A callback that may stop a checkpoint from being written (``DivergenceGuard``: the checkpoint
    callback calls :meth:`check` before each save, so that the error names the cause)."""

    @abstractmethod
    def check(self, trainer: L.Trainer) -> None:
        """Raise if the weights about to be saved must not be (e.g. the loss diverged)."""


def stage_files(
    trainer: L.Trainer, pl_module: L.LightningModule, stage: str, log_dir: Path, interrupted: bool = False
) -> list[str]:
    """The files every :class:`StageFiles` callback of the trainer writes for ``stage`` (rendered now if
    not yet)."""
    paths: list[str] = []
    for callback in trainer.callbacks:
        if isinstance(callback, StageFiles):
            paths += callback.render(trainer, pl_module, stage, log_dir, interrupted=interrupted)
    return paths


class CommandPass(L.Callback):
    """The callback a command adds to the trainer for its own pass over the data (``tune``'s calibration,
    ``attack``'s robustness pass) and removes afterwards, as Lightning's learning-rate finder brings its own.
    While one is attached, the callbacks that record a run (``RunSummary``, ``RunPlots``,
    ``SampleOverlays``) leave the record to the command, and the progress line names the command.

    Args:
        name: the command ("tune", "attack"), as the progress line shows it.
    """

    def __init__(self, name: str) -> None:
        self.name = name


def command_pass(trainer: L.Trainer) -> CommandPass | None:
    """The command's pass running on ``trainer`` (None: the trainer runs a stage of its own)."""
    return next((c for c in trainer.callbacks if isinstance(c, CommandPass)), None)


@contextlib.contextmanager
def attached(trainer: L.Trainer, *callbacks: L.Callback) -> Iterator[None]:
    """``callbacks`` on ``trainer`` for the block, removed after it (also when it raises)."""
    trainer.callbacks.extend(callbacks)
    try:
        yield
    finally:
        for callback in callbacks:
            trainer.callbacks.remove(callback)


def stage_results(pl_module: L.LightningModule, stage: str) -> StageResults:
    """What ``stage`` of the module left for the run's records (empty for a module without results)."""
    results = getattr(pl_module, "results", None)
    return results.get(stage) if isinstance(results, TaskResults) else StageResults()
