"""Cost of turning a query-based model's outputs into the data's classes (TransformersNet with class_mapping).

    python benchmarks/zero_shot_tail.py [--queries 100] [--categories 250] [--classes 21] [--size 512]
        [--device cpu|cuda] [--repeats 5]

DETR-panoptic-sized outputs (random): class logits B×Q×(C+1) and mask logits B×Q×(H/4)×(W/4). Two orders of
the same linear algebra:

* after: the semantic score of all C categories, upsampled to H×W, then mapped to K classes (what a copy of
  transformers' post-processing followed by a mapping does);
* folded (TransformersNet): the class probabilities mapped to K first (B×Q×K), then the mask sum and the
  upsampling of K channels.

Prints the median milliseconds of each, the peak memory of each on CUDA, and how far apart their log-scores
and argmaxes are (they differ only by float rounding).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mapping_matrix(categories: int, classes: int, seed: int = 0) -> torch.Tensor:
    """A categories×classes 0/1 matrix: each category to one class, most to class 0 (background)."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.zeros(categories, dtype=torch.long)
    mapped = torch.randperm(categories, generator=generator)[: classes - 1]
    target[mapped] = torch.arange(1, classes)
    return F.one_hot(target, classes).float()


def after(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, matrix: torch.Tensor, size: int
) -> torch.Tensor:
    classes = class_logits.softmax(-1)[..., :-1]
    scores = torch.einsum("bqc,bqhw->bchw", classes, mask_logits.sigmoid())
    scores = F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=False)
    return (scores.movedim(1, -1) @ matrix).movedim(-1, 1).clamp_min(1e-6).log()


def folded(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, matrix: torch.Tensor, size: int
) -> torch.Tensor:
    classes = class_logits.softmax(-1)[..., :-1] @ matrix
    scores = torch.einsum("bqc,bqhw->bchw", classes, mask_logits.sigmoid())
    scores = F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=False)
    return scores.clamp_min(1e-6).log()


def timed(function, *args, repeats: int, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """Median milliseconds over ``repeats`` runs (after one warm-up), peak CUDA memory in MiB (0 on CPU)."""
    out = function(*args)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = function(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return statistics.median(times), peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--categories", type=int, default=250)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    class_logits = torch.randn(args.batch, args.queries, args.categories + 1, device=device)
    mask_logits = torch.randn(args.batch, args.queries, args.size // 4, args.size // 4, device=device)
    matrix = mapping_matrix(args.categories, args.classes).to(device)
    with torch.no_grad():
        slow, slow_peak, reference = timed(
            after, class_logits, mask_logits, matrix, args.size, repeats=args.repeats, device=device
        )
        fast, fast_peak, ours = timed(
            folded, class_logits, mask_logits, matrix, args.size, repeats=args.repeats, device=device
        )
    same = (reference.argmax(1) == ours.argmax(1)).float().mean().item()
    print(
        f"{device.type} {torch.__version__}, B={args.batch} Q={args.queries} C={args.categories} "
        f"K={args.classes} {args.size}²"
    )
    print(f"map after upsampling: {slow:8.1f} ms  peak {slow_peak:7.1f} MiB")
    print(f"folded (ours):        {fast:8.1f} ms  peak {fast_peak:7.1f} MiB  ({slow / fast:.1f}× faster)")
    print(f"max |Δ log-score| {(reference - ours).abs().max().item():.2e}, argmax agreement {same:.6f}")


if __name__ == "__main__":
    main()
