"""A dataset's fingerprint: the facts a training recipe is chosen from, gathered in one pass.

The data module's own setup runs first (file checks, mask reading, the split, the class statistics of the
training masks, cached), so the plan sees the data exactly as ``fit`` will; the image sizes come from the
files' headers (no decoding).
"""

from __future__ import annotations

import importlib
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning_seg.data.base import SegDataModule
from lightning_seg.data.io import ImageHeader, image_header
from lightning_seg.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Fingerprint:
    """What the plan knows about a dataset.

    Attributes:
        data_class: the data module's class path.
        samples: samples per split (train, val, test).
        image_sizes: (height, width) as stored: ``median``, ``min``, ``max`` over the training images, each
            by long side; ``deep``: how many are deeper than 8 bits per channel.
        classes: class names in index order.
        pixel_share: each class's share of the labelled training pixels.
        image_share: each class's share of the training images that hold it.
        share_where_present: each class's share of the pixels of the images that hold it (how much of an
            image it covers where it appears).
        ignored_share: share of the training pixels that are ``ignore_index``.
        labels: image-level label counts in the training split (empty without image labels).
        mask_mode: how the masks are read (the data module's ``mask_mode``).
        binary_threshold: for binary masks, the threshold the checks decided (or were given).
        split_lists_given: the splits whose list files the user gave (the rest were drawn).
    """

    data_class: str
    samples: dict[str, int]
    image_sizes: dict[str, Any]
    classes: list[str]
    pixel_share: dict[str, float]
    image_share: dict[str, float]
    share_where_present: dict[str, float]
    ignored_share: float
    labels: dict[str, int]
    mask_mode: str | None = None
    binary_threshold: int | None = None
    split_lists_given: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The fingerprint as plain data (what ``fingerprint.json`` holds)."""
        return asdict(self)

    @property
    def pixel_imbalance(self) -> float:
        """The most frequent class's pixel share over the rarest's (among classes present)."""
        shares = [share for share in self.pixel_share.values() if share > 0]
        return max(shares) / min(shares) if shares else 1.0

    @property
    def label_imbalance(self) -> float:
        """The most frequent image label's count over the rarest's (1 without labels)."""
        counts = [count for count in self.labels.values() if count > 0]
        return max(counts) / min(counts) if counts else 1.0


def by_long_side(sizes: list[tuple[int, int]], pick: str) -> list[int]:
    """The (height, width) of ``sizes`` ordered by long side (then short side) that is the ``"min"``,
    ``"median"`` (the lower one of an even count) or ``"max"``."""
    ordered = sorted(sizes, key=lambda size: (max(size), min(size)))
    index = {"min": 0, "max": len(ordered) - 1, "median": (len(ordered) - 1) // 2}[pick]
    return list(ordered[index])


def readable_headers(samples: list[Any]) -> dict[Path, ImageHeader]:
    """The header of each sample's image by its path (no decoding). A file whose header cannot be read is
    left out: the data module's setup decides about it (refused, or dropped with ``on_bad_sample: skip``)."""
    headers = {}
    for sample in samples:
        try:
            headers[Path(sample.image)] = image_header(sample.image)
        except ConfigError:
            continue
    return headers


def take_fingerprint(datamodule: SegDataModule, headers: dict[Path, ImageHeader]) -> Fingerprint:
    """Set ``datamodule`` up for training and testing (its checks, the split, the statistics of the training
    masks at its ``size``) and read its fingerprint from the samples it kept (``on_bad_sample: skip`` drops
    some); ``headers`` are those :func:`readable_headers` read already (any other is read here).

    Raises ConfigError (one line, from the data module's own checks) for data it cannot train on.
    """
    if not hasattr(datamodule, "splits"):
        raise ConfigError(
            f"plan: {type(datamodule).__name__} does not list its files; plan reads image folders"
        )
    datamodule.setup("fit")
    if datamodule.splits()["test"]:
        datamodule.setup("test")  # the test masks pass the same checks now, not at the first `test`
    kept = {split: getattr(datamodule.datasets.get(split), "samples", []) for split in SPLITS}
    samples = {split: len(kept[split]) for split in SPLITS}
    kept_headers = [headers.get(Path(s.image)) or image_header(s.image) for s in kept["train"]]
    sizes = [header.size for header in kept_headers]
    stats = datamodule.class_statistics("train")
    labelled = max(int(stats.pixel_counts.sum()), 1)
    names = list(datamodule.class_names)
    label_counts: dict[str, int] = {}
    labels = datamodule.sample_labels("train")
    if labels is not None:
        for index, name in enumerate(datamodule.label_names):
            label_counts[name] = int((labels == index).sum())
    cls = type(datamodule)
    public = "lightning_seg.data"  # the path configs use, where the class is exported there
    module = public if getattr(importlib.import_module(public), cls.__name__, None) is cls else cls.__module__
    return Fingerprint(
        data_class=f"{module}.{cls.__name__}",
        samples=samples,
        image_sizes={
            "median": by_long_side(sizes, "median"),
            "min": by_long_side(sizes, "min"),
            "max": by_long_side(sizes, "max"),
            "median_long_side": int(statistics.median(max(size) for size in sizes)),
            "deep": sum(header.deep for header in kept_headers),
        },
        classes=names,
        pixel_share={
            name: round(int(n) / labelled, 6) for name, n in zip(names, stats.pixel_counts, strict=True)
        },
        image_share={
            name: round(int(n) / max(stats.num_images, 1), 6)
            for name, n in zip(names, stats.image_counts, strict=True)
        },
        share_where_present={
            name: round(int(n) / int(total), 6) if int(total) else 0.0
            for name, n, total in zip(names, stats.pixel_counts, stats.image_pixels, strict=True)
        },
        ignored_share=round(stats.ignored_pixels / (labelled + stats.ignored_pixels), 6),
        labels=label_counts,
        mask_mode=getattr(datamodule, "mask_mode", None),
        binary_threshold=(
            getattr(datamodule.mask_encoder(), "threshold", None)
            if getattr(datamodule, "mask_mode", None) == "binary"
            else None
        ),
        split_lists_given=tuple(split for split, name in getattr(datamodule, "lists", {}).items() if name),
    )
