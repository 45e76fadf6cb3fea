"""CamVid frames for a machine that cannot hold the whole data set (the lent GPU machine takes 64 MiB per
call, CamVid is 182 MB): a small copy to carry, and on arrival a CamVid tree of the original split sizes
made of links to it.

    python benchmarks/camvid_frames.py subset --src ../shared/data/camvid --dst .camvid_gpu --train 48
    python benchmarks/camvid_frames.py expand --src .camvid_gpu --dst /tmp/camvid [--train 367 ...]

``subset`` copies frames evenly spaced through each split (and, in train, enough to hold a pixel of every
class, which setup's label check asks for) with their annotations, in CamVid's SegNet layout. ``expand``
lays out ``--train/--val/--test`` frames per split as symbolic links cycling through the frames of
``--src`` (chosen the same way), so an epoch has CamVid's length and the loader decodes real 360×480 PNGs
at every step: what throughput measures is the same, not what a model would learn (that needs the whole
set: ``benchmarks/camvid.py``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")
FULL = {"train": 367, "val": 101, "test": 233}
"""Frames per split of CamVid's SegNet split."""
NUM_CLASSES = 11  # 0..10; 11 is "Unlabelled", ignored


def split_frames(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of ``split`` under ``root``, sorted by name."""
    images, annots = root / split, root / f"{split}annot"
    if not images.is_dir() or not annots.is_dir():
        raise SystemExit(f"camvid_frames: {images} or {annots} is not a folder (CamVid's SegNet layout)")
    pairs = [(image, annots / image.name) for image in sorted(images.glob("*.png"))]
    return [(image, annot) for image, annot in pairs if annot.is_file()]


def pick(pairs: list[tuple[Path, Path]], count: int, cover_classes: bool) -> list[tuple[Path, Path]]:
    """``count`` pairs evenly spaced through ``pairs`` (all of them when fewer); with ``cover_classes``, a
    pair holding each class the chosen ones lack is added (so the list can exceed ``count``)."""
    if count >= len(pairs):
        chosen = list(pairs)
    else:
        chosen = [pairs[int(i * len(pairs) / count)] for i in range(count)]
    if not cover_classes:
        return chosen
    missing = set(range(NUM_CLASSES)) - set().union(*(_classes(annot) for _, annot in chosen))
    for pair in pairs:
        if not missing:
            break
        found = _classes(pair[1]) & missing
        if found and pair not in chosen:
            chosen.append(pair)
            missing -= found
    return chosen


def _classes(annot: Path) -> set[int]:
    return {int(v) for v in np.unique(np.asarray(Image.open(annot)))} & set(range(NUM_CLASSES))


def subset(src: Path, dst: Path, counts: dict[str, int]) -> int:
    """Copy the chosen frames of each split from ``src`` into ``dst`` (emptied first); returns the bytes."""
    if dst.exists():
        shutil.rmtree(dst)
    total = 0
    for split, count in counts.items():
        for folder in (split, f"{split}annot"):
            (dst / folder).mkdir(parents=True)
        for image, annot in pick(split_frames(src, split), count, cover_classes=split == "train"):
            for source, target in (
                (image, dst / split / image.name),
                (annot, dst / f"{split}annot" / annot.name),
            ):
                shutil.copy2(source, target)
                total += target.stat().st_size
    return total


def expand(src: Path, dst: Path, counts: dict[str, int]) -> dict[str, int]:
    """Lay out ``counts[split]`` linked frames per split in ``dst`` (emptied first), cycling through the
    frames of ``src`` (more when the frames that cover every class are more); returns the distinct frames
    used per split."""
    if dst.exists():
        shutil.rmtree(dst)
    distinct = {}
    for split, count in counts.items():
        frames = pick(split_frames(src, split), count, cover_classes=split == "train")
        distinct[split] = len(frames)
        for folder in (split, f"{split}annot"):
            (dst / folder).mkdir(parents=True)
        for i in range(max(count, len(frames))):
            image, annot = frames[i % len(frames)]
            name = f"{i:04d}_{image.name}"  # the same name in both folders pairs them
            (dst / split / name).symlink_to(image.resolve())
            (dst / f"{split}annot" / name).symlink_to(annot.resolve())
    return distinct


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("subset", "expand"))
    parser.add_argument("--src", type=Path, required=True, help="a CamVid tree (SegNet layout)")
    parser.add_argument("--dst", type=Path, required=True, help="the folder to make (replaced)")
    for split in SPLITS:
        parser.add_argument(f"--{split}", type=int, help=f"frames in {split} (expand default: {FULL[split]})")
    args = parser.parse_args()
    defaults = {"subset": {"train": 48, "val": 8, "test": 8}, "expand": FULL}[args.action]
    counts = {split: getattr(args, split) or defaults[split] for split in SPLITS}
    if args.action == "subset":
        size = subset(args.src, args.dst, counts)
        print(f"{args.dst}: {size / 2**20:.1f} MiB of CamVid frames ({counts})")
    else:
        distinct = expand(args.src, args.dst, counts)
        print(
            f"{args.dst}: CamVid layout of {counts} frames, linked to {distinct} distinct frames of {args.src}"
        )


if __name__ == "__main__":
    main()
