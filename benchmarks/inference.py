"""Cost and quality of the inference path of ``test``/``predict`` on a trained checkpoint, and the cost of ``tune``.

    python benchmarks/inference.py --config configs/default.yaml --ckpt_path runs/.../last.ckpt \
        [--crop 32 32] [--stride 16 16] [--crf_images N] [CLI overrides...]

For each setting (resize; slide with windows of ``crop`` every ``stride``; the same + horizontal flip;
resize + horizontal flip; resize + a dense CRF, when pydensecrf2 is installed) it scores the test split
exactly as ``test`` does: the module's own path (the plain forward, the inference object, the
post-processing chain, the decision), at each mask's original size when the data stores it so. It prints
images/s (one synchronisation at each end) and test mIoU. The CRF rows run on the first ``--crf_images``
test images (all by default), beside the plain setting on the same images.

Then the cost of ``tune``: one evaluation pass over the val split (the whole path, resize) against one
calibration pass (the same path filling the 101-threshold histograms), as a ratio.

Runs in float32 whatever the config's precision; the batches are prepared and held on the device first,
so loading and decoding are not timed. Each measurement follows one untimed warm-up batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_seg.cli import build_cli  # noqa: E402
from lightning_seg.commands.tune import ThresholdSearch  # noqa: E402
from lightning_seg.inference import Inference  # noqa: E402
from lightning_seg.metrics import SegMetrics  # noqa: E402
from lightning_seg.postprocess import PostProcess  # noqa: E402
from lightning_seg.task.evaluation import EvaluationPath  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _path(module: Any, inference: Inference, steps: list) -> EvaluationPath:
    """The module's evaluation path with another inference and chain (the module itself is left alone)."""
    return EvaluationPath(
        inference,
        PostProcess(steps),
        module.num_classes,
        module.ignore_index,
        module.class_names,
        module.label_task,
        module.binary_threshold,
        module.mean,
        module.std,
    ).to(module.device)


@torch.no_grad()
def score(
    module: Any, path: EvaluationPath, batches: list[dict], search: ThresholdSearch | None = None
) -> tuple[float, float]:
    """(images/s, mIoU) of the whole path over prepared batches already on the device, as ``test`` scores;
    with ``search``, ``tune``'s calibration pass instead (the path up to the decision into its histograms)."""
    device = module.device
    final = SegMetrics(module.num_classes, module.ignore_index).to(device)
    for timed in (False, True):
        final.reset()
        path.start_table("bench")
        chosen = batches if timed else batches[:1]
        _sync(device)
        start = time.perf_counter()
        for batch in chosen:
            out = module(batch["image"])
            if search is None:
                path.score(module.mask_logits, batch, "bench", out.mask, out.label, final)
            else:
                predictions, truths = path.before_decision(module.mask_logits, batch, out.mask, out.label)
                search.update(predictions, truths, None, None)
        _sync(device)
        seconds = time.perf_counter() - start
    images = sum(len(b["image"]) for b in batches)
    miou = float(final.compute()["mIoU"]) if search is None else 0.0
    return images / seconds, miou


def _prepared(data: Any, loader: Any, device: torch.device, limit: int | None = None) -> list[dict]:
    batches, count = [], 0
    for batch in loader:
        moved = {
            k: v.to(device)
            if torch.is_tensor(v)
            else [x.to(device) for x in v]
            if k.startswith("orig_")
            else v
            for k, v in batch.items()
        }
        batches.append(data.prepare_batch(moved, train=False))
        count += len(batch["image"])
        if limit is not None and count >= limit:
            break
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--crop", type=int, nargs=2, default=[32, 32], help="sliding-window height and width")
    parser.add_argument(
        "--stride", type=int, nargs=2, default=None, help="window step (default: half a window)"
    )
    parser.add_argument("--crf_images", type=int, default=None, help="test images for the CRF rows")
    parser.add_argument("--crf_iterations", type=int, default=10)
    args, overrides = parser.parse_known_args()
    cli = build_cli(["--config", args.config, *overrides], run=False)
    module, data = cli.model, cli.datamodule
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = torch.load(args.ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.to(device).eval()
    data.score_at_original_size = ("val", "test")  # the benchmark's own data module, built here
    data.setup("test")
    data.setup("validate")
    test = _prepared(data, data.test_dataloader(), device)
    crop, stride = tuple(args.crop), tuple(args.stride) if args.stride else None
    settings: list[tuple[Inference, list]] = [
        (Inference(), []),
        (Inference(mode="slide", crop=crop, stride=stride), []),
        (Inference(mode="slide", crop=crop, stride=stride, hflip=True), []),
        (Inference(hflip=True), []),
    ]
    scored = "original size" if "orig_mask" in test[0] else "batch size"
    print(
        f"{dt.date.today()} {platform.processor() or platform.machine()} {device} "
        f"batch image {tuple(test[0]['image'].shape[-2:])}, {sum(len(b['image']) for b in test)} test images, "
        f"scored at the {scored}"
    )
    print("| setting | images/s | test mIoU |")
    print("| --- | --- | --- |")
    for inference, steps in settings:
        speed, miou = score(module, _path(module, inference, steps), test)
        print(f"| {inference.describe()} | {speed:.2f} | {miou:.4f} |")
    try:
        from lightning_seg.postprocess import DenseCRF
    except ImportError:
        DenseCRF = None  # noqa: N806
    if DenseCRF is not None:
        data.keep_original_images = True  # the CRF reads each image as stored (the CLI sets it so)
        data.datasets.clear()
        data.setup("test")
        data.setup("validate")
        subset = _prepared(data, data.test_dataloader(), device, args.crf_images)
        count = sum(len(b["image"]) for b in subset)
        for steps in ([], [DenseCRF(iterations=args.crf_iterations)]):
            path = _path(module, Inference(), steps)
            speed, miou = score(module, path, subset)
            name = "resize" + (f" + {steps[0].describe()}" if steps else "")
            print(f"| {name}, first {count} images | {speed:.2f} | {miou:.4f} |")
            path.postprocess.close()

    # the cost of tune: an evaluation pass against a calibration pass over val
    val = _prepared(data, data.val_dataloader(), device)
    plain = _path(module, Inference(), [])
    evaluation, _ = score(module, plain, val)
    search = ThresholdSearch(module.num_classes, module.ignore_index, None, 101).to(device)
    calibration, _ = score(module, plain, val, search)
    images = sum(len(b["image"]) for b in val)
    print(
        f"tune on {images} val images: evaluation pass {images / evaluation:.2f} s, calibration pass "
        f"(101 thresholds) {images / calibration:.2f} s, ratio {evaluation / calibration:.2f}"
    )


if __name__ == "__main__":
    main()
