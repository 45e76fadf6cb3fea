"""How sure the CamVid test numbers are, and what it costs: bootstrap intervals, ECE before/after a temperature
fitted by ``tune``, Boundary IoU, and a paired comparison.

    python benchmarks/evaluation_trust.py --run runs/trust --minutes 10 --json trust.json

1. ``fit --config configs/camvid/lite0_unet.yaml --budget <minutes>m`` (the pretrained Lite0 U-Net) unless
   ``--run`` holds a finished run already;
2. ``test`` of its best checkpoint, plain (no post-processing): mIoU with its 95% interval, ECE, NLL, wall time;
3. the same ``test`` with ``model.boundary_iou: true``: Boundary mIoU and what it adds to the wall time;
4. ``tune`` with a ``TemperatureScaling`` step (the temperature on val, then thresholds), then ``test`` with
   that step alone: ECE and NLL after;
5. ``lightning-seg compare`` of the two test records (plain vs tempered; one temperature keeps every argmax,
   so mIoU must not move).

Prints and writes (``--json``) the numbers, each command's wall time, the device and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

CONFIG = "configs/camvid/lite0_unet.yaml"
QUIET = ["--trainer.enable_progress_bar=false"]
PLAIN = ["--model.init_args.postprocess=[]"]
TEMPERED = ["--model.init_args.postprocess=[{class_path: lightning_seg.postprocess.TemperatureScaling}]"]


def run(args: list[str], log: Path) -> float:
    """``python -m lightning_seg ARGS`` (output into ``log``); its wall seconds."""
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "lightning_seg", *args], stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({done.returncode}); see {log}")
    return time.perf_counter() - start


def newest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default="runs/trust", help="where the run goes (reused when finished)")
    parser.add_argument("--minutes", type=int, default=10, help="fit --budget")
    parser.add_argument("--json", default=None)
    options = parser.parse_args()
    root = Path(options.run)
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    where = [f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}"]
    out: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "device": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "config": CONFIG,
    }
    summaries = list(root.glob("*/version_*/summary.json"))
    if not summaries:
        out["fit_seconds"] = run(
            ["fit", "--config", CONFIG, "--budget", f"{options.minutes}m", *QUIET, *where], logs / "fit.log"
        )
        summaries = list(root.glob("*/version_*/summary.json"))
    run_folder = summaries[0].parent
    best = json.loads(summaries[0].read_text())["best_checkpoint"]
    base = ["--config", str(run_folder / "config.yaml"), "--ckpt_path", best, *QUIET]

    def test(name: str, *extra: str) -> tuple[dict[str, Any], Path, float]:
        seconds = run(["test", *base, *extra], logs / f"{name}.log")
        record = newest(run_folder / "test", "*/summary.json")
        return json.loads(record.read_text()), record.parent, seconds

    plain, plain_dir, out["test_seconds"] = test("test_plain", *PLAIN)
    metrics, intervals = plain["metrics"], plain["intervals"]["metrics"]
    out["plain"] = {
        name: {"value": metrics[f"test/{name}"], "interval": intervals.get(name)}
        for name in ("mIoU", "dice_fg", "image_mIoU", "competition_dice")
    }
    out["plain"].update({name: metrics[f"test/{name}"] for name in ("ECE", "ECE_classwise", "NLL")})
    out["per_class_iou_interval"] = {
        name.removeprefix("IoU/"): [metrics[f"test/{name}"], interval]
        for name, interval in intervals.items()
        if name.startswith("IoU/") and f"test/{name}" in metrics
    }
    boundary, _, out["test_seconds_boundary"] = test(
        "test_boundary", *PLAIN, "--model.init_args.boundary_iou=true"
    )
    out["boundary_mIoU"] = boundary["metrics"]["test/boundary_mIoU"]
    out["tune_seconds"] = run(["tune", *base, *TEMPERED], logs / "tune.log")
    thresholds = json.loads(Path(best).with_name(Path(best).stem + ".thresholds.json").read_text())
    out["temperature"] = thresholds["temperature"]
    tempered, tempered_dir, out["test_seconds_tempered"] = test("test_tempered", *TEMPERED)
    out["tempered"] = {
        name: tempered["metrics"][f"test/{name}"] for name in ("mIoU", "ECE", "ECE_classwise", "NLL")
    }
    run(["compare", str(plain_dir), str(tempered_dir)], logs / "compare.log")
    comparison = json.loads(next(tempered_dir.glob("compare_*.json")).read_text())["metrics"]
    out["compare_mIoU"] = comparison["mIoU"]
    print(json.dumps(out, indent=2))
    if options.json:
        Path(options.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
