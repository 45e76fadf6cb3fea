"""The command line: ``lightning-seg`` / ``python -m lightning_seg`` (:mod:`.app`), the Trainer with this
project's subcommands (:mod:`.trainer`), the checks of a config before anything is built (:mod:`.checks`,
:mod:`.pretrained`), the run's config record (:mod:`.config_record`), the model record a config gives
(:mod:`.records`), the sweep's trial checker (:mod:`.sweep_check`) and the demo (:mod:`.demo`)."""

from lightning_seg.cli.app import SegCLI, build_cli, nested_nulls_as_dicts, run_cli
from lightning_seg.cli.entry import main

__all__ = ["SegCLI", "build_cli", "main", "nested_nulls_as_dicts", "run_cli"]
