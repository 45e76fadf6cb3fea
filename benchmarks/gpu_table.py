"""One Markdown table from the JSON records of ``benchmarks/gpu_suite.sh`` (issue 15).

    python benchmarks/gpu_metrics.py table --results DIR --out gpu_table.md [--merged results.json]

Each row: the measurement, its result, the issue's target and whether it is met, the command that
measured it, and the device and date. A record holding ``error`` (a step that failed or ran out of time)
gives a row saying so; a missing record, "not run".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Record = dict[str, Any]

FOOTER = (
    "CamVid quality (issue 15's 30-minute target, test mIoU >= 0.62 from scratch) is not part of this suite: "
    "`python benchmarks/camvid.py --config configs/camvid/unet.yaml --minutes 30` on a GPU machine holding "
    "the whole CamVid (182 MB; one device command lasts at most 10 minutes and carries 64 MiB, see "
    'BENCHMARKS.md, "GPU suite (issue 15): how to run").'
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rate(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else str(value)


def _batch(record: Record) -> str:
    shape = record.get("batch_shape") or []
    size = "×".join(str(v) for v in shape[2:])
    return f"batch {shape[0]} at {size}, {record.get('precision')}" if shape else str(record.get("precision"))


def _met(value: Any, target: float, at_least: bool, record: Record) -> str:
    """yes/no against the target; "—" without a number, and "(CPU)" after it on a CPU, where the GPU
    targets say nothing."""
    if not isinstance(value, int | float):
        return "—"
    met = value >= target if at_least else value <= target
    answer = "yes" if met else "no"
    return f"{answer} (CPU)" if record.get("device_type") == "cpu" else answer


def efficiency_row(record: Record) -> tuple[str, str]:
    eff = record["efficiency"]
    result = (
        f"**{eff:.3f}** (pipeline {_rate(record['pipeline_images_per_s'])}, bare "
        f"{_rate(record['bare_images_per_s'])} img/s; {_batch(record)})"
    )
    ends = record.get("between_epochs_s") or []
    with_ends = record.get("pipeline_images_per_s_with_epoch_ends")
    if ends and isinstance(with_ends, int | float):
        ratio = with_ends / record["bare_images_per_s"]
        result += f"; {ratio:.3f} with the {len(ends)} epoch end(s) in the window ({sum(ends):.2f} s) counted"
    return result, _met(eff, 0.97, True, record)


def mfu_row(record: Record) -> tuple[str, str]:
    flops, rate = record.get("train_flops_per_image"), record["pipeline_images_per_s"]
    if not isinstance(flops, int | float):
        return "not measured (run throughput.py with --flops)", "—"
    achieved = f"{flops / 1e9:.1f} GFLOP/image × {_rate(rate)} img/s = {flops * rate / 1e12:.3g} TFLOP/s"
    mfu, peak = record.get("mfu"), record.get("peak_bf16_flops")
    if not isinstance(mfu, int | float):
        return f"n/a: no bf16 peak known for this device ({achieved})", "—"
    measured = record.get("matmul_bf16_flops_measured")
    extra = (
        f"; {_percent(record.get('mfu_of_measured_matmul'))} of the {measured / 1e12:.0f} TFLOP/s a bf16 "
        "8192³ matmul reached here"
        if isinstance(measured, int | float)
        else ""
    )
    result = (
        f"**{mfu:.1%}** ({achieved} ÷ {peak / 1e12:.0f} TFLOP/s dense bf16 peak; bare loop "
        f"{_percent(record.get('mfu_bare'))}{extra})"
    )
    return result, _met(mfu, 0.25, True, record)


def data_share_row(record: Record) -> tuple[str, str]:
    share = record["data_share"]
    trace = record.get("trace", {})
    top = ", ".join(f"{op['op']} {op['share']:.0%}" for op in trace.get("top_ops", [])[:3])
    result = (
        f"**{share:.1%}** of a {record['step_ms']:.1f} ms step (load {record['load_ms']:.2f} ms, transfer "
        f"{record['transfer_ms']:.2f} ms, augment {record['augment_ms']:.2f} ms; {record['basis']}); "
        f"torch.profiler over {trace.get('profiled_steps', '?')} steps: data phases "
        f"{_percent(trace.get('data_phases_share_of_busy_time'))} of the {trace.get('time_basis', '?')} time, "
        f"top ops {top}"
    )
    return result, _met(share, 0.05, False, record)


def syncs_row(record: Record) -> tuple[str, str]:
    value = record["syncs_per_step"]
    if not isinstance(value, int | float):
        return f"n/a ({record.get('why', 'not counted')})", "—"
    sites = "; ".join(f"{site} ×{count}" for site, count in record.get("sites", {}).items()) or "none"
    result = (
        f"**{value:g}** (max {record['syncs_per_step_max']} over {record['counted_steps']} steps; at "
        f"epoch ends {record['syncs_at_epoch_end']}); where: {sites}"
    )
    return result, _met(value, 0, False, record)


def _versus(record: Record, name: str, reference: str, target: float | None) -> tuple[str, str]:
    rows = record["variants"]
    if name not in rows or reference not in rows:
        return "not measured (the variants step stopped before it)", "—"
    a, b = rows[name]["images_per_s"], rows[reference]["images_per_s"]
    ratio = a / b
    result = f"**{ratio:.2f}×** ({_rate(a)} vs {_rate(b)} img/s)"
    return result, _met(ratio, target, True, record) if target is not None else "—"


def bf16_row(record: Record) -> tuple[str, str]:
    return _versus(record, "bf16-mixed", "32-true + TF32", 1.4)


def channels_last_row(record: Record) -> tuple[str, str]:
    return _versus(record, "bf16-mixed + channels_last", "bf16-mixed", None)


def cudnn_row(record: Record) -> tuple[str, str]:
    return _versus(record, "bf16-mixed + cudnn.benchmark", "bf16-mixed", None)


def compile_row(record: Record) -> tuple[str, str]:
    result, met = _versus(record, "bf16-mixed + compile", "bf16-mixed", None)
    compiled = record["variants"].get("bf16-mixed + compile")
    if compiled is not None:
        result += f" steady state; compile time {compiled['compile_s']} s (warm-up less the eager run's)"
    return result, met


def torchgeo_row(record: Record) -> tuple[str, str]:
    if "ratio" not in record:
        return str(record.get("torchgeo", "not measured")), "—"
    result = (
        f"**{record['ratio']:.2f}×** (ours {_rate(record['ours_images_per_s'])}, "
        f"{record['torchgeo']} {_rate(record['torchgeo_images_per_s'])} img/s; {_batch(record)})"
    )
    return result, _met(record["ratio"], 1.10, True, record)


ROWS: tuple[tuple[str, str, str, Callable[[Record], tuple[str, str]]], ...] = (
    ("throughput_smp", "pipeline / bare loop, SMP U-Net/ResNet34", "≥ 0.97", efficiency_row),
    ("throughput_camvid", "pipeline / bare loop, configs/camvid/unet.yaml", "≥ 0.97", efficiency_row),
    ("throughput_smp", "MFU, SMP U-Net/ResNet34 (training FLOPs = 3 × forward)", "≥ 25%", mfu_row),
    ("throughput_camvid", "MFU, configs/camvid/unet.yaml", "—", mfu_row),
    ("data_share", "data share of a step (load + transfer + Kornia augmentation)", "≤ 5%", data_share_row),
    ("syncs", "host-device syncs per training step", "0", syncs_row),
    ("variants", "bf16-mixed vs 32-true (TF32 on)", "≥ 1.4×", bf16_row),
    ("variants", "channels_last on vs off (bf16-mixed)", "—", channels_last_row),
    ("variants", "cudnn.benchmark on vs off (bf16-mixed)", "—", cudnn_row),
    ("variants", "torch.compile on vs off (bf16-mixed)", "—", compile_row),
    ("torchgeo", "ours vs TorchGeo 0.8 SemanticSegmentationTask (CamVid)", "≥ 1.10×", torchgeo_row),
)
"""(record name, measurement, target, how the record reads)."""


def read_records(folder: Path) -> dict[str, Record]:
    """``name → record`` for every ``name.json`` in ``folder``."""
    records = {}
    for path in sorted(folder.glob("*.json")):
        try:
            records[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            records[path.stem] = {"error": f"{path.name} unreadable: {error}"}
    return records


def table_lines(records: dict[str, Record]) -> list[str]:
    """The Markdown table, one row per entry of :data:`ROWS`."""
    lines = [
        "| measurement | result | target | met | command | device, date |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, title, target, read in ROWS:
        record = records.get(name)
        if record is None:
            result, met, command, where = "not run", "—", "", ""
        else:
            command = f"`{record.get('command', '')}`" if record.get("command") else ""
            where = f"{record.get('device', '?')}, {record.get('date', '?')}"
            if "error" in record:
                result, met = f"failed: {record['error']}", "—"
            else:
                try:
                    result, met = read(record)
                except Exception as error:  # one bad record costs its row, never the table
                    result, met = f"unreadable record ({type(error).__name__}: {error})", "—"
        cells = (title, result, target, met, command, where)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


def write_table(folder: Path, out: Path, merged: Path | None = None, title: str = "") -> str:
    """Write the table (with ``title`` above and the footer below) to ``out``, print it, and with ``merged``
    write every record into that one JSON file; returns the Markdown."""
    records = read_records(folder)
    lines = [title, ""] if title else []
    lines += table_lines(records)
    lines += ["", FOOTER]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if merged is not None:
        merged.write_text(json.dumps(records, indent=2) + "\n")
    print(text)
    return text
