"""``fit`` without a val split (``val_fraction: 0``, ``data.refit``): trains, checkpoints every epoch with no
monitor, leaves out what needs validation in one line, and the commands that need val images refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_trees import folder_args, folder_tree, voc_tree
from helpers import assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli
from lightning_seg.data import FolderDataModule, VOCDataModule
from lightning_seg.errors import ConfigError


def _no_val(data: Path) -> list[str]:
    return [value if value != "0.25" else "0" for value in folder_args(data)]  # val_fraction 0


def test_a_run_without_val_split_checkpoints_each_epoch_and_tune_refuses_it(
    tmp_path: Path, capsys, caplog
) -> None:
    data = folder_tree(tmp_path / "data", count=8)
    runs = tmp_path / "runs"
    early = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor=val/loss",
    ]
    cli = run_cli(["fit", *tiny_args(runs, *_no_val(data), *early)])
    assert cli is not None and "val" not in cli.datamodule.datasets
    out = caplog.text
    assert "fit: no val split" in out and "EarlyStopping on val/loss left out" in out
    assert "checkpoints by epoch instead of by val/mIoU" in out
    run = Path(cli.trainer.log_dir)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["monitor"] is None and summary["epochs_completed"] == 1
    assert "train/mIoU" in summary["metrics"] and not any(k.startswith("val/") for k in summary["metrics"])
    last = str(run / "checkpoints" / "last.ckpt")
    assert main(["tune", *tiny_args(runs, *_no_val(data)), "--ckpt_path", last]) == 2
    assert_one_line_error(capsys, "tune: this config trains without a val split", "tune --oof")
    assert main(["validate", *tiny_args(runs, *_no_val(data)), "--ckpt_path", last]) == 2
    assert_one_line_error(capsys, "there is nothing to validate on")
    # a schedule that steps on a validation metric cannot run
    plateau = "--model.init_args.lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau"
    assert main(["fit", *tiny_args(runs, *_no_val(data), plateau)]) == 2
    assert_one_line_error(capsys, "ReduceLROnPlateau steps on val/loss, and this run has no val split")


def test_refit_trains_on_train_and_val_and_keeps_the_test_split(tmp_path: Path) -> None:
    data = folder_tree(tmp_path / "data", count=12)
    args = {"root": str(data), "class_names": ["a", "b", "c"], "val_fraction": 0.25, "test_fraction": 0.25}
    plain, refit = FolderDataModule(**args), FolderDataModule(**args, refit=True)
    names = {split: sorted(s.name for s in plain.split_samples(split)) for split in ("train", "val", "test")}
    assert sorted(s.name for s in refit.split_samples("train")) == sorted(names["train"] + names["val"])
    assert refit.split_samples("val") == [] and not refit.validates and plain.validates
    assert sorted(s.name for s in refit.split_samples("test")) == names["test"]
    # a cv's fold -1 is the same refit
    fold = FolderDataModule(**args, folds=3, fold=-1)
    assert sorted(s.name for s in fold.split_samples("train")) == sorted(names["train"] + names["val"])
    with pytest.raises(ConfigError, match="data.refit trains on every fold together"):
        FolderDataModule(**args, folds=3, fold=1, refit=True)
    # VOC tests on its val split: a refit would train on the test images
    voc = VOCDataModule(root=str(voc_tree(tmp_path / "voc")), refit=True)
    with pytest.raises(ConfigError, match="data.refit would train on test images"):
        voc.split_samples("train")
