"""Training throughput of ``fit`` against a bare PyTorch loop: our pipeline efficiency.

    python benchmarks/throughput.py --config configs/default.yaml [--steps 60] [--warmup 10] [--profile]
        [CLI overrides...]

* pipeline: ``Trainer.fit`` exactly as the CLI builds it from the config (data loading, device transfer,
  Kornia augmentation, net, loss, metric updates, logging), timed from step ``warmup`` to step ``steps``
  with validation, checkpointing and the logger off.
* bare: the same net (a fresh copy of the config's), batch size, crop size, precision and device; random
  tensors already on the device; forward, the module's loss, backward, optimizer step; nothing else.

Both are timed the same way: one device synchronisation at the start of step ``warmup`` and one after the
last step. Prints both in images/s and their ratio (pipeline / bare); ``--profile`` adds a third run under
Lightning's SimpleProfiler and the median milliseconds per step of each phase (load, transfer, augment,
forward + loss + metrics, backward, optimizer), and the bare loop's phases (forward, loss, backward,
optimizer update) timed the same way, so the gap can be read phase by phase. Extra arguments are CLI overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_seg.cli import build_cli  # noqa: E402
from lightning_seg.models.outputs import NetOutput  # noqa: E402


class StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch, with one device
    synchronisation at each end (as the bare loop is timed): a sync per step would hide the pipeline's
    overlap of host and device work, and its own host stalls."""

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.start = self.end = 0.0
        self.timed_batches = 0
        self.batch_size = 0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_start(self, trainer, pl_module) -> None:
        self.last = min(self.last, trainer.num_training_batches - 1)  # an epoch shorter than --steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.timed_batches += 1
            self.batch_size = batch["image"].shape[0]
        if batch_idx == self.last:
            self._sync(pl_module)
            self.end = time.perf_counter()


def profile_phases(cli_args: list[str], steps: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per step of each phase of ``fit``, from Lightning's SimpleProfiler over the
    timed steps. Its actions nest: ``batch_to_device`` holds the data module's ``on_after_batch_transfer``
    (augmentation), and the optimizer step's closure holds the training step and the backward."""
    import tempfile

    from lightning.pytorch.profilers import SimpleProfiler

    cli = build_cli(cli_args, run=False)
    profiler = SimpleProfiler(dirpath=tempfile.mkdtemp(), filename="profile")  # the report to a file
    trainer = _trainer(cli, steps, [], profiler)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    data, module, strategy = type(cli.datamodule).__name__, "SegmentationModule", "SingleDeviceStrategy"

    def ms(action: str) -> float:
        values = sorted(profiler.recorded_durations.get(action, [])[warmup:])
        return 1000 * values[len(values) // 2] if values else 0.0

    augment = ms(f"[LightningDataModule]{data}.on_after_batch_transfer")
    to_device = ms(f"[Strategy]{strategy}.batch_to_device")
    forward, backward = ms(f"[Strategy]{strategy}.training_step"), ms(f"[Strategy]{strategy}.backward")
    optimizer_step, zero_grad = (
        ms(f"[LightningModule]{module}.optimizer_step"),
        ms(f"[LightningModule]{module}.optimizer_zero_grad"),
    )
    batch, load = ms("run_training_batch"), ms("[_TrainingEpochLoop].train_dataloader_next")
    return {
        "load (next batch from the loader)": load,
        "transfer to the device": to_device - augment,
        "augment + normalise (on_after_batch_transfer)": augment,
        "forward + loss + metric updates (training_step)": forward,
        "backward": backward,
        "optimizer update": optimizer_step - forward - backward,
        "zero_grad": zero_grad,
        "hooks, callbacks, logging": batch - optimizer_step - zero_grad,
        "step": batch + load + to_device,
    }


def _trainer(cli, steps: int, callbacks: list, profiler=None) -> L.Trainer:
    return L.Trainer(
        accelerator=cli.trainer.strategy.root_device.type,
        devices=1,
        precision=cli.trainer.precision,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        profiler=profiler,
    )


def measure_pipeline(cli_args: list[str], steps: int, warmup: int):
    cli = build_cli(cli_args, run=False)
    timer = StepTimer(warmup, steps - 1)
    trainer = _trainer(cli, steps, [timer])
    bare_net = copy.deepcopy(cli.model.net)  # untrained copy for the bare loop
    trainer.fit(cli.model, datamodule=cli.datamodule)
    images = timer.timed_batches * timer.batch_size
    sample = cli.datamodule.prepare_batch(next(iter(cli.datamodule.train_dataloader())), train=True)
    shape = tuple(sample["image"].shape)
    return images / (timer.end - timer.start), cli, bare_net, shape, trainer


def measure_bare(
    cli,
    net: torch.nn.Module,
    shape: tuple[int, ...],
    device: torch.device,
    precision: str,
    steps: int,
    warmup: int,
    phases: dict[str, list[float]] | None = None,
) -> float:
    """Images/s of the bare loop; with ``phases`` (a dict to fill) each step's phases are also timed, with a
    device synchronisation around each (so that run's images/s is not the one to report)."""
    module = cli.model
    net = net.to(device).train()
    loss = module.loss.to(device)
    optimizer = module.optimizer_builder([p for p in net.parameters() if p.requires_grad])
    image = torch.randn(shape, device=device)
    mask = torch.randint(0, module.num_classes, (shape[0], *shape[2:]), device=device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def mark(name: str, since: float) -> float:
        if phases is None:
            return since
        sync()
        now = time.perf_counter()
        if step >= warmup:
            phases.setdefault(name, []).append(1000 * (now - since))
        return now

    for step in range(steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        since = time.perf_counter()
        with autocast:
            out = net(image)
        since = mark("forward", since)
        value = loss(NetOutput(out if isinstance(out, torch.Tensor) else out["mask"]), mask)["loss"]
        since = mark("loss", since)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        since = mark("backward", since)
        scaler.step(optimizer)
        scaler.update()
        mark("optimizer update", since)
    sync()
    return (steps - warmup) * shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from the timing")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--profile", action="store_true", help="also a third run: the step by phase")
    args, overrides = parser.parse_known_args()
    cli_args = ["--config", args.config, *overrides]

    pipeline, cli, bare_net, shape, trainer = measure_pipeline(cli_args, args.steps, args.warmup)
    device = trainer.strategy.root_device
    bare = measure_bare(cli, bare_net, shape, device, str(trainer.precision), args.steps, args.warmup)
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    result = {
        "date": dt.date.today().isoformat(),
        "device": f"{device.type}: {device_name}, {torch.get_num_threads()} threads",
        "config": args.config,
        "overrides": overrides,
        "batch_shape": list(shape),
        "precision": str(trainer.precision),
        "pipeline_images_per_s": float(f"{pipeline:.4g}"),
        "bare_images_per_s": float(f"{bare:.4g}"),
        "efficiency": round(pipeline / bare, 3),
    }
    if args.profile:
        phases = profile_phases(cli_args, args.steps, args.warmup)
        result["phases_ms_per_step"] = {name: round(value, 2) for name, value in phases.items()}
        bare_phases: dict[str, list[float]] = {}
        measure_bare(
            cli,
            copy.deepcopy(bare_net),
            shape,
            device,
            str(trainer.precision),
            args.steps,
            args.warmup,
            bare_phases,
        )
        result["bare_phases_ms_per_step"] = {
            name: round(sorted(values)[len(values) // 2], 2) for name, values in bare_phases.items()
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
