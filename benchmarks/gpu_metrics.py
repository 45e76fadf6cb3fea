"""What a training step costs against the hardware (issue 15): model FLOPs utilisation, host-device
synchronisations per step, the data path's share of a step, and the precision / memory-format / cuDNN
autotuner / compile variants. Each subcommand times ``fit`` the way ``benchmarks/throughput.py`` does (its
``StepTimer``: one device synchronisation at each end of the timed steps) and writes one JSON record.

    python benchmarks/gpu_metrics.py syncs      --config C [--steps 24] [--warmup 4] [--device D] [--json P]
                                                [CLI overrides...]
    python benchmarks/gpu_metrics.py data-share --config C [...] [--trace-dir DIR] [--trace-steps 5]
    python benchmarks/gpu_metrics.py variants   --config C [...]   (see VARIANTS)
    python benchmarks/gpu_metrics.py torchgeo   --config C [...]   (benchmarks/torchgeo_compare.py)
    python benchmarks/gpu_metrics.py table      --results DIR --out gpu_table.md   (benchmarks/gpu_table.py)

MFU is added to a throughput record by ``throughput.py --flops`` (:func:`utilisation`). The whole set runs
in one command through ``benchmarks/gpu_suite.sh``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import datetime as dt
import gc
import gzip
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.profilers import Profiler
from torch.autograd import DeviceType
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import (  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
    StepTimer,
    add_common_arguments,
    check_arguments,
    cli_arguments,
    command_line,
    describe,
    device_name,
    enable_tf32,
    measure_pipeline,
    write_json,
)

# ------------------------------------------------------------------------------------------------ FLOPs
PEAK_BF16_DENSE: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H200",), 989e12),
    (("H100", "PCIe"), 756e12),
    (("H100", "NVL"), 835e12),
    (("H100",), 989e12),  # SXM: torch reports "NVIDIA H100 80GB HBM3"
    (("A100",), 312e12),
)
"""Datasheet dense (no sparsity) bf16 tensor-core FLOP/s by words of the device name, first match wins."""


def peak_bf16_flops(name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name (``torch.cuda.get_device_name``); None when unknown."""
    for words, peak in PEAK_BF16_DENSE:
        if all(word in name for word in words):
            return peak
    return None


