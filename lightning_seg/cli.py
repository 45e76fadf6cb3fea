"""The command line: ``python -m lightning_seg {fit,validate,test,predict} --config configs/X.yaml``.

LightningCLI in subclass mode for both the data and the model, so any ``SegDataModule`` subclass, net or
loss is named by ``class_path`` in YAML. The data module is the one source of ``num_classes``,
``ignore_index`` and class names; they are linked into the model after the data module is built.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_seg.data.base import SegDataModule
from lightning_seg.errors import ConfigError
from lightning_seg.module import SegmentationModule

DEBUG_ENV = "LIGHTNING_SEG_DEBUG"


class SegCLI(LightningCLI):
    """LightningCLI with the data → model links of this project."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("num_classes", "ignore_index", "class_names", "label_names"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            resume_in_place(self.config[self.subcommand])


def _logger_run_root(config: Namespace) -> tuple[Namespace, Path] | None:
    """The logger's init args and its ``save_dir/name`` folder, for loggers that number their runs."""
    logger = config.trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if init_args is None or "version" not in init_args or init_args.get("save_dir") is None:
        return None
    name = init_args.get("name") or ""
    return init_args, Path(init_args.save_dir) / name


def resume_in_place(config: Namespace) -> None:
    """Make a resumed ``fit`` continue in the run directory it resumes from.

    ``--ckpt_path last`` means the newest ``checkpoints/last.ckpt`` under the logger's ``save_dir/name``;
    a path ``<save_dir>/<name>/<version>/checkpoints/x.ckpt`` reuses ``<version>``, so logs, checkpoints
    and ``summary.json`` of one run stay in one folder. Anything else is left to Lightning.
    """
    found = _logger_run_root(config)
    ckpt_path = config.get("ckpt_path")
    if found is None or not ckpt_path or found[0].get("version") is not None:
        return
    init_args, run_root = found
    if ckpt_path == "last":
        candidates = sorted(run_root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ConfigError(f"--ckpt_path last: no {run_root}/*/checkpoints/last.ckpt to resume from")
        config.ckpt_path = str(candidates[-1])
    ckpt = Path(config.ckpt_path)
    if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.parent.resolve() == run_root.resolve():
        init_args.version = ckpt.parent.parent.name


def build_cli(args: list[str] | None = None, run: bool = True) -> SegCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests call it in-process)."""
    return SegCLI(
        SegmentationModule,
        SegDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},
        args=args,
        run=run,
    )


def _one_line(error: BaseException) -> str:
    """The message of a parse or config error on one line, without jsonargparse's usage dump."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        # raised in a DataLoader worker: torch prepends the worker's traceback; the last line is the message
        lines = [lines[-1].split(f"{type(error).__name__}: ", 1)[-1]]
    text = " ".join(lines)
    return text.replace("\\n", " ")


def run_cli(args: list[str] | None = None) -> SegCLI | None:
    """Run the CLI; on bad input print ``lightning-seg: error: <what and where>`` and return None.

    Set ``LIGHTNING_SEG_DEBUG=1`` to get the full traceback instead.
    """
    from jsonargparse import ArgumentError

    try:
        return build_cli(args)
    except (ValueError, ArgumentError, FileNotFoundError) as error:
        # jsonargparse wraps errors raised while instantiating a class_path (e.g. our ConfigError) in a
        # ValueError listing every Union member; the cause is the useful line
        cause = _config_error_in_chain(error)
        if os.environ.get(DEBUG_ENV) or (
            cause is None and not isinstance(error, ArgumentError | FileNotFoundError)
        ):
            raise
        print(f"lightning-seg: error: {_one_line(cause or error)}", file=sys.stderr)
        return None


def _config_error_in_chain(error: BaseException) -> ConfigError | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConfigError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def main(args: list[str] | None = None) -> int:
    """Console entry point (``lightning-seg`` and ``python -m lightning_seg``): 0 on success, 2 on bad input."""
    return 0 if run_cli(args) is not None else 2
