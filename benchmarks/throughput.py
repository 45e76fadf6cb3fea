"""Training throughput of ``fit`` against a bare PyTorch loop: our pipeline efficiency.

    python benchmarks/throughput.py --config configs/default.yaml [--steps 60] [--warmup 10] [--profile]
        [--device auto|cpu|cuda] [--tf32] [--flops] [--json PATH] [CLI overrides...]

* pipeline: ``Trainer.fit`` exactly as the CLI builds it from the config (data loading, device transfer,
  Kornia augmentation, net, loss, metric updates, logging), timed from global step ``warmup`` to step
  ``steps`` with validation, checkpointing and the logger off.
* bare: the same net (a fresh copy of the config's), batch size, crop size, precision, memory format,
  ``torch.compile`` and device; random tensors already on the device; forward, the module's loss, backward,
  optimizer step; nothing else.

Both are timed the same way: one device synchronisation at the start of step ``warmup`` and one after the
last step. Steps count across epochs (a small data set gives several); where the timed steps span an
epoch's end, the pipeline also synchronises there and leaves the time between the two epochs (epoch-end
metrics, the loader's restart) out of its images/s, reported on its own (``between_epochs_s``): it recurs
once per epoch, not per step. ``warmup_s`` is the time from the first
step to the timed window (it holds ``torch.compile``'s compilation and cuDNN's autotuning).

Prints both in images/s and their ratio (pipeline / bare); ``--profile`` adds a third run under
Lightning's SimpleProfiler and the median milliseconds per step of each phase (load, transfer, augment,
forward + loss + metrics, backward, optimizer), and the bare loop's phases (forward, loss, backward,
optimizer update) timed the same way, so the gap can be read phase by phase. ``--device`` picks the
accelerator for both sides (auto: the config's); ``--tf32`` lets float32 matrix products and convolutions
use TF32 on Ampere and later GPUs (both sides); ``--flops`` adds training FLOPs per image and the model FLOPs
utilisation (``benchmarks/gpu_metrics.py``). Extra arguments are CLI overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_seg.cli import build_cli  # noqa: E402
from lightning_seg.models.outputs import NetOutput, pad_to_multiple  # noqa: E402

DEVICES = ("auto", "cpu", "cuda")


class StepTimer(L.Callback):
    """Wall time of global steps ``warmup`` .. ``last`` (counted across epochs), with one device
    synchronisation at the start of the first timed step of each epoch and one after its last: a sync per
    step would hide the pipeline's overlap of host and device work, and its own host stalls.

    Attributes (after fit): ``seconds`` and ``images`` of the timed steps, ``timed_batches``, ``shape`` of
    the last batch the net saw (B×3×H×W, after augmentation), ``warmup_s`` (first step → timed window),
    ``between_epochs_s`` (one value per epoch boundary inside the window), ``running`` (True while a timed
    step is under way; read by other callbacks that measure the same window).
    """

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.step = -1  # global index of the batch under way
        self.seconds = 0.0
        self.images = 0
        self.timed_batches = 0
        self.shape: tuple[int, ...] = ()
        self.running = False
        self.warmup_s = 0.0
        self.between_epochs_s: list[float] = []
        self.device: torch.device | None = None  # the module's, from the start of training
        self._fit_start = self._segment_start = 0.0
        self._segment_end: float | None = None

    @staticmethod
    def _sync(module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def on_train_start(self, trainer, pl_module) -> None:
        self.device = pl_module.device
        self._sync(pl_module)
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step += 1
        if self.running or not self.warmup <= self.step <= self.last:
            return
        self._sync(pl_module)
        now = time.perf_counter()
        if self._segment_end is None:
            self.warmup_s = now - self._fit_start
        else:
            self.between_epochs_s.append(now - self._segment_end)
        self._segment_start, self.running = now, True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.running:
            return
        self.timed_batches += 1
        self.shape = tuple(batch["image"].shape)
        self.images += self.shape[0]
        if self.step >= self.last or batch_idx >= trainer.num_training_batches - 1:
            self._sync(pl_module)
            self._segment_end = time.perf_counter()
            self.seconds += self._segment_end - self._segment_start
            self.running = False


def cli_arguments(config: str, device: str, overrides: list[str]) -> list[str]:
    """The CLI arguments of a measurement: the config, the accelerator ``device`` picks (auto: the
    config's own) and the overrides, which come last and so win."""
    chosen = [] if device == "auto" else [f"--trainer.accelerator={device}", "--trainer.devices=1"]
    return ["--config", config, *chosen, *overrides]


def enable_tf32() -> None:
    """float32 matrix products and cuDNN convolutions in TF32 (Ampere and later; no effect on a CPU)."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def device_name(device: torch.device) -> str:
    """``cuda: NVIDIA H100 80GB HBM3`` or ``cpu: x86_64, 2 threads``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {platform.machine() or 'cpu'}, {torch.get_num_threads()} threads"


def make_trainer(
    accelerator: str,
    precision: Any,
    steps: int,
    callbacks: list[L.Callback],
    profiler: Any = None,
    **options: Any,
) -> L.Trainer:
    """The measuring Trainer: ``steps`` optimizer steps over as many epochs as that takes, no validation,
    checkpoint, logger, progress bar or model summary (``options`` turn some back on)."""
    settings: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    settings.update(options)
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        profiler=profiler,
        **settings,
    )


