"""Quality on real data: train a config on CamVid for a fixed wall-clock budget, report test mIoU.

    python benchmarks/camvid.py --config configs/camvid/unet.yaml --minutes 30 [CLI overrides...]

Runs ``fit`` with ``--trainer.max_time`` set to the budget (the schedule is stretched over
``--epochs`` epochs; training stops at whichever comes first), then ``test`` on the 233 test images
with the best checkpoint by ``val/mIoU``. ``--marks 5,10,20`` also saves the model at those minutes of
training (``time_marks.SaveAtMinutes``) and tests each: snapshots of the one run, mid-schedule. Prints and optionally writes (``--json``) the test mIoU
(11 classes, macro over classes present, label 11 ignored), per-class IoU, pixel accuracy, the device
and the budget. Needs the data at ``../shared/data/camvid`` (or ``LIGHTNING_SEG_CAMVID``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_seg.cli import run_cli  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/camvid/unet.yaml")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (wall clock)")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs (the LR schedule length)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument(
        "--marks", default="", help="minutes at which to save and test snapshots, e.g. 5,10,20"
    )
    args, overrides = parser.parse_known_args()

    budget = dt.timedelta(minutes=args.minutes)
    hours, rest = divmod(int(budget.total_seconds()), 3600)
    fit_args = [
        "fit",
        "--config",
        args.config,
        f"--trainer.max_time=00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
    ]
    if args.epochs is not None:
        fit_args.append(f"--trainer.max_epochs={args.epochs}")
    marks = [float(m) for m in args.marks.split(",") if m]
    marks_dir = Path(tempfile.mkdtemp(prefix="camvid_marks_")) if marks else None
    if marks_dir is not None:
        fit_args += [
            "--trainer.callbacks+=time_marks.SaveAtMinutes",
            f"--trainer.callbacks.minutes={marks}",
            f"--trainer.callbacks.dirpath={marks_dir}",
        ]
    start = time.perf_counter()
    fit = run_cli([*fit_args, *overrides])
    if fit is None:
        sys.exit(2)
    train_seconds = time.perf_counter() - start
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    steps = fit.trainer.global_step
    batch_size = fit.datamodule.batch_size
    best = fit.trainer.checkpoint_callback.best_model_path
    snapshots = {}
    for checkpoint in sorted(marks_dir.glob("minute*.ckpt")) if marks_dir is not None else []:
        scored = run_cli(["test", "--config", args.config, "--ckpt_path", str(checkpoint), *overrides])
        if scored is not None:
            snapshots[checkpoint.stem] = float(scored.trainer.callback_metrics["test/mIoU"])
        checkpoint.unlink()  # 15-50 MB each: scored, then gone
    test = run_cli(["test", "--config", args.config, "--ckpt_path", best, *overrides])
    if test is None:
        sys.exit(2)
    metrics = {k: float(v) for k, v in test.trainer.callback_metrics.items() if k.startswith("test/")}
    device = test.trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {
        "date": dt.date.today().isoformat(),
        "device": f"{device.type}: {name}",
        "config": args.config,
        "overrides": overrides,
        "budget_minutes": args.minutes,
        "train_seconds": round(train_seconds, 1),
        "epochs_done": fit.trainer.current_epoch,
        "optimizer_steps": steps,
        "train_images_per_s_incl_val": round(steps * batch_size / train_seconds, 2),
        "peak_rss_GiB_fit": round(peak_rss_gib, 2),
        "snapshot_test_mIoU": snapshots,
        "best_val_mIoU": float(fit.trainer.checkpoint_callback.best_model_score or float("nan")),
        "test_mIoU": metrics.get("test/mIoU"),
        "test_acc": metrics.get("test/acc"),
        "test_IoU": {
            k.split("/", 2)[2]: round(v, 4) for k, v in metrics.items() if k.startswith("test/IoU/")
        },
        "checkpoint": best,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
