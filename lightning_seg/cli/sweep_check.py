"""Checking a sweep's trials before any runs: each trial's ``fit`` arguments through the CLI's own parser and
its checks of the config alone (the same one-line errors as ``fit``), without building or writing anything."""

from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Any

from jsonargparse import ArgumentError, Namespace

from lightning_seg.callbacks.summary import RunSummary
from lightning_seg.cli.app import SegCLI, build_cli
from lightning_seg.errors import ConfigError
from lightning_seg.utils.error_lines import one_line

SUMMARY_CALLBACK = "lightning_seg.callbacks.RunSummary"


class _Parsed(Exception):
    """Carries a CLI out of its constructor right after parsing (LightningCLI parses, then builds)."""

    def __init__(self, cli: Any) -> None:
        self.cli = cli


class FitArgsChecker:
    """Parses ``fit`` arguments with the CLI's own parser and checks of the config alone (the same one-line
    errors as ``fit``), builds nothing and writes nothing. The parser is built once and reused (~0.2 s a
    trial instead of ~0.8 s)."""

    def __init__(self) -> None:
        self._cli: Any = None

    def __call__(self, args: list[str]) -> Namespace:
        """The parsed ``fit`` config of ``args``; raises :class:`ConfigError` with one line if it is bad."""
        argv = ["fit", *args]
        try:
            with warnings.catch_warnings():
                # the sweep's own command line is in sys.argv: not a mistake here
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
                if self._cli is None:
                    self._build(argv)
                else:
                    self._cli.parse_arguments(self._cli.parser, argv)
                    self._cli._parse_ckpt_path()
        except _Parsed as parsed:
            self._cli = parsed.cli
        except (ValueError, ArgumentError, FileNotFoundError) as error:
            raise ConfigError(one_line(error)) from error
        config = self._cli.config.fit
        _check_summary_callback(config)
        return config

    @staticmethod
    def _build(argv: list[str]) -> None:
        class ParseOnly(SegCLI):
            def _parse_ckpt_path(self) -> None:
                super()._parse_ckpt_path()  # the CLI's checks of the config alone
                raise _Parsed(self)

        build_cli(argv, cli_class=ParseOnly)  # the parser `fit` uses


def _check_summary_callback(config: Namespace) -> None:
    """The sweep reads a trial's results from its summary.json: a config without RunSummary has none."""
    for callback in config.trainer.get("callbacks") or []:
        module, _, name = str(getattr(callback, "class_path", "")).rpartition(".")
        with contextlib.suppress(ImportError, AttributeError, ValueError):
            kind = getattr(importlib.import_module(module), name)
            if isinstance(kind, type) and issubclass(kind, RunSummary):
                return
    raise ConfigError(
        f"trainer.callbacks: no {SUMMARY_CALLBACK}; the sweep reads each trial's results from its "
        "summary.json: list it in the base config"
    )
