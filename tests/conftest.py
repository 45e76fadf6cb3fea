"""Shared fixtures: tiny CLI runs on generated data, CPU only, nothing downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(REPO / "configs" / "default.yaml")

os.environ.setdefault("WANDB_MODE", "offline")


def tiny_args(root: Path, *extra: str, epochs: int = 1) -> list[str]:
    """CLI overrides that shrink the default run to seconds: 32 px images, a 2-level U-Net of width 4."""
    return [
        "--config",
        DEFAULT_CONFIG,
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        "--model.init_args.net.init_args.base_width=4",
        "--model.init_args.net.init_args.depth=2",
        "--data.init_args.num_train=16",
        "--data.init_args.num_val=8",
        "--data.init_args.num_test=8",
        "--data.init_args.num_predict=4",
        "--data.init_args.size=32",
        "--data.init_args.batch_size=4",
        *extra,
    ]


def assert_checkpoint_rebuilds(checkpoint: Path, trained: Any, side: int) -> Any:
    """``lightning_seg.load(checkpoint)``'s net gives the trained module's mask logits on a random
    1×3×side×side image (the checkpoint rebuilt the same net, weights and all). Returns the loaded model."""
    import torch

    import lightning_seg

    loaded = lightning_seg.load(checkpoint)
    image = torch.randn(1, 3, side, side)
    trained.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.net(image)["mask"], trained.net(image)["mask"])
    return loaded


@pytest.fixture
def run_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"