def _trainer(
    cli, steps: int, callbacks: list, profiler=None, real_run: bool = False, **options: Any
) -> L.Trainer:
    """The measuring Trainer on the CLI's device and precision; ``real_run`` adds what a CLI run has and
    the measuring Trainer leaves out: the project's progress bar and a TensorBoard logger (in a temporary
    folder) writing every ``log_every_n_steps`` of the config."""
    if real_run:
        import tempfile

        from lightning.pytorch.loggers import TensorBoardLogger

        from lightning_seg.callbacks.progress import default_progress_bar

        callbacks = [*callbacks, default_progress_bar()]
        options = {
            "logger": TensorBoardLogger(tempfile.mkdtemp(prefix="throughput_")),
            "log_every_n_steps": cli.trainer.log_every_n_steps,
            "enable_progress_bar": True,
            **options,
        }
    return make_trainer(
        cli.trainer.strategy.root_device.type, cli.trainer.precision, steps, callbacks, profiler, **options
    )


@dataclass
class Pipeline:
    """One timed ``fit``: its images/s, the timer, the CLI it was built from, an untrained copy of its net
    (for the bare loop) and the trainer."""

    images_per_s: float
    timer: StepTimer
    cli: Any
    net: torch.nn.Module
    trainer: L.Trainer


def measure_pipeline(
    cli_args: list[str],
    steps: int,
    warmup: int,
    callbacks: list[L.Callback] | None = None,
    profiler: Any = None,
    datamodule: L.LightningDataModule | None = None,
    timer: StepTimer | None = None,
    real_run: bool = False,
    **options: Any,
) -> Pipeline:
    """Time ``fit`` of the config in ``cli_args`` (extra ``callbacks`` see the same steps; ``datamodule``:
    one already set up, to spare rebuilding a data set between measurements of the same data; ``timer``:
    one made by the caller, for a profiler that reads its window; ``real_run``: with the progress bar and a
    logger, as a CLI run has them; ``options``: Trainer settings)."""
    cli = build_cli(cli_args, run=False)
    timer = timer if timer is not None else StepTimer(warmup, steps - 1)
    trainer = _trainer(cli, steps, [timer, *(callbacks or [])], profiler, real_run, **options)
    bare_net = copy.deepcopy(cli.model.net)  # untrained copy for the bare loop
    trainer.fit(cli.model, datamodule=datamodule if datamodule is not None else cli.datamodule)
    return Pipeline(timer.images_per_s, timer, cli, bare_net, trainer)


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


