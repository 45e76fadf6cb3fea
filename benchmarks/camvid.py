"""Quality on real data: train a config on CamVid for a fixed wall-clock budget, report test mIoU.

    python benchmarks/camvid.py --config configs/camvid/unet.yaml --minutes 30 [CLI overrides...]

Runs ``fit`` with ``--trainer.max_time`` set to the budget (the schedule is stretched over
``--epochs`` epochs; training stops at whichever comes first), then ``test`` on the 233 test images
with the best checkpoint by ``val/mIoU``. Prints and optionally writes (``--json``) the test mIoU
(11 classes, macro over classes present, label 11 ignored), per-class IoU, pixel accuracy, the device
and the budget. Needs the data at ``../shared/data/camvid`` (or ``LIGHTNING_SEG_CAMVID``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
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
    start = time.perf_counter()
    fit = run_cli([*fit_args, *overrides])
    if fit is None:
        sys.exit(2)
    train_seconds = time.perf_counter() - start
    best = fit.trainer.checkpoint_callback.best_model_path
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
