"""``ConfigRecord``: the run's ``config.yaml``, written once by the run that trained and never rewritten.

LightningCLI's ``SaveConfigCallback`` rewrites ``<log_dir>/config.yaml`` on every command that logs into
the folder; after an attempt to extend a 3-epoch run the record said ``max_epochs: 4``. Here:

* the first ``fit`` of a run writes ``config.yaml``; a resumed ``fit`` leaves it alone and writes
  ``config.resume-<n>.yaml`` beside it (what the resume ran with, ``--ckpt_path`` included);
* evaluation commands write into their own record folder (see :mod:`lightning_seg.runs`);
* the logger's folder arguments are saved as the user gave them (a null ``version`` stays null), so the
  record can be passed back as ``--config`` to start a new run or to evaluate this one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback

from lightning_seg.commands.budget import BUDGET_OPTION
from lightning_seg.utils.atomic import atomic_write


class ConfigRecord(SaveConfigCallback):
    """``SaveConfigCallback`` that never overwrites (see the module's docstring).

    Args:
        parser, config, config_filename: as ``SaveConfigCallback``'s.
        multifile: ignored: the record is one file.
        overwrite: ignored: a record is never overwritten.
        as_given: values by dotted key to save instead of the config's (the folder arguments before the CLI
            chose the folder: :func:`lightning_seg.runs.folder_arguments`).
    """

    def __init__(
        self,
        parser: LightningArgumentParser,
        config: Namespace,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        as_given: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            parser, config, config_filename=config_filename, overwrite=False, multifile=multifile
        )
        self.as_given = as_given or {}
        self.written: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: every rank asks
        if trainer.is_global_zero:
            log_dir.mkdir(parents=True, exist_ok=True)
            target = log_dir / self.config_filename
            # a resumed fit leaves the first record and writes what the resume ran with beside it; a fit that
            # is no resume lands in an existing folder only with loggers that do not number runs
            kind = "resume" if self.config.get("ckpt_path") and stage == "fit" else "run"
            number = 1
            while target.exists():
                target = log_dir / f"{Path(self.config_filename).stem}.{kind}-{number}.yaml"
                number += 1
            # written whole or not at all: a record cut by a full disk would stay cut (it is never rewritten)
            text = self.parser.dump(self._as_given(), skip_none=False)
            atomic_write(target, text)
            self.written = target
            self._log_to_wandb(trainer, text)
        self.already_saved = bool(trainer.strategy.broadcast(True))

    @staticmethod
    def _log_to_wandb(trainer: L.Trainer, text: str) -> None:
        """The resolved config as the W&B run's config (nested, searchable in its UI). TensorBoard has no
        place for a nested config; its run folder holds config.yaml."""
        from lightning.pytorch.loggers import WandbLogger

        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if loggers:
            resolved = yaml.safe_load(text)
            for logger in loggers:
                logger.log_hyperparams(resolved)

    def _as_given(self) -> Namespace:
        config = copy.deepcopy(self.config)
        for key, value in self.as_given.items():
            config[key] = value
        # fit's budget is spent once it has chosen max_epochs (recorded); the record must also serve the
        # commands that have no such option (`test --config <run>/config.yaml`)
        if BUDGET_OPTION in config:
            del config[BUDGET_OPTION]
        return config
