"""Train/val/test splits: seeded stratified random splits, split list files, and the checks that a split
set neither leaks (a sample in train and in an evaluation split) nor double counts (a sample listed twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from lightning_seg.data.files import SampleFile
from lightning_seg.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")
T = TypeVar("T")


def _largest_remainder(total: int, sizes: Sequence[int]) -> list[int]:
    """Share ``total`` among groups in proportion to ``sizes`` (integers summing to ``total``)."""
    whole = sum(sizes)
    if whole == 0 or total == 0:
        return [0] * len(sizes)
    exact = [total * n / whole for n in sizes]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split_samples(
    samples: Sequence[SampleFile], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[SampleFile]]:
    """Seeded random train/val/test split, stratified by ``SampleFile.label`` when samples have one.

    Every label keeps (close to) the same share in each split; the split depends only on the sample names,
    labels and ``seed``, not on the order the file system lists files in. A positive fraction always gets
    at least one sample (when there are at least two).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction and data.test_fraction must be in [0, 1) with a sum below 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    ordered = sorted(samples, key=lambda s: s.name)
    groups: dict[int, list[SampleFile]] = {}
    for sample in ordered:
        groups.setdefault(-1 if sample.label is None else sample.label, []).append(sample)
    keys = sorted(groups)
    sizes = [len(groups[k]) for k in keys]
    count = len(ordered)

    def target(fraction: float) -> int:
        n = round(count * fraction)
        return max(n, 1) if fraction > 0 and count > 1 else n

    val_shares = _largest_remainder(target(val_fraction), sizes)
    test_shares = _largest_remainder(target(test_fraction), sizes)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, list[SampleFile]] = {split: [] for split in SPLIT_NAMES}
    for key, n_val, n_test in zip(keys, val_shares, test_shares, strict=True):
        group = groups[key]
        order = torch.randperm(len(group), generator=generator).tolist()
        n_test = min(n_test, len(group) - n_val)
        out["val"] += [group[i] for i in order[:n_val]]
        out["test"] += [group[i] for i in order[n_val : n_val + n_test]]
        out["train"] += [group[i] for i in order[n_val + n_test :]]
    return {split: sorted(part, key=lambda s: s.name) for split, part in out.items()}


def read_split_list(path: Path) -> list[str]:
    """The entries of a split list: the first field of each line (SegNet's ``/SegNet/CamVid/train/x.png
    /SegNet/...annot/x.png`` lines give the image path), blank lines and ``#`` comments skipped. The data
    module resolves an entry to a sample (by relative stem, else by file name)."""
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, where a split list (a text file of names) was expected")
    if not path.is_file():
        raise ConfigError(f"{path}: split list not found")
    stems = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            stems.append(line.split()[0])
    return stems


def check_split_lists(listed: dict[str, list[SampleFile]], list_files: dict[str, Path]) -> None:
    """Refuse split lists that repeat a sample or share one with another list (a leak into evaluation, or a
    sample counted twice).

    Args:
        listed: split → the samples its list names, in list order.
        list_files: split → its list file, for messages.
    """
    files = [(split, Path(file).resolve()) for split, file in list_files.items() if split in listed]
    for index, (split, file) in enumerate(files):
        other = next((first for first, seen in files[:index] if seen == file), None)
        if other is not None:  # the same file for two splits: every sample would be in both
            raise ConfigError(
                f"data.{other}_list and data.{split}_list are the same file {list_files[split]}; a sample is "
                f"in one split only: to score the {other} images at their stored size, run validate with "
                f"--data.score_at_original_size [{other}]; for a {split} split, give another list"
                + (f" or data.{split}_fraction" if split in ("val", "test") else "")
            )
    owner: dict[str, str] = {}
    for split, samples in listed.items():
        repeated = _first_repeat(sample.name for sample in samples)
        if repeated is not None:
            raise ConfigError(f"{list_files[split]}: {repeated!r} is listed twice")
        for sample in samples:
            if sample.name in owner:
                other = owner[sample.name]
                raise ConfigError(
                    f"{list_files[split]}: {sample.name!r} is also in the {other} list {list_files[other]}; "
                    "a sample may be in one split only"
                )
            owner[sample.name] = split


def check_disjoint_splits(splits: dict[str, list[SampleFile]]) -> None:
    """Refuse a split set in which a split repeats an image or train shares one with val or test.

    Val and test may be the same samples (VOC and COCO evaluate on their val split); training on an
    evaluation image never is.
    """
    for split, samples in splits.items():
        repeated = _first_repeat(sample.image for sample in samples)
        if repeated is not None:
            raise ConfigError(f"{repeated}: appears twice in the {split} split")
    train = {sample.image for sample in splits.get("train", [])}
    for split in ("val", "test"):
        shared = [sample.image for sample in splits.get(split, []) if sample.image in train]
        if shared:
            raise ConfigError(
                f"{shared[0]}: in both the train and the {split} split ({len(shared)} shared); "
                "an evaluation image must not be trained on"
            )


def _first_repeat(items: Iterable[T]) -> T | None:
    """The first item seen a second time, or None."""
    seen: set[T] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None