def training_flops_per_image(net: torch.nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    """Training FLOPs per image: 3 × the forward FLOPs torch's ``FlopCounterMode`` counts (the backward
    costs about twice the forward) for a batch of two float32 ``shape[1:]`` images (two, so that BatchNorm
    sees a batch), divided by two. Counted on a copy, so the net's weights and statistics stay as they are."""
    copy_ = copy.deepcopy(net).to(device).train()
    images = torch.randn((2, *shape[1:]), device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        copy_(images)
    return 3 * counter.get_total_flops() / 2


def measured_matmul_flops(device: torch.device, n: int = 8192, repeats: int = 10) -> float | None:
    """The bf16 FLOP/s of an n×n×n matrix product on this GPU (median of ``repeats`` timed with CUDA events
    after three warm-ups, random operands): the rate this card reaches, beside the datasheet peak. None on
    a CPU."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * n**3 / statistics.median(times)


def utilisation(
    net: torch.nn.Module, shape: tuple[int, ...], device: torch.device, pipeline: float, bare: float
) -> dict[str, Any]:
    """Training FLOPs per image and the model FLOPs utilisation of ``pipeline`` and ``bare`` images/s
    against the GPU's dense bf16 peak (``"n/a"`` on a CPU or an unknown GPU) and against the bf16 matrix
    product rate measured here."""
    flops = training_flops_per_image(net, shape, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak = peak_bf16_flops(name) if name else None
    matmul = measured_matmul_flops(device)

    def share(rate: float, ceiling: float | None) -> float | str:
        return round(flops * rate / ceiling, 4) if ceiling else "n/a"

    return {
        "train_flops_per_image": float(f"{flops:.4g}"),
        "peak_bf16_flops": peak if peak is not None else "n/a",
        "mfu": share(pipeline, peak),
        "mfu_bare": share(bare, peak),
        "matmul_bf16_flops_measured": float(f"{matmul:.4g}") if matmul else "n/a",
        "mfu_of_measured_matmul": share(pipeline, matmul),
    }


# ------------------------------------------------------------------------------------------------ syncs
SYNC_MESSAGE = "called a synchronizing CUDA operation"
"""What torch warns on each synchronising call under ``torch.cuda.set_sync_debug_mode("warn")``."""


class SyncCounter(L.Callback):
    """Synchronisations per training step, from the start of one step to the start of the next (so a step's
    count holds its compute, its callbacks and logging, and the next batch's load, transfer and
    augmentation). Steps before ``warmup`` are left out (one-time work: cuDNN's autotuning, the optimizer's
    state); a window that crosses an epoch's end is counted apart (epoch-end metrics read the device once
    per epoch by design). The window that ends the fit is never closed, so it is not counted."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.step = -1
        self.per_step: list[int] = []
        self.epoch_end: list[int] = []
        self.sites: collections.Counter[str] = collections.Counter()
        self._count = 0
        self._crosses_epoch = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.step >= self.warmup:
            (self.epoch_end if self._crosses_epoch else self.per_step).append(self._count)
        self.step += 1
        self._count, self._crosses_epoch = 0, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._crosses_epoch = batch_idx >= trainer.num_training_batches - 1

    def record(self, site: str) -> None:
        if self.step >= self.warmup:
            self._count += 1
            self.sites[site] += 1


REPO = Path(__file__).resolve().parents[1]


def _sync_site(frame: FrameType | None) -> str:
    """``file:line (function)`` of the innermost frame outside torch, the warnings module and this file:
    the code that asked for the synchronising call (paths relative to the repository or site-packages)."""
    skipped = ("/torch/", "/warnings.py", f"/{Path(__file__).name}")
    while frame is not None:
        name = frame.f_code.co_filename.replace("\\", "/")
        if not any(part in name for part in skipped):
            if name.startswith(str(REPO)):
                name = name[len(str(REPO)) + 1 :]
            return f"{name.split('site-packages/')[-1]}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "unknown"


@contextlib.contextmanager
def captured_sync_warnings(counter: SyncCounter) -> Iterator[None]:
    """Hand each synchronisation warning to ``counter`` (with the code that caused it) instead of printing
    it; other warnings print as usual."""
    with warnings.catch_warnings():
        # every occurrence, not the first per call site: the count is the point
        warnings.filterwarnings("always", message=SYNC_MESSAGE)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if SYNC_MESSAGE in str(message):
                counter.record(_sync_site(sys._getframe(1)))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def sync_warnings(counter: SyncCounter) -> Iterator[None]:
    """Run with ``torch.cuda.set_sync_debug_mode("warn")`` (torch then warns at each synchronising call)
    and count the warnings into ``counter``; the mode before is restored after."""
    previous = torch.cuda.get_sync_debug_mode()
    with captured_sync_warnings(counter):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)


def count_syncs(cli_args: list[str], steps: int, warmup: int) -> dict[str, Any]:
    """Host-device synchronisations per training step of ``fit`` with the progress bar and the logger of a
    real run (so a logging step's reads, every ``log_every_n_steps``, are among those counted; give
    ``steps`` past one of them). CUDA only: on a CPU nothing waits and torch reports nothing ("n/a")."""
    counter = SyncCounter(warmup)
    watch = sync_warnings(counter) if torch.cuda.is_available() else contextlib.nullcontext()
    with watch:
        pipeline = measure_pipeline(cli_args, steps, warmup, [counter], real_run=True)
    if pipeline.trainer.strategy.root_device.type != "cuda":
        return {"pipeline": pipeline, "syncs_per_step": "n/a", "why": "CPU: torch reports CUDA syncs only"}
    return {
        "pipeline": pipeline,
        "syncs_per_step": round(statistics.fmean(counter.per_step), 3) if counter.per_step else "n/a",
        "syncs_per_step_max": max(counter.per_step, default=0),
        "counted_steps": len(counter.per_step),
        "syncs_at_epoch_end": counter.epoch_end,
        "sites": dict(counter.sites.most_common(8)),
    }


# ------------------------------------------------------------------------------------------- data share
DATA_PHASES: dict[str, tuple[str, str]] = {
    "load": ("[_TrainingEpochLoop]", ".train_dataloader_next"),
    "to_device": ("[Strategy]", ".batch_to_device"),
    "augment": ("[LightningDataModule]", ".on_after_batch_transfer"),
}
"""Lightning's profiler actions of the data path (prefix, suffix): waiting for the loader's next batch, the
transfer to the device (it holds the data module's augmentation + normalisation, ``augment``)."""


