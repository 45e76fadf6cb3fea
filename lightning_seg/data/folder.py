"""Datasets made of image files and mask files, and ``FolderDataModule`` for your own folders.

:class:`ImageMaskDataModule` holds what every file-based dataset shares: checking the files at setup
(``on_bad_sample``), decoding once per sample, resizing to a fixed size on the CPU, seeded stratified splits.
A dataset module only says where its files are (:meth:`ImageMaskDataModule.find_samples`) and how its
masks encode classes (:meth:`ImageMaskDataModule.mask_encoder`); CamVid, Oxford pets, VOC, MSD and COCO
are built that way.

:class:`FolderDataModule` reads any ``images/`` + ``masks/`` tree paired by file stem::

    root/images/a.jpg   root/masks/a.png
    root/images/b.png   root/masks/b.png
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.data import Dataset, get_worker_info

from lightning_seg.data.augment import natural_image_augmentations
from lightning_seg.data.base import SegDataModule
from lightning_seg.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    BinaryMaskEncoder,
    ColorMaskEncoder,
    IndexMaskEncoder,
    MaskEncoder,
    image_size,
    missing_mask_message,
    read_image,
    size_mismatch_message,
)
from lightning_seg.data.transforms import resize_mask, resize_sample
from lightning_seg.data.workers import map_in_workers, single_threaded
from lightning_seg.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


# ------------------------------------------------------------------------------------------- samples
@dataclasses.dataclass(frozen=True)
class SampleFile:
    """One sample on disk.

    Attributes:
        image: the image file.
        mask: the mask file; None means "no annotation file": an all-background mask where the split has
            masks (MSD's defect-free images, COCO images without instances), nothing in ``predict``.
        name: identifies the sample in outputs (the image path relative to its folder, without suffix).
        label: image-level class index, or None.
        foreground_class: for binary (0/1) masks, the class their foreground becomes (MSD defect types).
        error: a problem found while pairing files (e.g. a missing mask); the sample is bad.
    """

    image: Path
    mask: Path | None = None
    name: str = ""
    label: int | None = None
    foreground_class: int | None = None
    error: str | None = None


class ImageMaskDataset(Dataset):
    """Samples decoded from files, made batchable by resizing to ``size``.

    Each item is ``{"image": uint8 3×h×w, "mask": int64 h×w, "name": str, "orig_size": int64 (2,),
    "label": int64 ()}`` (``mask`` absent when ``encoder`` is None, ``label`` when the sample has none).
    ``orig_size`` is the stored (height, width), so predictions can be mapped back.

    Args:
        samples: the files.
        encoder: reads mask files into class indices; None for images without masks (predict).
        size: (height, width) of every sample; None keeps the stored size.
    """

    def __init__(
        self, samples: Sequence[SampleFile], encoder: MaskEncoder | None, size: tuple[int, int] | None
    ):
        self.samples = list(samples)
        self.encoder = encoder
        self.size = tuple(size) if size is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def _read_mask(self, sample: SampleFile, size: tuple[int, int] | None) -> torch.Tensor:
        """The int64 mask of ``sample`` at its stored size. ``size``: its image's (height, width), which
        the mask must match; None skips that check (then ``sample.mask`` must not be None)."""
        if sample.mask is None:
            return torch.zeros(size, dtype=torch.int64)
        mask = self.encoder.read(sample.mask)
        if size is not None:
            problem = size_mismatch_message(sample.image, size, sample.mask, tuple(mask.shape))
            if problem:
                raise ConfigError(problem)
        if sample.foreground_class is not None:
            mask = torch.where(mask == 1, sample.foreground_class, mask)
        return mask

    def __getitem__(self, index: int) -> dict:
        if get_worker_info() is None and torch.get_num_threads() > 1:
            # in the main process (num_workers=0) do what DataLoader workers do: one intra-op thread;
            # per-image ops gain nothing from more, and on busy cores lose several times (measured 7x)
            with single_threaded():
                return self._load(index)
        return self._load(index)

    def decode(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample ``index`` at its stored size: uint8 3×H×W image and int64 H×W mask (None without an
        encoder). Raises ConfigError for a bad sample."""
        sample = self.samples[index]
        if sample.error:
            raise ConfigError(sample.error)
        image = read_image(sample.image)
        mask = self._read_mask(sample, tuple(image.shape[-2:])) if self.encoder is not None else None
        return image, mask

    def _load(self, index: int) -> dict:
        image, mask = self.decode(index)
        height, width = image.shape[-2:]
        image, mask = resize_sample(image, mask, self.size)
        item = {"image": image}
        if mask is not None:
            item["mask"] = mask
        sample = self.samples[index]
        item["name"] = sample.name
        item["orig_size"] = torch.tensor([height, width], dtype=torch.int64)
        if sample.label is not None:
            item["label"] = torch.tensor(sample.label, dtype=torch.int64)
        return item

    def load_mask(self, index: int) -> torch.Tensor:
        """The int64 h×w mask of sample ``index`` as training sees it, without decoding the image."""
        sample = self.samples[index]
        if sample.error:
            raise ConfigError(sample.error)
        # a mask file gives its own size; only an all-background mask needs the image's
        size = image_size(sample.image) if sample.mask is None else None
        return resize_mask(self._read_mask(sample, size), self.size)

    def identity(self) -> str:
        """A digest of everything the masks depend on (files, their sizes and times, encoder, size)."""
        digest = hashlib.sha1(repr((self.encoder, self.size)).encode())
        for sample in self.samples:
            stat = sample.mask.stat() if sample.mask is not None and sample.mask.exists() else None
            stamp = (stat.st_size, stat.st_mtime_ns) if stat else None
            digest.update(f"{sample.image}|{sample.mask}|{sample.foreground_class}|{stamp}\n".encode())
        return digest.hexdigest()


class _Probe(Dataset):
    """Decodes each sample once (no resize) and reports its problem (or None) and its stored size: a full
    check."""

    def __init__(self, dataset: ImageMaskDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[str | None, tuple[int, int] | None]:
        try:
            image, _ = self.dataset.decode(index)
        except ConfigError as err:
            return str(err), None
        return None, tuple(image.shape[-2:])


# --------------------------------------------------------------------------------------- file finding
def find_files(directory: Path, extensions: Sequence[str], exclude: Path | None = None) -> dict[str, Path]:
    """Files under ``directory`` (recursively) by relative stem, e.g. ``{"cat/x": Path(".../cat/x.jpg")}``.

    Hidden files and folders and anything under ``exclude`` are skipped. Two files with the same stem
    (``x.png`` and ``x.jpg``) are an error: the pairing would be ambiguous.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: folder not found")
    # an excluded folder only matters when it lies inside ``directory`` (e.g. images/masks/)
    skip: tuple[str, ...] | None = None
    if exclude is not None and Path(exclude).resolve().is_relative_to(directory.resolve()):
        skip = Path(exclude).resolve().relative_to(directory.resolve()).parts
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.suffix.lower() not in extensions or any(part.startswith(".") for part in relative.parts):
            continue
        if skip is not None and relative.parts[: len(skip)] == skip:
            continue
        key = relative.with_suffix("").as_posix()
        if key in found:
            raise ConfigError(f"{path}: two files with the stem {key!r} ({found[key].name} and {path.name})")
        found[key] = path
    return found


def pair_masks(
    images: dict[str, Path],
    mask_dir: Path,
    mask_suffix: str = "",
    extensions: Sequence[str] = MASK_EXTENSIONS,
) -> list[tuple[str, Path, Path | None]]:
    """Pair each image with the mask of the same stem (plus ``mask_suffix``).

    A mask is looked up by the image's relative stem first (``masks/cat/x.png`` for ``images/cat/x.jpg``),
    then by file name alone when that is unique (a flat ``masks/`` folder).

    Returns:
        (key, image, mask or None when missing), sorted by key.
    """
    masks = find_files(mask_dir, extensions)
    by_name: dict[str, list[Path]] = {}
    for key, path in masks.items():
        by_name.setdefault(key.rsplit("/", 1)[-1], []).append(path)
    pairs = []
    for key, image in sorted(images.items()):
        mask = masks.get(key + mask_suffix)
        if mask is None:
            candidates = by_name.get(key.rsplit("/", 1)[-1] + mask_suffix, [])
            mask = candidates[0] if len(candidates) == 1 else None
        pairs.append((key, image, mask))
    return pairs


# -------------------------------------------------------------------------------------------- splits
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
    """Stems from a split list: one per line; only the first field counts, directories and suffixes are
    dropped when the full entry is not a stem (so SegNet's ``/SegNet/CamVid/train/x.png ...`` lines work).
    Blank lines and ``#`` comments are skipped."""
    if not path.is_file():
        raise ConfigError(f"{path}: split list not found")
    stems = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            stems.append(line.split()[0])
    return stems


def require_list_file(list_file: Path, layout: str, download: bool) -> None:
    """Fail with one line when a split list of a dataset in torchvision's ``layout`` is missing."""
    if not list_file.is_file():
        hint = " (or set data.download true)" if not download else ""
        raise ConfigError(f"{list_file}: not found; expected torchvision's {layout} layout{hint}")


def listed_sample(image: Path, mask: Path, name: str, label: int | None = None) -> SampleFile:
    """A sample whose files a split list names: a missing mask file makes it bad."""
    error = None if mask.is_file() else f"{image}: mask missing ({mask})"
    return SampleFile(image, mask, name, label, error=error)


# -------------------------------------------------------------------------------------- data modules
class ImageMaskDataModule(SegDataModule):
    """Base of the file-based dataset modules: checks files at setup, decodes once per sample, resizes.

    Subclasses implement :meth:`mask_encoder` and either :meth:`all_splits` (every split at once, e.g. one
    seeded random split; computed once, then served by :meth:`find_samples`) or :meth:`find_samples` itself,
    and set ``class_names`` (and ``label_names`` when samples carry an image-level label, known once the
    module is built: the CLI links it into the model).

    Args:
        size: (height, width) every sample is resized to on the CPU (bilinear image, nearest mask) so that
            samples batch; None keeps stored sizes (they must then all agree, or batch_size be 1).
        on_bad_sample: "error": the first bad file stops setup with a one-line ConfigError naming it.
            "skip": every sample is decoded once at setup, bad ones are dropped and counted in one warning.
        check_files: what setup checks with ``on_bad_sample="error"``: "header" (files exist, masks exist,
            image and mask sizes agree; reads headers only), "full" (decode every sample), "none".
            Problems a check does not cover surface when the sample is loaded.
        split_seed: seed of the random train/val/test split where a dataset has no official one.
        **kwargs: :class:`SegDataModule` arguments (batch size, workers, augmentation, normalisation).
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        on_bad_sample: Literal["error", "skip"] = "error",
        check_files: Literal["header", "full", "none"] = "header",
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if size is not None:
            size = tuple(int(v) for v in size)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(f"data.size must be [height, width] with positive values, got {list(size)}")
        if on_bad_sample not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        if check_files not in ("header", "full", "none"):
            raise ConfigError(f"data.check_files must be 'header', 'full' or 'none', got {check_files!r}")
        self.size = size
        self.on_bad_sample = on_bad_sample
        self.check_files = check_files
        self.split_seed = split_seed
        #: per split: how many samples setup dropped as bad (``on_bad_sample="skip"``)
        self.skipped: dict[str, int] = {}
        self._splits: dict[str, list[SampleFile]] | None = None

    # --------------------------------------------------------------------------- subclass interface
    def all_splits(self) -> dict[str, list[SampleFile]]:
        """The files of every split :meth:`find_samples` serves from :meth:`splits` (e.g. "train", "val",
        "test"), found together; called once."""
        raise NotImplementedError

    def splits(self) -> dict[str, list[SampleFile]]:
        """:meth:`all_splits`, found once, then cached."""
        if self._splits is None:
            self._splits = self.all_splits()
        return self._splits

    def find_samples(self, split: str) -> list[SampleFile]:
        """The files of ``split`` ("train", "val", "test", "predict"); for "predict", :meth:`build_dataset`
        drops the masks (and a missing mask's error), so the test or val samples can be returned as they are.
        By default: ``splits()[split]``, the test split for "predict"."""
        return self.splits()["test" if split == "predict" else split]

    def mask_encoder(self) -> MaskEncoder:
        """How this dataset's mask files encode classes."""
        raise NotImplementedError

    def empty_split_hint(self, split: str) -> str:
        """Appended to the "split is empty" error: what to set to fill it."""
        return "check the dataset layout"

    def default_train_augmentations(self) -> list[nn.Module]:
        return natural_image_augmentations(self.size)

    # ------------------------------------------------------------------------------------- datasets
    def build_dataset(self, split: str) -> ImageMaskDataset:
        samples = self.find_samples(split)
        name = type(self).__name__
        if not samples:
            raise ConfigError(f"{name}: the {split} split is empty; {self.empty_split_hint(split)}")
        encoder = None
        if split == "predict":
            # images only: a predict sample's mask (or its missing mask, the usual ``error``) does not matter
            samples = [
                dataclasses.replace(sample, mask=None, error=None, foreground_class=None)
                for sample in samples
            ]
        else:
            encoder = self.mask_encoder()
        dataset = ImageMaskDataset(samples, encoder, self.size)
        return self._check(split, dataset)

    def _check(self, split: str, dataset: ImageMaskDataset) -> ImageMaskDataset:
        mode = "full" if self.on_bad_sample == "skip" else self.check_files
        if mode == "none":
            return dataset
        if mode == "header":
            results = [self._header_check(sample, dataset.encoder is not None) for sample in dataset.samples]
        else:
            # decode everything once, in the module's worker processes
            results = list(map_in_workers(_Probe(dataset), self.num_workers))
        problems = [problem for problem, _ in results if problem]
        name = type(self).__name__
        if problems and self.on_bad_sample == "error":
            raise ConfigError(problems[0])
        if problems:
            keep = [s for s, (problem, _) in zip(dataset.samples, results, strict=True) if not problem]
            self.skipped[split] = len(problems)
            rank_zero_warn(
                f"{name}: skipped {len(problems)} of {len(dataset)} {split} samples with bad files "
                f"(first: {problems[0]})"
            )
            if not keep:
                raise ConfigError(f"{name}: every {split} sample has a bad file (first: {problems[0]})")
            dataset = ImageMaskDataset(keep, dataset.encoder, dataset.size)
            results = [r for r in results if not r[0]]
        if self.size is None and self.batch_size > 1:
            sizes = {size: i for i, (_, size) in enumerate(results) if size is not None}
            if len(sizes) > 1:
                (a, i), (b, j) = list(sizes.items())[:2]
                raise ConfigError(
                    f"{name}: {split} images differ in size ({dataset.samples[i].image} is {a[0]}x{a[1]}, "
                    f"{dataset.samples[j].image} is {b[0]}x{b[1]}); set data.size to resize them"
                )
        return dataset

    @staticmethod
    def _header_check(sample: SampleFile, with_mask: bool) -> tuple[str | None, tuple[int, int] | None]:
        if sample.error:
            return sample.error, None
        try:
            size = image_size(sample.image)
            if with_mask and sample.mask is not None:
                problem = size_mismatch_message(sample.image, size, sample.mask, image_size(sample.mask))
                if problem:
                    return problem, None
        except ConfigError as err:
            return str(err), None
        return None, size


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
        binary_threshold: 1..255, for ``mask_mode="binary"``.
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
        binary_threshold: int = 128,
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
        self.ignore_index = ignore_index
        self.labels_from = labels_from
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.predict_dir = self.root / predict_dir if predict_dir is not None else None
        if labels_from not in ("none", "parent", "prefix"):
            raise ConfigError(f"data.labels_from must be 'none', 'parent' or 'prefix', got {labels_from!r}")
        self._label_names = tuple(label_names) if label_names is not None else None

        if mask_mode == "binary":
            self.class_names = tuple(class_names or ("background", "foreground"))
            if len(self.class_names) != 2:
                raise ConfigError(
                    f"data.class_names must have 2 names with mask_mode binary, got {class_names}"
                )
            self._encoder: MaskEncoder = BinaryMaskEncoder(binary_threshold)
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
        return self._encoder

    def empty_split_hint(self, split: str) -> str:
        if split in ("val", "test"):
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
        pairs = pair_masks(self._images, self.mask_dir, self.mask_suffix)
        names = None
        if self.labels_from != "none":
            names = [self._label_name(key, image) for key, image, _ in pairs]
            unknown = sorted(set(names) - set(self.label_names))
            if unknown:
                raise ConfigError(
                    f"{self.image_dir}: labels {unknown} are not in data.label_names {self.label_names}"
                )
        samples = []
        for i, (key, image, mask) in enumerate(pairs):
            error = (
                None
                if mask is not None
                else missing_mask_message(image, self.mask_dir, key + self.mask_suffix)
            )
            label = self.label_names.index(names[i]) if names is not None else None
            samples.append(SampleFile(image, mask, key, label, error=error))
        return samples

    def all_splits(self) -> dict[str, list[SampleFile]]:
        """Train/val/test samples: the list files', then a seeded random split of the rest."""
        samples = self._all_samples()
        by_key = {s.name: s for s in samples}
        by_name: dict[str, list[SampleFile]] = {}
        for s in samples:
            by_name.setdefault(s.name.rsplit("/", 1)[-1], []).append(s)

        def lookup(entry: str, list_file: Path) -> SampleFile:
            # an entry is a relative stem ("cat/x"), a stem, or a path with a suffix (SegNet-style lists)
            path = Path(entry)
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                path = path.with_suffix("")
            if path.as_posix() in by_key:
                return by_key[path.as_posix()]
            matches = by_name.get(path.name, [])
            if len(matches) != 1:
                raise ConfigError(f"{list_file}: {entry!r} matches {len(matches)} images in {self.image_dir}")
            return matches[0]

        listed: dict[str, list[SampleFile]] = {}
        for split, list_name in self.lists.items():
            if list_name is not None:
                list_file = self.root / list_name
                listed[split] = [lookup(entry, list_file) for entry in read_split_list(list_file)]
        taken = {s.name for part in listed.values() for s in part}
        pool = [s for s in samples if s.name not in taken]
        drawn = split_samples(
            pool,
            self.val_fraction if "val" not in listed else 0.0,
            self.test_fraction if "test" not in listed else 0.0,
            self.split_seed,
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
