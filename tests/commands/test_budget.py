"""``fit --budget``: the probe sizes the schedule to the budget, the run records the epochs it chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli
from lightning_seg.commands.budget import EPOCH_OVERHEAD, fit_epochs, parse_budget
from lightning_seg.errors import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400)])
def test_budgets_read_as_durations(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["20", "ten minutes", "0m", ""])
def test_other_budgets_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def test_whole_epochs_or_one_more_shortened_whichever_trains_more() -> None:
    # 10 steps of 1 s an epoch, nothing else: an epoch costs 10.5 s with the allowance for the run's callbacks
    assert EPOCH_OVERHEAD == 0.05
    assert fit_epochs(100, 10, 1.0, 0.0) == (9, 10)  # 90 steps either way: whole epochs
    assert fit_epochs(50, 10, 1.0, 0.0) == (5, 9)  # 45 steps in 47.25 s, not 4 x 10 in 42 s
    assert fit_epochs(10, 10, 1.0, 0.0) == (0, 10)  # not one whole epoch
    for left in range(12, 400, 7):  # never over what is left, never fewer steps than whole epochs
        for fixed in (0.0, 1.5, 15.0):  # validation and the gap between epochs
            epochs, steps = fit_epochs(left, 10, 1.0, fixed)
            whole = int(left // ((10 + fixed) * 1.05))
            if whole:
                assert epochs * (steps + fixed) * 1.05 <= left + 1e-9
                assert epochs * steps >= whole * 10 and 1 <= steps <= 10


def test_a_budget_sets_the_epochs_and_the_record_repeats_them(run_root: Path) -> None:
    # 6 s: start-up and probing take 3 s here, more while other processes compete for the 2 cores
    fit = run_cli(["fit", *tiny_args(run_root), "--budget", "6s", "--trainer.max_epochs=1000"])
    log_dir = Path(fit.trainer.log_dir)
    budget = json.loads((log_dir / "budget.json").read_text())
    chosen, epoch_steps = budget["epochs"], budget["epoch_steps"]
    assert 1 <= chosen < 1000 and fit.trainer.current_epoch == chosen
    assert budget["steps_per_epoch"] == 4 and 1 <= epoch_steps <= 4 and budget["step_s"] > 0
    assert budget["epoch_gap_s"] > 0 and budget["val_batch_s"] > 0
    assert budget["startup_s"] > 0 and budget["startup_s"] + budget["probe_s"] < 6
    # the schedule was sized to the epochs chosen, not to the config's 1000
    assert fit.model.lr_schedulers().total_steps == chosen * epoch_steps == fit.trainer.global_step
    record = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert record["trainer"]["max_epochs"] == chosen and "budget" not in record
    assert record["trainer"]["limit_train_batches"] == (epoch_steps if epoch_steps < 4 else None)
    assert chosen * budget["epoch_s"] + budget["startup_s"] + budget["probe_s"] <= 6


def test_a_budget_shorter_than_one_epoch_or_with_a_checkpoint_is_refused(run_root: Path, capsys) -> None:
    assert main(["fit", *tiny_args(run_root), "--budget", "0.01s"]) == 2
    assert_one_line_error(capsys, "--budget 0.01s is shorter than one epoch here", "give at least")
    assert main(["fit", *tiny_args(run_root), "--budget", "5m", "--ckpt_path", "last"]) == 2
    assert_one_line_error(capsys, "--budget starts a run: not with --ckpt_path")