def _compiled(module: torch.nn.Module) -> bool:
    """Whether the module runs its net through ``torch.compile`` (``model.init_args.compile``): the
    compiled wrapper is kept beside the plain net, outside the module tree."""
    return module.__dict__.get("_run_net", getattr(module, "net", None)) is not getattr(module, "net", None)


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
    device synchronisation around each (so that run's images/s is not the one to report). The net runs in
    the module's memory format and, when the module compiles its net, compiled too."""
    module = cli.model
    net = net.to(device).train()
    run_net = torch.compile(net) if _compiled(module) else net
    loss = module.loss.to(device)
    optimizer = module.optimizer_builder([p for p in net.parameters() if p.requires_grad])
    image = torch.randn(shape, device=device)
    if getattr(module, "channels_last", False):
        image = image.contiguous(memory_format=torch.channels_last)
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
            # padded to the net's stride and cropped back, as SegmentationModule.forward does
            padded, (height, width) = pad_to_multiple(image, module.size_divisor)
            out = run_net(padded)
        since = mark("forward", since)
        logits = (out if isinstance(out, torch.Tensor) else out["mask"])[..., :height, :width]
        value = loss(NetOutput(logits), mask)["loss"]
        since = mark("loss", since)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        since = mark("backward", since)
        scaler.step(optimizer)
        scaler.update()
        mark("optimizer update", since)
    sync()
    return (steps - warmup) * shape[0] / (time.perf_counter() - start)


def describe(pipeline: Pipeline, args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    """The record of a measurement: what ran, where and when (the numbers are added by the caller)."""
    device = pipeline.trainer.strategy.root_device
    shape = pipeline.timer.shape
    return {
        "date": dt.date.today().isoformat(),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "command": command_line(),
        "config": args.config,
        "overrides": overrides,
        "batch_shape": list(shape),
        "batch": shape[0] if shape else None,
        "crop": list(shape[2:]),
        "precision": str(pipeline.trainer.precision),
        "tf32": bool(getattr(args, "tf32", False)),
        "real_run": bool(getattr(args, "real_run", False)),
        "steps": args.steps,
        "warmup": args.warmup,
        "timed_steps": pipeline.timer.timed_batches,
        "warmup_s": round(pipeline.timer.warmup_s, 3),
        "between_epochs_s": [round(s, 3) for s in pipeline.timer.between_epochs_s],
    }


def command_line() -> str:
    """This process's command line, without its ``--json PATH`` (where the record went, not what ran)."""
    argv, kept = sys.argv, []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            kept.append(arg)
    return shlex.join(["python", *kept])


def add_common_arguments(parser: argparse.ArgumentParser, steps: int = 60, warmup: int = 10) -> None:
    """The options every measurement script shares (config, steps, device, JSON output)."""
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=steps, help="training steps per measurement")
    parser.add_argument("--warmup", type=int, default=warmup, help="steps excluded from the timing")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="accelerator of both sides")
    parser.add_argument("--json", type=Path, help="also write the result here")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One clear line for settings that cannot measure anything."""
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup {args.warmup} must be >= 0 and below --steps {args.steps}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible here (torch.cuda.is_available() is False)")


def write_json(result: dict[str, Any], path: Path | None, echo: bool = True) -> None:
    """Print ``result`` (unless not ``echo``) and, given a path, write it there too."""
    text = json.dumps(result, indent=2)
    if echo:
        print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument("--profile", action="store_true", help="also a third run: the step by phase")
    parser.add_argument("--tf32", action="store_true", help="TF32 for float32 matmuls and convolutions")
    parser.add_argument("--flops", action="store_true", help="also training FLOPs per image and MFU")
    parser.add_argument(
        "--real-run",
        action="store_true",
        help="time the pipeline with the progress bar and a logger, as a CLI fit runs (their host reads count)",
    )
    args, overrides = parser.parse_known_args()
    check_arguments(parser, args)
    if args.tf32:
        enable_tf32()
    cli_args = cli_arguments(args.config, args.device, overrides)

    pipeline = measure_pipeline(cli_args, args.steps, args.warmup, real_run=args.real_run)
    device = pipeline.trainer.strategy.root_device
    precision = str(pipeline.trainer.precision)
    shape = pipeline.timer.shape
    bare = measure_bare(pipeline.cli, pipeline.net, shape, device, precision, args.steps, args.warmup)
    result = describe(pipeline, args, overrides)
    result.update(
        {
            "pipeline_images_per_s": float(f"{pipeline.images_per_s:.4g}"),
            "bare_images_per_s": float(f"{bare:.4g}"),
            "efficiency": round(pipeline.images_per_s / bare, 3),
            # the same with the epoch ends inside the window counted (validation is off here: what remains is
            # the loader's restart and the end-of-epoch hooks, which a real fit pays every epoch)
            "pipeline_images_per_s_with_epoch_ends": float(
                f"{pipeline.timer.images / (pipeline.timer.seconds + sum(pipeline.timer.between_epochs_s)):.4g}"
            ),
        }
    )
    if args.flops:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from gpu_metrics import utilisation  # a sibling script: benchmarks/ is no package

        result.update(utilisation(pipeline.net, shape, device, pipeline.images_per_s, bare))
    if args.profile:
        phases = profile_phases(cli_args, args.steps, args.warmup)
        result["phases_ms_per_step"] = {name: round(value, 2) for name, value in phases.items()}
        bare_phases: dict[str, list[float]] = {}
        measure_bare(
            pipeline.cli,
            copy.deepcopy(pipeline.net),
            shape,
            device,
            precision,
            args.steps,
            args.warmup,
            bare_phases,
        )
        result["bare_phases_ms_per_step"] = {
            name: round(sorted(values)[len(values) // 2], 2) for name, values in bare_phases.items()
        }
    write_json(result, args.json)


if __name__ == "__main__":
    main()
