"""The progress display: plain lines when stdout is not a terminal, Lightning's rich bar when it is."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from helpers import tiny_args
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from lightning_seg.callbacks import PlainProgressBar
from lightning_seg.callbacks.progress import TerminalProgressBar, default_progress_bar, format_value
from lightning_seg.cli import build_cli, run_cli

BAR_ON = "--trainer.enable_progress_bar=true"  # tiny_args turns it off
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  .*val/mIoU (\d\.\d{4})  lr \d\.\de-\d\d  \d+\.\d s$", re.M)


class FakeTerminal(io.StringIO):
    """A stdout that says it is a terminal (rich then draws its live display into it)."""

    def isatty(self) -> bool:
        return True


def _summary(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "summary.json").read_text())


def test_fit_prints_one_plain_line_per_epoch_and_evaluations_one_line_at_the_end(
    run_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = run_cli(["fit", *tiny_args(run_root, BAR_ON, epochs=2)])
    out = capsys.readouterr().out
    assert isinstance(fit.trainer.progress_bar_callback, PlainProgressBar)
    assert "\r" not in out and "\x1b[" not in out  # no bar redraws, no terminal control codes
    lines = EPOCH_LINE.findall(out)
    assert [(number, total) for number, total, _ in lines] == [("1", "2"), ("2", "2")]
    summary = _summary(fit.trainer.log_dir)
    assert float(lines[-1][2]) == pytest.approx(summary["metrics"]["val/mIoU"], abs=5e-5)
    # the epoch's own training values, train/mIoU included (logged after the callbacks' epoch-end hook)
    assert all("train/loss " in line and "train/mIoU " in line for line in out.splitlines()[:2])
    assert "fit: val metrics" in out and "summary: " in out  # RunSummary's table still prints

    checkpoint = fit.trainer.checkpoint_callback.last_model_path
    test = run_cli(["test", *tiny_args(run_root, BAR_ON), "--ckpt_path", checkpoint])
    out = capsys.readouterr().out
    end = re.search(r"^test: 8 images in \d+\.\d s, test/loss \d+\.\d{4}  test/mIoU (\d\.\d{4})$", out, re.M)
    assert end, out
    assert float(end.group(1)) == pytest.approx(
        _summary(test.trainer.log_dir)["metrics"]["test/mIoU"], abs=5e-5
    )
    assert out.index(end.group(0)) < out.index("test: test metrics")  # the line, then the table
    run_cli(["predict", *tiny_args(run_root, BAR_ON), "--ckpt_path", checkpoint])
    assert re.search(r"^predict: 4 images in \d+\.\d s$", capsys.readouterr().out, re.M)


def test_disabled_progress_bar_prints_no_epoch_lines(
    run_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = run_cli(["fit", *tiny_args(run_root)])  # tiny_args: enable_progress_bar=false
    out = capsys.readouterr().out
    assert fit.trainer.progress_bar_callback is None
    assert not re.search(r"^epoch \d", out, re.M)
    assert "fit: val metrics" in out  # the summary is not progress: it still prints


def test_terminal_gets_the_rich_bar_closed_before_the_summary(
    run_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("COLUMNS", "120")
    fit = run_cli(["fit", *tiny_args(run_root, BAR_ON)])
    bar = fit.trainer.progress_bar_callback
    assert isinstance(bar, RichProgressBar) and isinstance(bar, TerminalProgressBar)
    out = terminal.getvalue()
    assert "Epoch 0/0" in out and "val/mIoU" in out  # the bar, with the metric
    assert not EPOCH_LINE.search(out)
    # the live display ended before the table: nothing after it moves the cursor up to redraw over it
    tail = out[out.index("fit: val metrics") :]
    assert "\x1b[1A" not in tail and "summary: " in tail


def test_a_config_that_lists_a_progress_bar_keeps_it(run_root: Path) -> None:
    args = tiny_args(run_root, BAR_ON, "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar")
    cli = build_cli(args, run=False)
    assert isinstance(cli.trainer.progress_bar_callback, TQDMProgressBar)


def test_selection_and_formatting() -> None:
    assert isinstance(default_progress_bar(FakeTerminal()), TerminalProgressBar)
    assert isinstance(default_progress_bar(io.StringIO()), PlainProgressBar)
    assert format_value(0.77123) == "0.7712"
    assert format_value(0.0) == "0.0000"
    assert format_value(3.1e-5) == "3.1e-05"
