"""``lightning-seg compare A B``: is B's test result really better than A's? A paired bootstrap over the
images both tests scored (:func:`lightning_seg.metrics.intervals.paired_differences`).

A and B are test record folders (``<run>/test/<date-time>/``, with the ``per_image.npz`` test writes) or run
folders (their latest test record). The two must have scored the same images (matched by name, in any
order) with the same classes; anything else is refused in one line, never compared on a subset silently.
Prints, per metric, ``B − A = +0.012 [+0.004, +0.020]`` and the share of resamples in which B is not
better, and writes ``compare_<hash of A's folder>.json`` (``--output``; default: into B's test record folder,
beside its summary; one file per A compared with it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from lightning_seg.errors import ConfigError, short_path
from lightning_seg.metrics.intervals import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    paired_differences,
    scores_of_counts,
)
from lightning_seg.runs.per_image import PER_IMAGE_FILE, ImageCounts, read_image_counts
from lightning_seg.utils.atomic import atomic_write

HEADLINE = ("mIoU", "dice", "dice_fg", "image_dice_fg", "image_mIoU", "competition_dice", "acc")
"""The metrics printed first (every metric, per class too, is in the JSON file)."""


def test_record(path: Path) -> Path:
    """The test record folder ``path`` names: itself when it holds ``per_image.npz``, else a run folder's
    latest ``test/<date-time>/`` that does."""
    if (path / PER_IMAGE_FILE).is_file():
        return path
    records = sorted(p.parent for p in path.glob(f"test/*/{PER_IMAGE_FILE}"))
    if not records:
        what = "not a folder" if not path.is_dir() else "no test record with per-image counts in it"
        raise ConfigError(f"compare: {short_path(str(path))}: {what}; run test (this version) on it first")
    return records[-1]


def aligned(a: ImageCounts, b: ImageCounts, a_where: str, b_where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two tests' counts in one image order; refuses other classes, unnamed images or other images."""
    if a.class_names != b.class_names:
        raise ConfigError(
            f"compare: {a_where} and {b_where} score other classes ({a.class_names[:3]}... vs {b.class_names[:3]}...)"
        )
    if not a.names or not b.names:
        unnamed = a_where if not a.names else b_where
        raise ConfigError(
            f"compare: {unnamed} records no image names (a test in several processes); test on one device"
        )
    if len(set(a.names)) != len(a.names) or len(set(b.names)) != len(b.names):
        raise ConfigError("compare: an image name repeats within a test record; cannot pair images by name")
    only_a, only_b = sorted(set(a.names) - set(b.names)), sorted(set(b.names) - set(a.names))
    if only_a or only_b:
        raise ConfigError(
            f"compare: the tests scored other images ({len(only_a)} only in {a_where}, e.g. "
            f"{(only_a or ['-'])[0]}; {len(only_b)} only in {b_where}, e.g. {(only_b or ['-'])[0]}): a paired "
            "comparison needs the same images"
        )
    in_b = {name: index for index, name in enumerate(b.names)}
    return a.counts, b.counts[torch.tensor([in_b[name] for name in a.names], dtype=torch.long)]


def compare(a_path: Path, b_path: Path, resamples: int, seed: int) -> dict[str, Any]:
    """The paired comparison of two test records as plain data (see the module docstring)."""
    a_record, b_record = test_record(a_path), test_record(b_path)
    a, b = read_image_counts(a_record / PER_IMAGE_FILE), read_image_counts(b_record / PER_IMAGE_FILE)
    a_counts, b_counts = aligned(a, b, short_path(str(a_record)), short_path(str(b_record)))
    names = a.class_names
    differences = paired_differences(
        lambda weights: scores_of_counts(weights, a_counts, names),
        lambda weights: scores_of_counts(weights, b_counts, names),
        len(a_counts),
        resamples,
        seed,
    )
    return {
        "a": str(a_record),
        "b": str(b_record),
        "images": len(a_counts),
        "resamples": resamples,
        "seed": seed,
        "level": DEFAULT_LEVEL,
        "metrics": differences,
    }


def _line(name: str, row: dict[str, Any]) -> str:
    interval = row["interval"]
    spread = f"[{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "[n/a]"
    verdict = ""
    if interval == [0.0, 0.0]:
        verdict = "the same on every image"
    elif interval:
        verdict = "B better" if interval[0] > 0 else "A better" if interval[1] < 0 else "no clear difference"
    return (
        f"  {name:<18} A {row['a']:.4f}  B {row['b']:.4f}  B − A = {row['difference']:+.4f} {spread}  "
        f"{verdict}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg compare",
        description="Paired bootstrap of two test records scored on the same images: B − A per metric with its "
        "95%% interval.",
    )
    parser.add_argument(
        "a", help="test record folder (<run>/test/<date-time>) or run folder (its latest test)"
    )
    parser.add_argument("b", help="the same, for the model compared with A")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (1000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the resamples' seed (0)")
    parser.add_argument(
        "--output",
        default=None,
        help="the JSON file's path (default: compare_<hash of A>.json in B's test record)",
    )
    return parser


def main(argv: list[str]) -> int:
    """``lightning-seg compare A B``: 0 when compared, 2 on bad input (one line)."""
    options = _parser().parse_args(argv)
    try:
        if options.resamples < 100:
            raise ConfigError(f"compare --resamples: at least 100, got {options.resamples}")
        result = compare(Path(options.a), Path(options.b), options.resamples, options.seed)
    except ConfigError as error:
        print(f"lightning-seg: error: {error}", file=sys.stderr)
        return 2
    metrics = result["metrics"]
    print(
        f"compare: B − A on {result['images']} images, {round(100 * result['level'])}% paired bootstrap "
        f"intervals ({result['resamples']} resamples, seed {result['seed']})"
    )
    print(f"  A: {short_path(result['a'])}\n  B: {short_path(result['b'])}")
    for name in [*HEADLINE, *(n for n in metrics if n.startswith("IoU/"))]:
        if name in metrics:
            print(_line(name, metrics[name]))
    # one file per A beside B's record: a later comparison with another A never rewrites this one
    tag = hashlib.sha256(str(Path(result["a"]).resolve()).encode()).hexdigest()[:8]
    target = Path(options.output) if options.output else Path(result["b"]) / f"compare_{tag}.json"
    atomic_write(target, json.dumps(result, indent=2))
    print(f"compare: {short_path(str(target))}")
    return 0
