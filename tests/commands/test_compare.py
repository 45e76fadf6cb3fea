"""test records each metric's bootstrap interval and the per-image counts; ``compare`` pairs two test records
on the same images (here: the plain pass against flip TTA of one checkpoint) and refuses other images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TinyRun, assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli
from lightning_seg.metrics.intervals import scores_of_counts
from lightning_seg.runs.per_image import read_image_counts


def test_test_intervals_and_a_paired_comparison(
    run_root: Path, tiny_run: TinyRun, capsys: pytest.CaptureFixture
) -> None:
    args = [*tiny_args(run_root), "--ckpt_path", str(tiny_run.last)]
    plain = run_cli(["test", *args])
    (first,) = (tiny_run.run / "test").iterdir()
    summary = json.loads((first / "summary.json").read_text())
    intervals = summary["intervals"]
    assert intervals["resamples"] == 1000 and intervals["seed"] == 0 and intervals["images"] == 8
    for name in ("mIoU", "competition_dice", "image_mIoU", "IoU/disc"):
        low, high = intervals["metrics"][name]
        assert low <= summary["metrics"][f"test/{name}"] <= high, name
    counts = read_image_counts(first / "per_image.npz")
    assert len(counts.names) == 8 and counts.counts.shape == (8, 5, 3)
    # the record reproduces the printed number
    ones = scores_of_counts(counts.counts.new_ones(1, 8).double(), counts.counts, counts.class_names)
    assert float(ones["mIoU"][0]) == pytest.approx(
        float(plain.trainer.callback_metrics["test/mIoU"]), abs=1e-6
    )
    assert "95% interval (images)" in capsys.readouterr().out

    run_cli(["test", *args, "--model.init_args.inference.init_args.hflip=true"])
    second = max((tiny_run.run / "test").iterdir())
    assert main(["compare", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "B − A = " in out and "mIoU" in out
    (written,) = second.glob("compare_*.json")
    result = json.loads(written.read_text())
    row = result["metrics"]["mIoU"]
    assert row["difference"] == pytest.approx(row["b"] - row["a"])
    low, high = row["interval"]
    assert low <= row["difference"] <= high
    # a test of other images is refused, in one line
    run_cli(["test", *tiny_args(run_root, "--data.init_args.num_test=6"), "--ckpt_path", str(tiny_run.last)])
    third = max((tiny_run.run / "test").iterdir())
    assert main(["compare", str(first), str(third)]) == 2
    assert_one_line_error(capsys, "the tests scored other images")
