"""``fit --budget``: the probe sizes the schedule to the budget, the run records the epochs it chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli
from lightning_seg.commands.budget import parse_budget
from lightning_seg.errors import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400)])
def test_budgets_read_as_durations(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["20", "ten minutes", "0m", ""])
def test_other_budgets_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def test_a_budget_sets_the_epochs_and_the_record_repeats_them(run_root: Path) -> None:
    fit = run_cli(["fit", *tiny_args(run_root), "--budget", "3s", "--trainer.max_epochs=1000"])
    log_dir = Path(fit.trainer.log_dir)
    budget = json.loads((log_dir / "budget.json").read_text())
    chosen = budget["epochs"]
    assert 1 <= chosen < 1000 and fit.trainer.current_epoch == chosen
    assert budget["steps_per_epoch"] == 4 and budget["step_s"] > 0 and budget["probe_s"] < 3
    # the schedule was sized to the epochs chosen, not to the config's 1000
    assert fit.model.lr_schedulers().total_steps == chosen * 4
    record = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert record["trainer"]["max_epochs"] == chosen and "budget" not in record
    assert chosen * budget["epoch_s"] + budget["probe_s"] <= 3


def test_a_budget_shorter_than_one_epoch_or_with_a_checkpoint_is_refused(run_root: Path, capsys) -> None:
    assert main(["fit", *tiny_args(run_root), "--budget", "0.01s"]) == 2
    assert_one_line_error(capsys, "--budget 0.01s is shorter than one epoch here", "give at least")
    assert main(["fit", *tiny_args(run_root), "--budget", "5m", "--ckpt_path", "last"]) == 2
    assert_one_line_error(capsys, "--budget starts a run: not with --ckpt_path")