class PhaseClock(Profiler):
    """A Lightning profiler that times the data path's actions inside ``timer``'s window: host seconds
    always, and on a GPU the span each action takes on the device's timeline (a CUDA event recorded when
    it starts and one when it ends). On that timeline a transfer or augmentation costs its kernels plus any
    idle time its host work leaves, and a wait for the loader costs only the time the GPU ran dry."""

    def __init__(self, timer: StepTimer) -> None:
        super().__init__()
        self.timer = timer
        self.records: dict[str, list[tuple[float, Any, Any]]] = {phase: [] for phase in DATA_PHASES}
        self._open: dict[str, tuple[str, float, Any]] = {}

    @staticmethod
    def _phase(action: str) -> str | None:
        for phase, (prefix, suffix) in DATA_PHASES.items():
            if action.startswith(prefix) and action.endswith(suffix):
                return phase
        return None

    def _event(self) -> Any:
        if self.timer.device is None or self.timer.device.type != "cuda":
            return None
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self, action_name: str) -> None:
        phase = self._phase(action_name)
        if phase is not None and self.timer.running:
            self._open[action_name] = (phase, time.perf_counter(), self._event())

    def stop(self, action_name: str) -> None:
        opened = self._open.pop(action_name, None)
        if opened is not None:
            phase, since, start = opened
            self.records[phase].append((time.perf_counter() - since, start, self._event()))

    def summary(self) -> str:
        return ""

    def mean_ms(self, phase: str, timeline: str) -> float:
        """Mean milliseconds of ``phase`` per occurrence: ``host`` or ``device`` (the events' span; call
        after the device has finished, e.g. after ``torch.cuda.synchronize()``)."""
        records = self.records[phase]
        if not records:
            return 0.0
        if timeline == "host":
            return 1000 * statistics.fmean(host for host, _, _ in records)
        return statistics.fmean(start.elapsed_time(end) for _, start, end in records)


def data_share(cli_args: list[str], steps: int, warmup: int) -> dict[str, Any]:
    """The share of a training step spent loading, transferring and augmenting: the phases' mean time per
    step over the mean step time of the timed window. On a GPU the phases are read on the device's
    timeline (:class:`PhaseClock`); on a CPU, where nothing overlaps, in host time."""
    timer = StepTimer(warmup, steps - 1)
    clock = PhaseClock(timer)
    pipeline = measure_pipeline(cli_args, steps, warmup, profiler=clock, timer=timer)
    on_gpu = pipeline.trainer.strategy.root_device.type == "cuda"
    if on_gpu:
        torch.cuda.synchronize()
    timeline = "device" if on_gpu else "host"
    step_ms = 1000 * timer.seconds / max(timer.timed_batches, 1)
    load, to_device, augment = (clock.mean_ms(phase, timeline) for phase in ("load", "to_device", "augment"))
    result: dict[str, Any] = {
        "pipeline": pipeline,
        "basis": "GPU timeline (CUDA events)" if on_gpu else "host time (CPU: nothing overlaps)",
        "step_ms": round(step_ms, 3),
        "load_ms": round(load, 3),
        "transfer_ms": round(to_device - augment, 3),
        "augment_ms": round(augment, 3),
        "data_share": round((load + to_device) / step_ms, 4),
        "pipeline_images_per_s": float(f"{pipeline.images_per_s:.4g}"),
    }
    if on_gpu:
        result["host_ms"] = {phase: round(clock.mean_ms(phase, "host"), 3) for phase in DATA_PHASES}
    return result


# --------------------------------------------------------------------------------------- trace summary
class RecordFunctions(Profiler):
    """A Lightning profiler that names every action of the loop in torch.profiler's trace
    (``record_function``), so the trace's ranges read as Lightning's phases."""

    def __init__(self) -> None:
        super().__init__()
        self._open: dict[str, Any] = {}

    def start(self, action_name: str) -> None:
        record = torch.autograd.profiler.record_function(action_name)
        record.__enter__()
        self._open[action_name] = record

    def stop(self, action_name: str) -> None:
        record = self._open.pop(action_name, None)
        if record is not None:
            record.__exit__(None, None, None)

    def summary(self) -> str:
        return ""


