"""The console entry point: ``lightning-seg`` and ``python -m lightning_seg`` (the CLI's subcommands, and
``sweep`` and ``cv``, which are many CLI runs)."""

from __future__ import annotations

import os
import sys
import time

from lightning_seg.cli.app import run_cli
from lightning_seg.cli.sweep_check import FitArgsChecker
from lightning_seg.commands.compare import main as compare_main
from lightning_seg.commands.ensemble import main as ensemble_main
from lightning_seg.commands.plan.main import main as plan_main
from lightning_seg.commands.plan.main import planned_fit, run_plan, split_plan_args
from lightning_seg.errors import DEBUG_ENV, NothingToDo, TrainingDiverged
from lightning_seg.sweep.cv import main as cv_main
from lightning_seg.sweep.runner import main as sweep_main
from lightning_seg.utils.started import STARTED


def main(args: list[str] | None = None) -> int:
    """Console entry point (``lightning-seg`` and ``python -m lightning_seg``): 0 on success or when there
    is nothing to do, 1 when training diverged, 2 on bad input (Ctrl-C: 1, from Lightning)."""
    # fit --budget counts the command's whole time: from the package's import for a console command (torch
    # and Lightning load in seconds), from here for a call in Python; a plan written first counts too
    started = STARTED if args is None else time.perf_counter()
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["plan"]:
        # not a Trainer method: reads the data and writes a config, trains nothing
        return plan_main(argv[1:])
    if argv[:1] == ["fit"] and planned_fit(argv[1:]):
        # `fit --data.root DIR` with no config: plan first, then fit the plan (its other options kept)
        plan_args, fit_args = split_plan_args(argv[1:])
        plan = run_plan(plan_args)
        if plan is None:
            return 2
        print(f"lightning-seg: plan written: {plan}; fitting it")
        argv = args = ["fit", "--config", str(plan), *fit_args]
    if argv[:1] == ["sweep"]:
        # not a Trainer method: many fit runs, each in its own process (lightning_seg/sweep/runner.py),
        # their arguments checked with fit's own parser
        return sweep_main(argv[1:], FitArgsChecker())
    if argv[:1] == ["compare"]:
        # not a Trainer method: reads two test records, trains and predicts nothing
        return compare_main(argv[1:])
    if argv[:1] == ["ensemble"]:
        # not a Trainer method: reads checkpoints, writes one (lightning_seg/commands/ensemble.py)
        return ensemble_main(argv[1:])
    if argv[:1] == ["cv"]:
        # k folds, each a sweep trial: its own fit process, resumable (lightning_seg/sweep/cv.py)
        return cv_main(argv[1:], FitArgsChecker())
    try:
        return 0 if run_cli(args, started) is not None else 2
    except SystemExit:
        if argv[:1] in (["-h"], ["--help"]):  # LightningCLI lists the Trainer's subcommands, not sweep
            print("\nalso: sweep  many fit runs over config overrides, ranked (sweep --help)")
            print("      cv     k-fold cross-validation: a fit per fold, their mean ± std (cv --help)")
            print("      ensemble  several checkpoints (or a cv's folds) as one model (ensemble --help)")
            print("      compare   B − A per test metric with a paired bootstrap interval (compare --help)")
            print(
                "      plan   read a folder of images and masks, write the config to train on it (plan --help)"
            )
        raise
    except NothingToDo as done:
        print(f"lightning-seg: {done}", file=sys.stderr)
        return 0
    except TrainingDiverged as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"lightning-seg: error: {error}", file=sys.stderr)
        return 1
