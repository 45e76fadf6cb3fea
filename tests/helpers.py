"""What the tests share: the tiny CLI arguments, assertions used by several modules, and small classes the
tests name by class_path in YAML (``helpers.X``). Fixtures live in conftest.py; no test module imports another."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch

from lightning_seg.data.synthetic import SyntheticDataModule
from lightning_seg.models import UNet, as_net_output

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(REPO / "configs" / "default.yaml")
ERROR_PREFIX = "lightning-seg: error: "


TINY_CALLBACKS = str(Path(__file__).with_name("tiny_callbacks.yaml"))


def tiny_args(root: Path, *extra: str, epochs: int = 1, plots: bool = False) -> list[str]:
    """CLI overrides that shrink the default run to seconds: 32 px images, a 2-level U-Net of width 4, and
    the default callbacks without the run plots and sample overlays (``plots=True`` keeps them)."""
    return [
        "--config",
        DEFAULT_CONFIG,
        *([] if plots else ["--config", TINY_CALLBACKS]),
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


def voc_kaggle_args(runs: Path, data: Path) -> list[str]:
    """``tiny_args`` on a ``data_trees.voc_kaggle_tree``: the multi-label MicroUNet at 32×32."""
    return tiny_args(
        runs,
        "--data", "lightning_seg.data.VOCKaggleDataModule",
        "--data.root", str(data),
        "--data.size", "[32,32]",
        "--data.batch_size", "2",
        "--data.val_fraction", "0.25",
        "--data.allow_absent_classes=true",
        "--model.init_args.label_mode=multi",
        "--model.init_args.net=lightning_seg.models.MicroUNet",
        "--model.init_args.net.base_width=8",
    )  # fmt: skip


def shipped_voc_kaggle_args(config: str, runs: Path, data: Path, *extra: str) -> list[str]:
    """A shipped ``configs/voc_kaggle/<config>.yaml`` shrunk to seconds on a ``data_trees.voc_kaggle_tree``:
    32×32 images, fp32, one epoch, no workers, runs under ``runs``; ``extra`` shrinks its net."""
    return [
        "--config", str(REPO / "configs" / "voc_kaggle" / f"{config}.yaml"),
        f"--data.init_args.root={data}",
        "--data.init_args.size=[32,32]",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        "--data.init_args.val_fraction=0.25",
        "--data.init_args.allow_absent_classes=true",
        "--trainer.precision=32-true",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={runs}",
        f"--trainer.logger.init_args.save_dir={runs}",
        *extra,
    ]  # fmt: skip


class TinyRun(NamedTuple):
    """A tiny trained run of the default config (conftest's ``tiny_run``): its folder and checkpoints."""

    run: Path
    best: Path
    last: Path


def make_checkpoint(root: Path) -> Path:
    """Train the default config with ``tiny_args`` for one epoch; its ``last.ckpt`` (a few seconds)."""
    from lightning_seg.cli import main

    assert main(["fit", *tiny_args(root)]) == 0
    return next(root.glob("*/version_*/checkpoints/last.ckpt"))


def assert_checkpoint_rebuilds(checkpoint: Path, trained: Any, side: int) -> Any:
    """``lightning_seg.load(checkpoint)``'s net gives the trained module's mask logits on a random
    1×3×side×side image (the checkpoint rebuilt the same net, weights and all). Returns the loaded model."""
    import lightning_seg

    loaded = lightning_seg.load(checkpoint)
    image = torch.randn(1, 3, side, side)
    trained.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            as_net_output(loaded.module.net(image)).mask, as_net_output(trained.net(image)).mask
        )
    return loaded


def assert_one_line_error(
    source: Any,
    *fragments: str,
    pattern: str | None = None,
    max_len: int | None = None,
    uncounted: str | Path | None = None,
    prefix: str = ERROR_PREFIX,
) -> str:
    """The output of a refused command is one non-blank line, ``lightning-seg: error: ...`` (or ``prefix``),
    holding every fragment (and matching ``pattern``, a regex), no traceback, and of at most ``max_len``
    characters after the prefix (``uncounted``, a folder the test chose, not counted where it appears).

    ``source``: pytest's ``capsys`` (its stderr is read, and so consumed) or the text itself. Returns the line."""
    text = source.readouterr().err if hasattr(source, "readouterr") else source
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(prefix), line
    assert "Traceback" not in line, line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    if pattern is not None:
        assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    if max_len is not None:
        message = line.removeprefix(prefix)
        if uncounted is not None:
            message = message.replace(str(uncounted), "")
        assert len(message) <= max_len, f"{len(message)} characters: {message}"
    return line


class RecordsGradNorm(L.Callback):
    """Records the total 2-norm of the gradients of every optimizer step twice: as backward left them
    (``before_clipping``: Lightning calls ``on_before_optimizer_step`` before it clips) and as the optimizer
    used them (``stepped``: an optimizer step post-hook, after clipping; the step leaves ``.grad`` alone and
    a pre-hook would run before the closure computes the gradients)."""

    def __init__(self) -> None:
        self.before_clipping: list[float] = []
        self.stepped: list[float] = []

    @staticmethod
    def _norm(optimizer: torch.optim.Optimizer) -> float:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        assert grads, "no gradients"
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            optimizer.register_step_post_hook(lambda opt, args, kwargs: self.stepped.append(self._norm(opt)))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self.before_clipping.append(self._norm(optimizer))


class OneClassDataModule(SyntheticDataModule):
    """A broken dataset definition: a single class cannot make a segmentation task."""

    class_names = ("background",)


class StopAfterEpoch(L.Callback):
    """Ends training after the first epoch, like an interrupted job (its last.ckpt is already written)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


class CrashAtStep(L.Callback):
    """Fails at the end of optimizer step ``step`` (before any checkpoint of that step), like a killed job;
    with ``hard`` the process is killed outright (SIGKILL: nothing runs after it, no cleanup)."""

    def __init__(self, step: int, hard: bool = False) -> None:
        self.step = step
        self.hard = hard

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if trainer.global_step == self.step:
            if self.hard:
                import os
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"simulated crash at step {self.step}")


class NonFiniteBatchAtStep(L.Callback):
    """Makes the batch of optimizer step ``step + 1`` NaN (its loss non-finite), as an overflow would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        if trainer.global_step == self.step:
            batch["image"].fill_(float("nan"))


class InterruptAtStep(L.Callback):
    """Presses Ctrl-C after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class RecordsDDPForward(UNet):
    """A U-Net that appends to ``$LIGHTNING_SEG_DDP_RECORD.<rank>`` whether each training forward runs inside
    DistributedDataParallel's forward: where ``model.compile``'s compiled net runs, and what Dynamo checks to
    split the compiled graph at DDP's gradient buckets (DDPOptimizer) so all-reduces overlap the backward."""

    def forward(self, x):  # noqa: ANN001, ANN201
        path = os.environ.get("LIGHTNING_SEG_DDP_RECORD")
        if self.training and path:
            from torch.nn.parallel import DistributedDataParallel

            inside = DistributedDataParallel._get_active_ddp_module() is not None
            with open(f"{path}.{os.environ.get('LOCAL_RANK', '0')}", "a") as record:
                record.write(f"{inside}\n")
        return super().forward(x)