class TraceWindow(L.Callback):
    """Runs torch.profiler over the steps ``first`` .. ``last`` (one synchronisation at each end); ``cuda``
    says, once it ran, whether the module was on a GPU."""

    def __init__(self, first: int, last: int) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profile = torch.profiler.profile(activities=activities)
        self.first, self.last, self.step, self.cuda = first, last, -1, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step += 1
        if self.step == self.first:
            self.cuda = pl_module.device.type == "cuda"
            if self.cuda:
                torch.cuda.synchronize()
            self.profile.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.step == self.last:
            if self.cuda:
                torch.cuda.synchronize()
            self.profile.stop()


def trace_summary(
    cli_args: list[str], warmup: int, active: int, out_dir: Path | None, datamodule=None
) -> dict[str, Any]:
    """torch.profiler over ``active`` steps after ``warmup``: the ops that take the most device time (CPU
    time on a CPU), the data phases' share of it, and (with ``out_dir``) ``trace_summary.txt`` and the
    Chrome trace ``trace.json.gz`` written there.

    Device time is counted as torch's own table counts it: each kernel and copy once, never the ranges
    (``record_function``) around them; an op's time is its own kernels', a phase's the kernels launched
    inside it."""
    window = TraceWindow(warmup, warmup + active - 1)
    measure_pipeline(
        cli_args, warmup + active, warmup, [window], profiler=RecordFunctions(), datamodule=datamodule
    )
    events = window.profile.events()
    cuda = window.cuda
    on_host = [e for e in events if e.device_type == DeviceType.CPU]
    ranges = [e for e in on_host if getattr(e, "is_user_annotation", False)]
    ops = [e for e in on_host if not getattr(e, "is_user_annotation", False)]
    if cuda:
        kernels = [
            e
            for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        ]
        busy = sum(e.self_device_time_total for e in kernels)  # µs

        def own(event: Any) -> float:
            return event.self_device_time_total

        def inside(event: Any) -> float:
            return event.device_time_total

    else:
        busy = sum(e.self_cpu_time_total for e in on_host)

        def own(event: Any) -> float:
            return event.self_cpu_time_total

        def inside(event: Any) -> float:
            return event.cpu_time_total

    phases = dict.fromkeys(DATA_PHASES, 0.0)
    for event in ranges:
        phase = PhaseClock._phase(event.name)
        if phase is not None:
            phases[phase] += inside(event)
    by_op: collections.Counter[str] = collections.Counter()
    for event in ops:
        by_op[event.name] += own(event)
    result: dict[str, Any] = {
        "profiled_steps": active,
        "time_basis": "GPU (kernels and copies)" if cuda else "CPU",
        "busy_ms_per_step": round(busy / 1000 / active, 3),
        "data_phases_share_of_busy_time": round((phases["load"] + phases["to_device"]) / busy, 4)
        if busy
        else "n/a",
        "top_ops": [
            {"op": name, "share": round(time_ / busy, 4) if busy else 0.0}
            for name, time_ in by_op.most_common(8)
        ],
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        table = window.profile.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=70)
        (out_dir / "trace_summary.txt").write_text(table)
        raw = out_dir / "trace.json"
        window.profile.export_chrome_trace(str(raw))
        with raw.open("rb") as source, gzip.open(out_dir / "trace.json.gz", "wb") as target:
            shutil.copyfileobj(source, target)
        raw.unlink()
        result["files"] = ["trace_summary.txt", "trace.json.gz"]
    return result


# ------------------------------------------------------------------------------------------- variants
class Variant(NamedTuple):
    """One way to run the same training: CLI overrides, TF32 for float32 math, cuDNN's autotuner."""

    name: str
    precision: str
    channels_last: bool = False
    compile: bool = False
    tf32: bool = False
    cudnn_benchmark: bool = False

    def overrides(self) -> list[str]:
        return [
            f"--trainer.precision={self.precision}",
            f"--model.init_args.channels_last={str(self.channels_last).lower()}",
            f"--model.init_args.compile={str(self.compile).lower()}",
        ]


