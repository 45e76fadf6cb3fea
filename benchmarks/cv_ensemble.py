"""A finished ``cv`` against its own folds on the test split: the ensemble, thresholds tuned out of fold, cost.

    python -m lightning_seg cv --config configs/camvid/lite0_unet.yaml --folds 3 \\
        --group_by '^[^_]+_f?\\d{3}' --output runs/cv3 --trainer.max_epochs=8 --data.init_args.batch_size=4
    python benchmarks/cv_ensemble.py --cv runs/cv3 --json cv3.json

For the cv folder given, each command in its own process (wall time and peak resident memory measured around
it, ``/usr/bin/time``-style through ``resource``):

1. ``test`` of each fold's best checkpoint (its run's config: the data's own test split);
2. ``test`` of the folds' ensemble (``<cv>/ensemble/config.yaml``, which cv wrote);
3. ``tune --oof <cv>`` on the ensemble, then its ``test`` with a ``ClassThresholds`` step;
4. for fold 0 alone: ``tune`` on its validation fold, ``test`` with those thresholds; then ``tune --oof``
   (the same out-of-fold files) for fold 0's checkpoint and ``test`` again: val-tuned against out-of-fold-tuned
   thresholds on one model.

Prints and writes (``--json``) test mIoU and per-class IoU of each, seconds per test image and peak memory.
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

THRESHOLDS = "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds"
QUIET = ["--trainer.enable_progress_bar=false"]


PEAK = "peak-rss-kib "
# the command in a child of its own, whose peak resident memory that child reports
MEASURED = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    f"print('{PEAK}' + str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)"
)


def run(args: list[str], log: Path) -> tuple[float, float]:
    """``python -m lightning_seg ARGS`` (output into ``log``); (wall seconds, its peak resident memory in
    MiB)."""
    start = time.perf_counter()
    with log.open("w") as out:
        command = [sys.executable, "-c", MEASURED, sys.executable, "-m", "lightning_seg", *args]
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({done.returncode}); see {log}")
    peaks = [line for line in log.read_text().splitlines() if line.startswith(PEAK)]
    return wall, int(peaks[-1].removeprefix(PEAK)) / 1024


def newest_summary(folder: Path) -> dict[str, Any]:
    summaries = sorted(folder.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(summaries[-1].read_text())


def scored(summary: dict[str, Any]) -> dict[str, Any]:
    metrics = summary["metrics"]
    return {
        "mIoU": round(metrics["test/mIoU"], 4),
        "IoU": {
            k.removeprefix("test/IoU/"): round(v, 4) for k, v in metrics.items() if k.startswith("test/IoU/")
        },
    }


def test(config: Path, run_folder: Path, log: Path, *extra: str) -> dict[str, Any]:
    wall, peak = run(["test", "--config", str(config), *QUIET, *extra], log)
    result = scored(newest_summary(run_folder / "test"))
    result.update(wall_s=round(wall, 1), peak_rss_mib=round(peak))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cv", required=True, type=Path)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args()
    cv: Path = options.cv
    logs = cv / "benchmark_logs"
    logs.mkdir(exist_ok=True)
    summary = json.loads((cv / "summary.json").read_text())
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "device": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "cv": str(cv),
        "folds_val_mIoU": [round(f["metrics"]["val/mIoU"], 4) for f in summary["per_fold"]],
        "folds": [],
    }
    for fold in summary["per_fold"]:
        run_folder = Path(fold["run"])
        result = test(
            run_folder / "config.yaml",
            run_folder,
            logs / f"test_fold{fold['fold']}.log",
            "--ckpt_path",
            fold["checkpoint"],
        )
        results["folds"].append(result)
        print(f"fold {fold['fold']}: test mIoU {result['mIoU']} ({result['wall_s']} s)", flush=True)
    ensemble = cv / "ensemble"
    config = ensemble / "config.yaml"
    results["ensemble"] = test(config, ensemble, logs / "test_ensemble.log")
    print(
        f"ensemble: test mIoU {results['ensemble']['mIoU']} ({results['ensemble']['wall_s']} s)", flush=True
    )
    wall, _ = run(["tune", "--config", str(config), "--oof", str(cv), *QUIET], logs / "tune_ensemble_oof.log")
    results["ensemble_oof_thresholds"] = test(config, ensemble, logs / "test_ensemble_oof.log", THRESHOLDS)
    results["ensemble_oof_thresholds"]["tune_wall_s"] = round(wall, 1)
    print(f"ensemble + oof thresholds: test mIoU {results['ensemble_oof_thresholds']['mIoU']}", flush=True)
    # one model: thresholds tuned on its validation fold, then on every out-of-fold image
    first = summary["per_fold"][0]
    run_folder, checkpoint = Path(first["run"]), first["checkpoint"]
    fold_config = run_folder / "config.yaml"
    common = ["--config", str(fold_config), "--ckpt_path", checkpoint, *QUIET]
    run(["tune", *common], logs / "tune_fold0_val.log")
    results["fold0_val_thresholds"] = test(
        fold_config, run_folder, logs / "test_fold0_val.log", "--ckpt_path", checkpoint, THRESHOLDS
    )
    run(["tune", *common, "--oof", str(cv)], logs / "tune_fold0_oof.log")
    results["fold0_oof_thresholds"] = test(
        fold_config, run_folder, logs / "test_fold0_oof.log", "--ckpt_path", checkpoint, THRESHOLDS
    )
    print(
        f"fold 0: val-tuned {results['fold0_val_thresholds']['mIoU']}, oof-tuned {results['fold0_oof_thresholds']['mIoU']}",
        flush=True,
    )
    singles = [f["mIoU"] for f in results["folds"]]
    results["single_best"] = max(singles)
    results["single_mean"] = round(sum(singles) / len(singles), 4)
    print(json.dumps({k: v for k, v in results.items() if k not in ("folds",)}, indent=1)[:3000])
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
