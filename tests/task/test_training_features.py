"""Training features configured from YAML/CLI: precision, memory format, schedulers, clipping, accumulation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_args

from lightning_seg.cli import run_cli
from lightning_seg.task.schedulers import PolyLR, WarmupCosineLR


def _fit(root: Path, *extra: str, epochs: int = 1):
    cli = run_cli(["fit", *tiny_args(root, *extra, epochs=epochs)])
    assert cli is not None
    return cli


def _grad_norms(cli):
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == "RecordsGradNorm")


def _scheduler(cli):
    return cli.trainer.lr_scheduler_configs[0]


def test_bf16_mixed_precision_and_channels_last(run_root: Path) -> None:
    cli = _fit(run_root, "--trainer.precision=bf16-mixed", "--model.init_args.channels_last=true")
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    first_conv = cli.model.net.stem[0].weight
    assert first_conv.is_contiguous(memory_format=torch.channels_last)
    # weights stay float32 under mixed precision
    assert first_conv.dtype == torch.float32


def test_accumulation_and_clipping(run_root: Path) -> None:
    plain = _fit(run_root / "a", "--trainer.callbacks+=helpers.RecordsGradNorm")
    accumulated = _fit(
        run_root / "b",
        "--trainer.accumulate_grad_batches=2",
        "--trainer.gradient_clip_val=0.5",
        "--trainer.callbacks+=helpers.RecordsGradNorm",
    )
    assert accumulated.trainer.global_step == plain.trainer.global_step // 2
    # without clipping the optimizer sees the gradients backward left, and some are above the clip value
    unclipped = _grad_norms(plain)
    assert len(unclipped.stepped) == plain.trainer.global_step == 4
    assert unclipped.stepped == pytest.approx(unclipped.before_clipping, rel=1e-6)
    # with clipping: one norm per optimizer step (every second batch), none above 0.5 when the optimizer
    # used them, and the steps whose gradients were above 0.5 were scaled to 0.5, the others left alone
    clipped = _grad_norms(accumulated)
    assert len(clipped.stepped) == len(clipped.before_clipping) == accumulated.trainer.global_step == 2
    assert any(norm > 0.5 for norm in clipped.before_clipping), clipped.before_clipping
    for before, after in zip(clipped.before_clipping, clipped.stepped, strict=True):
        assert after <= 0.5 * (1 + 1e-4)
        assert after == pytest.approx(min(before, 0.5), rel=1e-4)


@pytest.mark.parametrize("scheduler", ["WarmupCosineLR", "PolyLR"])
def test_step_schedules_get_the_run_length(run_root: Path, scheduler: str) -> None:
    cli = _fit(
        run_root,
        f"--model.init_args.lr_scheduler=lightning_seg.task.schedulers.{scheduler}",
        "--model.init_args.lr_scheduler.warmup=2",
        epochs=2,
    )
    config = _scheduler(cli)
    assert config.interval == "step"
    assert isinstance(config.scheduler, WarmupCosineLR | PolyLR)
    base = config.scheduler.base_lrs[0]
    final = cli.trainer.optimizers[0].param_groups[0]["lr"]
    assert final == pytest.approx(0.0, abs=base * 1e-6)  # decayed to the end exactly at the last step


def test_onecycle_total_steps_filled_in(run_root: Path) -> None:
    cli = _fit(run_root, epochs=2)
    scheduler = _scheduler(cli).scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == cli.trainer.global_step == cli.trainer.estimated_stepping_batches


def test_reduce_on_plateau_watches_val_miou_and_sgd_nesterov(run_root: Path) -> None:
    cli = _fit(
        run_root,
        "--model.init_args.optimizer=torch.optim.SGD",
        "--model.init_args.optimizer.lr=0.01",
        "--model.init_args.optimizer.momentum=0.9",
        "--model.init_args.optimizer.nesterov=true",
        "--model.init_args.lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau",
        "--model.init_args.lr_scheduler.mode=max",
        "--model.init_args.scheduler_monitor=val/mIoU",
    )
    config = _scheduler(cli)
    assert config.interval == "epoch" and config.monitor == "val/mIoU"
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["nesterov"]


def test_early_stopping_and_deterministic(run_root: Path) -> None:
    """patience 0 and a min_delta no epoch can reach: epoch 0 sets the best, epoch 1 fails to beat it and
    training stops there, 3 epochs early. Run twice with deterministic=true: the same weights, bit for bit."""
    stopping = (
        "--trainer.deterministic=true",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor=val/mIoU",
        "--trainer.callbacks.mode=max",
        "--trainer.callbacks.patience=0",
        "--trainer.callbacks.min_delta=1.0",  # no epoch can improve by 1.0: stops after the patience
    )
    runs = [_fit(run_root / name, *stopping, epochs=5) for name in ("a", "b")]
    for cli in runs:
        assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 8  # 4 steps an epoch
        early = cli.trainer.early_stopping_callback
        assert early is not None and early.stopped_epoch == 1 and early.wait_count == 1
        assert math.isfinite(float(cli.trainer.callback_metrics["val/mIoU"]))
        summary = json.loads((Path(cli.trainer.log_dir) / "summary.json").read_text())
        assert summary["status"] == "stopped" and summary["stopped_by"] == "early_stopping"
    first, second = (cli.model.state_dict() for cli in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert float(runs[0].trainer.callback_metrics["val/mIoU"]) == float(
        runs[1].trainer.callback_metrics["val/mIoU"]
    )
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_torch_compile_trains(run_root: Path) -> None:
    cli = _fit(run_root, "--model.init_args.compile=true")
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    # the checkpoint holds the plain net's keys, loadable without compile
    state = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=False)["state_dict"]
    assert any(key.startswith("net.") for key in state) and not any("_orig_mod" in key for key in state)
