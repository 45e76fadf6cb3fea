"""Cost and quality of the inference settings of ``test``/``predict`` on a trained checkpoint.

    python benchmarks/inference.py --config configs/default.yaml --ckpt_path runs/.../last.ckpt \
        [--crop 32] [CLI overrides...]

For each setting (resize; slide with windows of ``crop`` at half-window stride; the same + horizontal flip;
resize + horizontal flip) it runs the test split through :class:`lightning_seg.inference.Inference` exactly
as ``test`` does, and prints images/s (one synchronisation at each end) and test mIoU against the batch's
masks (what ``test`` reports for data stored at the batch size, like the synthetic default; file datasets
are scored by ``test`` at each mask's original size). Runs in float32 whatever the config's precision; the
test split is held on the device. Timed after one untimed warm-up batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_seg.cli import build_cli  # noqa: E402
from lightning_seg.inference import Inference  # noqa: E402
from lightning_seg.metrics import SegMetrics  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(module, batches: list[dict], inference: Inference, device: torch.device) -> tuple[float, float]:
    """(images/s, mIoU) of one inference setting over prepared batches already on ``device``."""
    metrics = SegMetrics(module.num_classes, module.ignore_index).to(device)
    inference.probabilities(module._mask_logits, batches[0]["image"])  # warm-up
    _sync(device)
    start = time.perf_counter()
    for batch in batches:
        probabilities = inference.probabilities(module._mask_logits, batch["image"])
        metrics.update(module.classes_from_probabilities(probabilities), batch["mask"])
    _sync(device)
    seconds = time.perf_counter() - start
    images = sum(len(b["image"]) for b in batches)
    return images / seconds, float(metrics.compute()["mIoU"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--crop", type=int, default=32, help="sliding-window size (square)")
    args, overrides = parser.parse_known_args()
    cli = build_cli(["--config", args.config, *overrides], run=False)
    module, data = cli.model, cli.datamodule
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = torch.load(args.ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.to(device).eval()
    data.setup("test")
    batches = [
        data.prepare_batch({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}, train=False)
        for b in data.test_dataloader()
    ]
    crop = (args.crop, args.crop)
    settings = [
        Inference(),
        Inference(mode="slide", crop=crop),
        Inference(mode="slide", crop=crop, hflip=True),
        Inference(hflip=True),
    ]
    print(
        f"{dt.date.today()} {platform.processor() or platform.machine()} {device} "
        f"image {tuple(batches[0]['image'].shape[-2:])}, {sum(len(b['image']) for b in batches)} test images"
    )
    print("| setting | images/s | test mIoU |")
    print("| --- | --- | --- |")
    for inference in settings:
        speed, miou = evaluate(module, batches, inference, device)
        print(f"| {inference.describe()} | {speed:.1f} | {miou:.4f} |")


if __name__ == "__main__":
    main()
