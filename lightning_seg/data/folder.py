"""``FolderDataModule``: your own images and masks in two folders, paired by relative path::

root/images/a.jpg   root/masks/a.png
root/images/b.png   root/masks/b.png
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_seg.data.binary import decide_binary_threshold
from lightning_seg.data.files import SampleFile, find_files, paired_samples
from lightning_seg.data.image_mask import ImageMaskDataModule
from lightning_seg.data.io import (
    IMAGE_EXTENSIONS,
    BinaryMaskEncoder,
    ColorMaskEncoder,
    IndexMaskEncoder,
    MaskEncoder,
)
from lightning_seg.data.splits import SPLIT_NAMES, check_split_lists, read_split_list, split_samples
from lightning_seg.data.stats import ClassStatistics
from lightning_seg.errors import ConfigError


class FolderDataModule(ImageMaskDataModule):
    """Your own images and masks in two folders, paired by file stem.

    Layout (names configurable; sub-folders allowed and mirrored)::

        root/images/<stem>.{png,jpg,jpeg,bmp,tif,webp,gif}
        root/masks/<stem><mask_suffix>.{png,jpg,jpeg,bmp,tif}

    Splits come from list files (one stem per line) where given; the samples no list names are split at
    random (seeded, stratified by the image-level label when there is one) by ``val_fraction`` and
    ``test_fraction``, and train takes the rest.

    Args:
        root: dataset folder; relative paths below are taken from here.
        image_dir: folder of the images.
        mask_dir: folder of the masks.
        class_names: one name per class index. Required for ``mask_mode="index"``; defaults to
            ("background", "foreground") for "binary" and to ``class_0, class_1, ...`` for "rgb".
        mask_mode: "index": pixel values (grey or palette indices) are class indices; "rgb": colours,
            one per class, given by ``colors``; "binary": foreground where the brightest channel is at
            least ``binary_threshold``.
        colors: ``[[r, g, b], ...]``, the colour of each class (``mask_mode="rgb"``).
        ignore_colors: colours that mean "not annotated" (``mask_mode="rgb"``), e.g. a void colour.
        binary_threshold: 1..255, for ``mask_mode="binary"``; None decides it once from every mask of the
            dataset (the midpoint of its two values: 0/1 → 1, 0/255 → 128) and refuses masks with a third
            value or two colours (see ``lightning_seg.data.binary``). A number is used as given, only
            refused when it lies in the JPEG noise of a mask value.
        mask_suffix: added to the image stem to name its mask (e.g. "_mask" for ``a.jpg`` → ``a_mask.png``).
        size: (height, width) every sample is resized to; None keeps stored sizes.
        labels_from: image-level label (``sample["label"]``) from the image's "parent" folder name
            (``images/cat/x.jpg`` → "cat"), from the file name "prefix" (leading letters: ``Scr_01`` →
            "Scr"), or "none".
        label_names: the label names in index order; None: the sorted names found.
        train_list: list file of the training stems; None: the samples no other list names.
        val_list: list file of the validation stems; None: ``val_fraction`` of the unlisted samples.
        test_list: list file of the test stems; None: ``test_fraction`` of the unlisted samples.
        val_fraction: share of the dataset drawn at random for validation when there is no ``val_list``.
        test_fraction: share drawn for testing when there is no ``test_list``.
        predict_dir: folder of images (no masks) for ``predict``; None: the test split, else the val split.
        ignore_index: label of unannotated pixels (a stored value equal to it, in index masks).
        **kwargs: :class:`ImageMaskDataModule` arguments (``on_bad_sample``, ``check_files``,
            ``split_seed``) and :class:`SegDataModule` arguments (batch size, workers, augmentation, ...).
    """

    def __init__(
        self,
        root: str,
        image_dir: str = "images",
        mask_dir: str = "masks",
        class_names: list[str] | None = None,
        mask_mode: Literal["index", "rgb", "binary"] = "index",
        colors: list[list[int]] | None = None,
        ignore_colors: list[list[int]] | None = None,
        binary_threshold: int | None = None,
        mask_suffix: str = "",
        size: tuple[int, int] | None = (256, 256),
        labels_from: Literal["none", "parent", "prefix"] = "none",
        label_names: list[str] | None = None,
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        predict_dir: str | None = None,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(size=size, **kwargs)
        self.root = Path(root)
        self.image_dir, self.mask_dir = self.root / image_dir, self.root / mask_dir
        self.mask_mode, self.mask_suffix = mask_mode, mask_suffix
        self.binary_threshold = binary_threshold
        self.ignore_index = ignore_index
        self.labels_from = labels_from
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.predict_dir = self.root / predict_dir if predict_dir is not None else None
        if labels_from not in ("none", "parent", "prefix"):
            raise ConfigError(f"data.labels_from must be 'none', 'parent' or 'prefix', got {labels_from!r}")
        self._label_names = tuple(label_names) if label_names is not None else None
        #: names of the samples that no split list names, when train is a list (they are not used)
        self.unlisted: list[str] = []

        if mask_mode == "binary":
            self.class_names = tuple(class_names or ("background", "foreground"))
            if len(self.class_names) != 2:
                raise ConfigError(
                    f"data.class_names must have 2 names with mask_mode binary, got {class_names}"
                )
            if binary_threshold is not None:
                BinaryMaskEncoder(binary_threshold)  # its range check, at once
            self._encoder: MaskEncoder | None = None  # decided (or checked) from the masks in mask_encoder
        elif mask_mode == "rgb":
            if not colors:
                raise ConfigError(
                    "data.colors is required with mask_mode rgb: [[r, g, b], ...], one per class"
                )
            self.class_names = tuple(class_names or (f"class_{i}" for i in range(len(colors))))
            if len(self.class_names) != len(colors):
                raise ConfigError(
                    f"data.class_names has {len(self.class_names)} names but data.colors {len(colors)} colours"
                )
            self._encoder = ColorMaskEncoder(
                tuple(map(tuple, colors)), ignore_index, tuple(map(tuple, ignore_colors or ()))
            )
        elif mask_mode == "index":
            if not class_names:
                raise ConfigError(
                    "data.class_names is required with mask_mode index: one name per class index"
                )
            self.class_names = tuple(class_names)
            self._encoder = IndexMaskEncoder(len(self.class_names), ignore_index)
        else:
            raise ConfigError(f"data.mask_mode must be 'index', 'rgb' or 'binary', got {mask_mode!r}")

    def no_val_split_requested(self) -> bool:
        """``val_fraction: 0`` (and no val list): trained without validation, on purpose."""
        return self.lists["val"] is None and self.val_fraction == 0

    @property
    def label_names(self) -> tuple[str, ...]:
        """Image-level label names (empty when ``labels_from="none"``); found by scanning the image
        folder when not given, so that they are known as soon as the module is built."""
        if self.labels_from == "none":
            return ()
        if self._label_names is None:
            self._label_names = tuple(
                sorted({self._label_name(key, path) for key, path in self._images.items()})
            )
        return self._label_names

    def mask_encoder(self) -> MaskEncoder:
        if self._encoder is None:  # binary masks, threshold decided once from every mask of every split
            masks = [s.mask for split in self.splits().values() for s in split if s.mask is not None]
            threshold = decide_binary_threshold(masks, self.num_workers, given=self.binary_threshold)
            rank_zero_info(
                f"{type(self).__name__}: binary masks thresholded at {threshold} (data.binary_threshold)"
            )
            self._encoder = BinaryMaskEncoder(threshold)
        return self._encoder

    def mask_reading_hint(self, stats: ClassStatistics) -> str:
        ignored = stats.ignored_pixels / max(stats.ignored_pixels + int(stats.pixel_counts.sum()), 1)
        binary_like = self.num_classes == 2 or ignored > self.max_ignored_fraction
        if (
            self.mask_mode == "index"
            and self.ignore_index == 255
            and stats.ignored_pixels > 0
            and binary_like
        ):
            # 0/255 masks read as indices: the foreground is the stored 255, i.e. ignore_index
            return " (masks that store 0/255 are binary: use data.mask_mode: binary)"
        if self.mask_mode == "binary":
            return (
                f" (binary masks thresholded at {self.mask_encoder().threshold}: check data.binary_threshold)"
            )
        return ""

    def empty_split_hint(self, split: str) -> str:
        if split == "predict" and self.predict_dir is not None:
            return f"no images ({', '.join(IMAGE_EXTENSIONS)}) in data.predict_dir {self.predict_dir}"
        if split in ("val", "test"):
            try:
                found = len(self._all_samples())
            except ConfigError:
                found = None
            if found is not None and found < 3:
                return (
                    f"the folder holds {found} image{'s' if found != 1 else ''}: too few to split into train, "
                    f"val and test; add images, or give data.{split}_list"
                )
            return f"set data.{split}_list or data.{split}_fraction"
        return f"check {self.image_dir} and the split lists"

    # ---------------------------------------------------------------------------------- discovery
    def _label_name(self, key: str, image: Path) -> str:
        if self.labels_from == "parent":
            if "/" not in key:
                raise ConfigError(f"{image}: labels_from parent needs images in sub-folders named by label")
            return key.rsplit("/", 2)[-2]
        match = re.match(r"[A-Za-z]+", image.stem)
        if match is None:
            raise ConfigError(f"{image}: labels_from prefix needs a file name starting with letters")
        return match.group(0)

    @functools.cached_property
    def _images(self) -> dict[str, Path]:
        """The images by relative stem (scanned once: ``label_names`` and the splits both need them)."""
        same_dir = self.image_dir.resolve() == self.mask_dir.resolve()
        if same_dir and not self.mask_suffix:
            raise ConfigError("data.image_dir and data.mask_dir are the same folder: set data.mask_suffix")
        images = find_files(self.image_dir, IMAGE_EXTENSIONS, exclude=None if same_dir else self.mask_dir)
        if same_dir:
            images = {k: v for k, v in images.items() if not k.endswith(self.mask_suffix)}
        if not images:
            raise ConfigError(f"{self.image_dir}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
        return images

    def _all_samples(self) -> list[SampleFile]:
        samples = paired_samples(self._images, self.mask_dir, self.mask_suffix)
        if self.labels_from == "none":
            return samples
        names = [self._label_name(sample.name, sample.image) for sample in samples]
        unknown = sorted(set(names) - set(self.label_names))
        if unknown:
            raise ConfigError(
                f"{self.image_dir}: labels {unknown} are not in data.label_names {self.label_names}"
            )
        return [
            dataclasses.replace(sample, label=self.label_names.index(name))
            for sample, name in zip(samples, names, strict=True)
        ]

    def all_splits(self) -> dict[str, list[SampleFile]]:
        """Train/val/test samples: the list files', then a seeded random split of the rest."""
        samples = self._all_samples()
        by_key = {s.name: s for s in samples}
        by_name: dict[str, list[SampleFile]] = {}
        for s in samples:
            by_name.setdefault(s.name.rsplit("/", 1)[-1], []).append(s)
        image_folders = {name.rsplit("/", 1)[0] for name in by_key if "/" in name}

        def lookup(entry: str, list_file: Path) -> SampleFile:
            # an entry is a relative stem ("cat/x"), a stem, or a path with a suffix (SegNet-style lists)
            path = Path(entry)
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                path = path.with_suffix("")
            if path.as_posix() in by_key:
                return by_key[path.as_posix()]
            # by file name only when the entry's folder is not one of the image tree's ("cat/x" never
            # means "dog/x"); SegNet-style lines carry folders of another machine
            matches = [] if path.parent.as_posix() in image_folders else by_name.get(path.name, [])
            if len(matches) != 1:
                raise ConfigError(f"{list_file}: {entry!r} matches {len(matches)} images in {self.image_dir}")
            return matches[0]

        listed: dict[str, list[SampleFile]] = {}
        list_files: dict[str, Path] = {}
        for split, list_name in self.lists.items():
            if list_name is not None:
                list_files[split] = self.root / list_name
                listed[split] = [
                    lookup(entry, list_files[split]) for entry in read_split_list(list_files[split])
                ]
        check_split_lists(listed, list_files)
        taken = {s.name for part in listed.values() for s in part}
        pool = [s for s in samples if s.name not in taken]
        drawn = split_samples(
            pool,
            self.val_fraction if "val" not in listed else 0.0,
            self.test_fraction if "test" not in listed else 0.0,
            self.split_seed,
        )
        if "train" in listed and drawn["train"]:
            # train is a list, so what the fractions leave over belongs to no split: said, not guessed at
            self.unlisted = [s.name for s in drawn["train"]]
            rank_zero_warn(
                f"{type(self).__name__}: {len(self.unlisted)} sample(s) are named by no split list and not "
                f"used (first: {self.unlisted[0]})"
            )
        return {split: listed.get(split, drawn[split]) for split in SPLIT_NAMES}

    def find_samples(self, split: str) -> list[SampleFile]:
        if split != "predict":
            return super().find_samples(split)
        if self.predict_dir is not None:
            images = find_files(self.predict_dir, IMAGE_EXTENSIONS)
            return [SampleFile(path, None, key) for key, path in sorted(images.items())]
        splits = self.splits()
        return splits["test"] or splits["val"]
