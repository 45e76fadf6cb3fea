"""Two DDP processes on CPU report the same validation metrics as one process on the same data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_trees import folder_args, folder_tree
from helpers import REPO, tiny_args

from lightning_seg.cli import run_cli


def _run(subcommand: str, args: list[str]) -> None:
    """The CLI in a subprocess (DDP starts its other ranks by re-running the command)."""
    command = [sys.executable, "-m", "lightning_seg", subcommand, *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _validate(args: list[str]) -> dict:
    _run("validate", args)
    # an evaluation writes its record beside the checkpoint's run: <run>/validate/<date-time>/
    run = Path(args[args.index("--ckpt_path") + 1]).parent.parent
    summaries = sorted((run / "validate").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(summaries[-1].read_text())["metrics"]


@pytest.mark.slow
def test_ddp_validation_metrics_equal_single_process(tmp_path: Path) -> None:
    # folder data: half the masks have an ignored corner; class weights weigh CE's mean and Dice's class
    # mean; validation at each mask's stored size (two sizes)
    data = folder_tree(tmp_path / "data", count=28)
    extra = [
        *folder_args(data),
        "--model.init_args.loss.init_args.class_weights=[0.5,1.0,4.0]",
        "--data.score_at_original_size=[val,test]",
    ]
    fit = run_cli(["fit", *tiny_args(tmp_path / "fit", *extra, epochs=3)])
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    common = [
        a
        for a in tiny_args(tmp_path / "x", *extra)
        if not a.startswith(("--trainer.default_root_dir", "--trainer.logger"))
    ]
    assert len(fit.datamodule.datasets["val"]) == 7
    # 7 validation images over 2 processes: a padding sampler would count one image twice; ours splits 4/3
    single = _validate(
        [
            *common,
            "--ckpt_path",
            ckpt,
            "--trainer.default_root_dir",
            str(tmp_path / "one"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "one"),
        ],
    )
    ddp = _validate(
        [
            *common,
            "--ckpt_path",
            ckpt,
            "--trainer.default_root_dir",
            str(tmp_path / "two"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "two"),
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
        ],
    )
    assert set(single) == set(ddp)
    # the distributed sampler interleaves images, so batches differ: every metric and every loss term is
    # computed from sums over the split (losses: lightning_seg.losses.split_sums), so none may depend on that
    assert {"val/mIoU", "val/acc", "val/dice", "val/loss", "val/loss/ce", "val/loss/dice"} <= set(single)
    mismatched = {
        name: (single[name], ddp[name])
        for name in single
        if ddp[name] != pytest.approx(single[name], rel=1e-5, abs=1e-6)
    }
    assert not mismatched


@pytest.mark.slow
def test_ddp_fit_writes_one_run_folder_and_resumes_it_exactly(tmp_path: Path) -> None:
    """Lightning starts rank 1 by re-running the command: it must take rank 0's run folder, not claim one;
    and a 2-process run stopped after epoch 1 and resumed ends with the weights of an uninterrupted one
    (each rank's random state and data shard restored)."""

    def fit(root: Path, *extra: str) -> Path:
        args = [
            *tiny_args(root),
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--model.init_args.lr_scheduler=null",
            "--trainer.deterministic=true",
            *extra,
        ]
        _run("fit", args)
        (run,) = (root / "default").iterdir()
        return run

    reference = fit(tmp_path / "reference", "--trainer.max_epochs=2")
    fit(tmp_path / "resumed")
    run = fit(tmp_path / "resumed", "--trainer.max_epochs=2", "--ckpt_path", "last")
    assert run.name == "version_0" and not (run / ".lock").read_text()  # released
    assert (run / "config.yaml").is_file() and (run / "config.resume-1.yaml").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    expected, got = (
        torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (reference, run)
    )
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
@pytest.mark.parametrize("aux_weight", [None, 0.0], ids=["default_aux_weight", "aux_weight_0"])
def test_ddp_fit_with_torchvision_aux_head(tmp_path: Path, aux_weight: float | None) -> None:
    """configs/trainer/ddp.yaml (no ``find_unused_parameters``) on 2 CPU processes with a torchvision net
    that has an aux head. With ``aux_weight=0`` the head must not be built: a head that runs without
    entering the loss gets no gradient, and DDP stops at the second step on the unused parameters."""
    args = [
        # the U-Net's width/depth overrides do not fit TorchvisionNet
        *(a for a in tiny_args(tmp_path) if not a.startswith("--model.init_args.net.")),
        "--config",
        str(REPO / "configs" / "trainer" / "ddp.yaml"),
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        # torch's SyncBatchNorm runs on GPUs only
        "--trainer.sync_batchnorm=false",
        "--model.init_args.net=lightning_seg.models.TorchvisionNet",
        # the smallest arch with an aux head (lraspp has none)
        "--model.init_args.net.init_args.arch=deeplabv3_mobilenet_v3_large",
    ]
    if aux_weight is not None:
        args.append(f"--model.init_args.loss.init_args.aux_weight={aux_weight}")
    _run("fit", args)
    (run,) = (tmp_path / "default").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    has_aux = any(".aux_classifier." in key for key in state)
    assert has_aux == (aux_weight is None)


@pytest.mark.slow
def test_the_net_runs_inside_ddp_forward_where_dynamo_splits_a_compiled_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.compile`` compiles the inner net, not the DDP-wrapped module; Dynamo still builds its
    DDPOptimizer (one compiled graph per gradient bucket, so all-reduces overlap the backward) because the
    compiled net is called inside DDP's forward. This checks that condition on 2 CPU processes (compiling
    itself takes minutes on this CPU)."""
    record = tmp_path / "inside_ddp"
    monkeypatch.setenv("LIGHTNING_SEG_DDP_RECORD", str(record))
    args = [
        *tiny_args(tmp_path),
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--model.init_args.net.class_path=helpers.RecordsDDPForward",
    ]
    monkeypatch.setenv("PYTHONPATH", f"{REPO / 'tests'}:{REPO}")
    _run("fit", args)
    for rank in (0, 1):
        lines = Path(f"{record}.{rank}").read_text().split()
        assert lines and set(lines) == {"True"}, (rank, lines)
