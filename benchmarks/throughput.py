"""Training throughput of ``fit`` against a bare PyTorch loop: our pipeline efficiency.

    python benchmarks/throughput.py --config configs/default.yaml [--steps 60] [--warmup 10] [CLI overrides...]

* pipeline: ``Trainer.fit`` exactly as the CLI builds it from the config (data loading, device transfer,
  Kornia augmentation, net, loss, metric updates, logging), timed from step ``warmup`` to step ``steps``
  with validation, checkpointing and the logger off.
* bare: the same net (a fresh copy of the config's), batch size, crop size, precision and device; random
  tensors already on the device; forward, the module's loss, backward, optimizer step; nothing else.

Prints both in images/s and their ratio (pipeline / bare). Extra arguments are CLI overrides.
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
    """Wall time from the start of batch ``warmup`` to the end of the last batch, synchronising the device."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0
        self.timed_batches = 0
        self.batch_size = 0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.timed_batches += 1
            self.batch_size = batch["image"].shape[0]
            self._sync(pl_module)
            self.end = time.perf_counter()


def measure_pipeline(cli_args: list[str], steps: int, warmup: int):
    cli = build_cli(cli_args, run=False)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
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
        callbacks=[timer],
    )
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
) -> float:
    module = cli.model
    net = net.to(device).train()
    loss = module.loss.to(device)
    optimizer = module.optimizer_builder([p for p in net.parameters() if p.requires_grad])
    image = torch.randn(shape, device=device)
    mask = torch.randint(0, module.num_classes, (shape[0], *shape[2:]), device=device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    for step in range(steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        with autocast:
            out = net(image)
        value = loss(NetOutput(out if isinstance(out, torch.Tensor) else out["mask"]), mask)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (steps - warmup) * shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from the timing")
    parser.add_argument("--json", type=Path, help="also write the result here")
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
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
