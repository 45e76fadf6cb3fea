"""Data-path throughput on CamVid: CPU loader images/s per worker count, and the device-side step
(uint8 → float, Kornia augmentation, normalisation) per batch.

    python benchmarks/loader.py --root ../shared/data/camvid --workers 0 1 2 --batches 40

The loader figure is what the DataLoader delivers (decode + resize + collate), after its first batch
(worker start-up is reported separately). The device step runs ``SegDataModule.prepare_batch`` on the
fastest device present (``--device`` to choose), timed with CUDA synchronisation where it applies.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from lightning_seg.data import CamVidDataModule


def loader_rate(args: argparse.Namespace, workers: int) -> tuple[float, float]:
    """(seconds to the first batch, images/s over the next ``args.batches`` batches)."""
    dm = CamVidDataModule(
        args.root,
        size=tuple(args.size),
        batch_size=args.batch_size,
        num_workers=workers,
        persistent_workers=False,
        pin_memory=False,
    )
    dm.setup("fit")
    start = time.perf_counter()
    loader = iter(dm.train_dataloader())
    next(loader)
    first = time.perf_counter() - start
    images, start = 0, time.perf_counter()
    for _ in range(args.batches):
        try:
            images += next(loader)["image"].shape[0]
        except StopIteration:
            break
    return first, images / (time.perf_counter() - start)


def device_step(args: argparse.Namespace, device: torch.device, train: bool) -> list[float]:
    """Milliseconds per ``prepare_batch`` call on ``device`` (after warm-up)."""
    dm = CamVidDataModule(args.root, size=tuple(args.size), batch_size=args.batch_size)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    image, mask = batch["image"].to(device), batch["mask"].to(device)
    times = []
    for i in range(args.aug_iters + 3):
        torch.manual_seed(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        dm.prepare_batch({"image": image.clone(), "mask": mask.clone()}, train=train)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # the first calls build the pipeline and warm caches
            times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data/camvid", help="CamVid (SegNet layout)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="batches timed per worker count")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--aug-iters", type=int, default=20, help="timed prepare_batch calls")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu; default: the fastest present")
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device {device} ({name})")
    print(f"CamVid train, batch {args.batch_size}, size {args.size[0]}x{args.size[1]}\n")
    print("| workers | first batch (s) | images/s |")
    print("|--------:|----------------:|---------:|")
    for workers in args.workers:
        first, rate = loader_rate(args, workers)
        print(f"| {workers} | {first:.2f} | {rate:.1f} |", flush=True)

    print(f"\n| device step ({device}) | median ms/batch | min ms/batch |")
    print("|---|---:|---:|")
    for train, label in ((True, "train: Kornia augmentation + normalise"), (False, "eval: normalise only")):
        times = device_step(args, device, train)
        print(f"| {label} | {statistics.median(times):.1f} | {min(times):.1f} |", flush=True)


if __name__ == "__main__":
    main()