VARIANTS: tuple[Variant, ...] = (
    Variant("bf16-mixed", "bf16-mixed"),
    Variant("32-true + TF32", "32-true", tf32=True),
    Variant("bf16-mixed + channels_last", "bf16-mixed", channels_last=True),
    Variant("bf16-mixed + cudnn.benchmark", "bf16-mixed", cudnn_benchmark=True),
    Variant("bf16-mixed + compile", "bf16-mixed", compile=True),  # last: the slowest to start
)
"""The first is the reference the others are compared with; each changes one thing."""


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and convolutions inside the block when ``enabled``; the settings before
    it are restored after."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    if enabled:
        enable_tf32()
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def measure_variants(
    cli_args: list[str], steps: int, warmup: int, save: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Pipeline images/s of each of :data:`VARIANTS` back to back, on one data set (built once); the
    speed-ups against the first, and compile time: the compiled run's ``warmup_s`` less the reference's.
    ``save`` gets the result after each variant, so a run stopped early keeps what it measured."""
    rows: dict[str, dict[str, Any]] = {}
    datamodule = None
    result: dict[str, Any] = {"variants": rows}
    for variant in VARIANTS:
        gc.collect()  # the last variant's model, optimizer state and loader workers
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        with tf32(variant.tf32):
            # benchmark given every time: Lightning sets cuDNN's flag for the whole process
            pipeline = measure_pipeline(
                [*cli_args, *variant.overrides()],
                steps,
                warmup,
                datamodule=datamodule,
                benchmark=variant.cudnn_benchmark,
            )
        datamodule = datamodule or pipeline.cli.datamodule
        row = {
            "overrides": variant.overrides(),
            "tf32": variant.tf32,
            "cudnn_benchmark": variant.cudnn_benchmark,
            "images_per_s": float(f"{pipeline.images_per_s:.4g}"),
            "warmup_s": round(pipeline.timer.warmup_s, 2),
        }
        rows[variant.name] = row
        result["pipeline"] = result.get("pipeline", pipeline)
        reference = rows[VARIANTS[0].name]
        row["speedup"] = round(row["images_per_s"] / reference["images_per_s"], 3)
        if variant.compile:
            row["compile_s"] = round(row["warmup_s"] - reference["warmup_s"], 1)
        if save is not None:
            save(result)
    return result


# ------------------------------------------------------------------------------------------------- CLI
def _record(outcome: dict[str, Any], args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    """The JSON record: what ran and where (from the pipeline run; without one, the command and the date)
    + the measurement's numbers."""
    pipeline = outcome.pop("pipeline", None)
    if pipeline is not None:
        record = describe(pipeline, args, overrides)
    else:
        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if cuda else "cpu")
        record = {
            "date": dt.date.today().isoformat(),
            "command": command_line(),
            "device": device_name(device),
        }
    record["measurement"] = args.command
    record.update(outcome)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, steps, warmup in (("syncs", 24, 4), ("data-share", 40, 10), ("variants", 40, 10)):
        sub = commands.add_parser(name)
        add_common_arguments(sub, steps, warmup)
        if name == "data-share":
            sub.add_argument("--trace-dir", type=Path, help="write trace_summary.txt and trace.json.gz here")
            sub.add_argument("--trace-steps", type=int, default=5, help="steps under torch.profiler")
    sub = commands.add_parser("torchgeo")
    add_common_arguments(sub, 40, 10)
    sub = commands.add_parser("table")
    sub.add_argument("--results", type=Path, required=True, help="folder of the suite's JSON records")
    sub.add_argument("--out", type=Path, required=True, help="the Markdown table")
    sub.add_argument("--merged", type=Path, help="also write every record in one JSON file here")
    sub.add_argument("--title", default="", help="a line above the table")
    args, overrides = parser.parse_known_args(argv)

    if args.command == "table":
        from gpu_table import write_table

        write_table(args.results, args.out, args.merged, args.title)
        return
    check_arguments(parser, args)
    cli_args = cli_arguments(args.config, args.device, overrides)
    if args.command == "syncs":
        outcome = count_syncs(cli_args, args.steps, args.warmup)
    elif args.command == "data-share":
        outcome = data_share(cli_args, args.steps, args.warmup)
        datamodule = outcome["pipeline"].cli.datamodule
        try:  # the share is measured; a failing summary must not lose it
            outcome["trace"] = trace_summary(
                cli_args, args.warmup, args.trace_steps, args.trace_dir, datamodule
            )
        except Exception as error:
            outcome["trace"] = {"error": f"{type(error).__name__}: {error}"}
    elif args.command == "variants":

        def save(partial: dict[str, Any]) -> None:
            if args.json is not None:
                write_json(_record(dict(partial), args, overrides), args.json, echo=False)

        outcome = measure_variants(cli_args, args.steps, args.warmup, save)
    else:
        from torchgeo_compare import compare

        outcome = compare(cli_args, args.steps, args.warmup)
    write_json(_record(outcome, args, overrides), args.json)


if __name__ == "__main__":
    main()
