"""Every precision Lightning offers trains and validates (two steps on the CPU where torch supports it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli

DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}


def _cpu_supports(dtype: torch.dtype) -> bool:
    """Whether this torch runs a convolution's forward and backward in ``dtype`` on the CPU."""
    try:
        conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(dtype)
        conv(torch.rand(1, 3, 8, 8, dtype=dtype)).sum().backward()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true", "16-true", "64-true"])
def test_each_precision_trains_and_validates(run_root: Path, precision: str) -> None:
    dtype = DTYPES.get(precision)
    if dtype is not None and not _cpu_supports(dtype):
        pytest.skip(f"torch {torch.__version__} has no CPU convolution in {dtype}")
    # Adam's eps must exist in float16 (see the next test)
    eps = ["--model.init_args.optimizer.init_args.eps=1e-4"] if precision == "16-true" else []
    cli = run_cli(
        [
            "fit",
            *tiny_args(run_root, *eps),
            f"--trainer.precision={precision}",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
        ]
    )
    assert cli is not None and cli.trainer.global_step == 2
    if dtype is not None:  # a true precision: the weights themselves are in it
        assert next(cli.model.net.parameters()).dtype == dtype
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    assert 0.0 <= float(cli.trainer.callback_metrics["val/mIoU"]) <= 1.0


def test_an_optimizer_eps_that_is_zero_in_float16_is_refused(run_root: Path, capsys) -> None:
    if not _cpu_supports(torch.float16):
        pytest.skip(f"torch {torch.__version__} has no CPU convolution in float16")
    assert (
        main(["fit", *tiny_args(run_root), "--trainer.precision=16-true", "--trainer.limit_train_batches=2"])
        == 2
    )
    assert_one_line_error(capsys, "model.optimizer eps 1e-08 is 0 in torch.float16", "eps: 1e-4")
