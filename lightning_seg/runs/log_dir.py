"""Where a running trainer's run folder is: the folder every record, plot and prediction of the run goes to."""

from __future__ import annotations

from pathlib import Path

import lightning as L


def run_directory(trainer: L.Trainer) -> Path:
    """The run's log directory (``runs/<name>/version_N``). A collective under DDP: call it on every rank."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def local_log_dir(trainer: L.Trainer) -> Path:
    """:func:`run_directory` as this process sees it, without the broadcast (for a rank that may be alone,
    e.g. in ``on_exception``): TensorBoard's and CSV's ``log_dir``, another logger's ``save_dir`` (W&B: the
    run folder the CLI pointed it at), else ``default_root_dir``. The same rule as ``Trainer.log_dir``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        folder = None
    elif isinstance(logger, TensorBoardLogger | CSVLogger):
        folder = logger.log_dir
    else:
        folder = logger.save_dir
    return Path(folder or trainer.default_root_dir)
