"""Datasets made of image files and mask files: what every file-based data module shares.

:class:`ImageMaskDataModule` checks the files at setup (``on_bad_sample``, ``check_files``), decodes once
per sample and resizes to a fixed size on the CPU. A dataset module only says where its files are
(:meth:`ImageMaskDataModule.find_samples` or :meth:`ImageMaskDataModule.all_splits`) and how its masks
encode classes (:meth:`ImageMaskDataModule.mask_encoder`); folders of your own, CamVid, Oxford pets, VOC,
MSD and COCO are built that way. Finding and pairing files lives in ``files.py``, splits in ``splits.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.data import Dataset, get_worker_info

from lightning_seg.data.augment import natural_image_augmentations
from lightning_seg.data.base import SegDataModule, sample_id
from lightning_seg.data.files import SampleFile
from lightning_seg.data.folds import assign_folds, group_keys
from lightning_seg.data.io import (
    ImageHeader,
    MaskEncoder,
    image_header,
    image_size,
    read_image,
    size_mismatch_message,
)
from lightning_seg.data.splits import check_disjoint_splits
from lightning_seg.data.stats import cached_image_presence
from lightning_seg.data.transforms import resize_mask, resize_sample
from lightning_seg.data.workers import map_in_workers, single_threaded
from lightning_seg.errors import ConfigError


def compact_mask(mask: torch.Tensor) -> torch.Tensor:
    """An int64 mask as uint8 when its values fit (8× less to carry to the device; widened there)."""
    if mask.numel() and 0 <= int(mask.min()) and int(mask.max()) <= 255:
        return mask.to(torch.uint8)
    return mask


class ImageMaskDataset(Dataset):
    """Samples decoded from files, made batchable by resizing to ``size``.

    Each item is ``{"image": uint8 3×h×w, "mask": int64 h×w, "name": str, "orig_size": int64 (2,),
    "label": int64 ()}`` (``mask`` absent when ``encoder`` is None, ``label`` when the sample has none).
    ``orig_size`` is the stored (height, width), so predictions can be mapped back.

    Args:
        samples: the files.
        encoder: reads mask files into class indices; None for images without masks (predict).
        size: (height, width) of every sample; None keeps the stored size.
        image_value_range: (low, high) stored values mapped onto 0..255 for images deeper than 8 bits
            (see :func:`~lightning_seg.data.io.to_8bit`); None refuses such images.
    """

    def __init__(
        self,
        samples: Sequence[SampleFile],
        encoder: MaskEncoder | None,
        size: tuple[int, int] | None,
        image_value_range: tuple[float, float] | None = None,
    ):
        self.samples = list(samples)
        self.encoder = encoder
        self.size = tuple(size) if size is not None else None
        self.image_value_range = image_value_range

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

    keep_original_mask = False
    """Also return ``orig_mask``, the mask at its stored size (the splits scored at the original size)."""
    keep_original_image = False
    """Also return ``orig_image``, the uint8 image at its stored size (for post-processing that reads the
    image, such as a dense CRF)."""

    def decode(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample ``index`` at its stored size: uint8 3×H×W image and int64 H×W mask (None without an
        encoder). Raises ConfigError for a bad sample."""
        sample = self.samples[index]
        if sample.error:
            raise ConfigError(sample.error)
        image = read_image(sample.image, self.image_value_range)
        mask = self._read_mask(sample, tuple(image.shape[-2:])) if self.encoder is not None else None
        return image, mask

    def _load(self, index: int) -> dict:
        image, mask = self.decode(index)
        height, width = image.shape[-2:]
        original, original_image = mask, image
        image, mask = resize_sample(image, mask, self.size)
        item = {"image": image}
        if self.keep_original_image:
            item["orig_image"] = original_image
        if mask is not None:
            item["mask"] = mask
            if self.keep_original_mask and original is not None:
                item["orig_mask"] = compact_mask(original)
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
    """Decodes each sample once (no resize) and reports its problem (or None) and its size (as an
    :class:`ImageHeader`): a full check."""

    def __init__(self, dataset: ImageMaskDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[str | None, ImageHeader | None]:
        try:
            image, _ = self.dataset.decode(index)
        except ConfigError as err:
            return str(err), None
        return None, ImageHeader(tuple(image.shape[-2:]))


def _file_size(path: Path) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:  # a missing or unreadable file: setup reports it; the name alone identifies it here
        return None


def _relative_id(sample: SampleFile, root: Path | None) -> str:
    """``sample``'s image path relative to ``root``, without suffix; its ``name`` outside ``root``."""
    if root is not None:
        try:
            return Path(sample.image).relative_to(root).with_suffix("").as_posix()
        except ValueError:
            pass
    return sample.name


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
        image_value_range: [low, high] of the stored values of images deeper than 8 bits (16-bit, 32-bit,
            float), mapped linearly onto 0..255 and clipped; e.g. [0, 4095] for 12-bit data. None refuses
            such images at setup (their high byte alone would keep 16 grey levels of 12-bit data).
        folds: cross-validation (``lightning-seg cv`` sets it): the train and val samples together are
            split into this many folds (:mod:`lightning_seg.data.folds`: stratified by the classes and
            image labels each sample holds, seeded by ``fold_seed``); ``fold`` is validated on, the others
            trained on; the test split is left as it is. None: the dataset's own train/val split.
        fold: the fold validated on, 0..folds-1; -1: none (every fold trains, as ``refit``: ``cv --refit``).
        fold_seed: the folds' seed (``split_seed`` draws the test split where the data has no fixed one, so
            changing the folds never moves the test images).
        group_by: a regex on the sample name (its image path below the image folder, without suffix): the
            samples whose matches (first capture group, else the whole match) agree share a fold, e.g.
            ``'^([^_]+)_'`` for CamVid's drives. None: every sample alone.
        refit: train on the train and val samples together, without validation: the final model on all the
            training data (``cv --refit`` sets it). ``fit`` then checkpoints every epoch, with no monitor; the
            test split is left as it is.
        **kwargs: :class:`SegDataModule` arguments (batch size, workers, augmentation, normalisation).
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        on_bad_sample: Literal["error", "skip"] = "error",
        check_files: Literal["header", "full", "none"] = "header",
        split_seed: int = 0,
        image_value_range: tuple[float, float] | None = None,
        folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 0,
        group_by: str | None = None,
        refit: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if refit and folds is not None and fold != -1:
            raise ConfigError("data.refit trains on every fold together: leave data.folds null (or fold -1)")
        if folds is not None and (folds < 2 or not -1 <= fold < folds):
            raise ConfigError(
                f"data.folds must be >= 2 and data.fold in 0..folds-1 (or -1: none), got {folds} and {fold}"
            )
        if group_by is not None and folds is None:
            raise ConfigError("data.group_by groups cross-validation folds: set data.folds too (or use cv)")
        if size is not None:
            size = tuple(int(v) for v in size)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(f"data.size must be [height, width] with positive values, got {list(size)}")
        if on_bad_sample not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        if check_files not in ("header", "full", "none"):
            raise ConfigError(f"data.check_files must be 'header', 'full' or 'none', got {check_files!r}")
        if image_value_range is not None:
            image_value_range = tuple(float(v) for v in image_value_range)
            if len(image_value_range) != 2 or not image_value_range[0] < image_value_range[1]:
                raise ConfigError(
                    f"data.image_value_range must be [low, high] with low < high, got {list(image_value_range)}"
                )
        self.image_value_range = image_value_range
        self.size = size
        self.on_bad_sample = on_bad_sample
        self.check_files = check_files
        self.split_seed = split_seed
        self.folds, self.fold, self.fold_seed, self.group_by = folds, fold, fold_seed, group_by
        # fold -1 of a cv: no fold held out, the refit on every training sample
        self.refit = refit or (folds is not None and fold == -1)
        #: per split: how many samples setup dropped as bad (``on_bad_sample="skip"``)
        self.skipped: dict[str, int] = {}
        self._splits: dict[str, list[SampleFile]] | None = None
        self._folds: dict[str, list[SampleFile]] | None = None

    # --------------------------------------------------------------------------- subclass interface
    def all_splits(self) -> dict[str, list[SampleFile]]:
        """The files of every split :meth:`find_samples` serves from :meth:`splits` (e.g. "train", "val",
        "test"), found together; called once."""
        raise NotImplementedError

    def splits(self) -> dict[str, list[SampleFile]]:
        """:meth:`all_splits`, found once, then cached."""
        if self._splits is None:
            splits = self.all_splits()
            check_disjoint_splits(splits)
            self._splits = splits
        return self._splits

    @property
    def validates(self) -> bool:
        """Whether ``fit`` validates: not with ``refit``, nor where the config asks for no val split
        (:meth:`no_val_split_requested`)."""
        return not self.refit and not self.no_val_split_requested()

    def no_val_split_requested(self) -> bool:
        """Whether the config itself leaves the val split out (``val_fraction: 0`` and no val list, where a
        module draws its val split); an empty val split that was not asked for stays an error."""
        return False

    def split_samples(self, split: str) -> list[SampleFile]:
        """The samples ``split`` is built from: :meth:`find_samples`, or with ``folds`` for "train" and "val"
        the fold's (:meth:`fold_splits` of the train and val samples together, drawn once); with ``refit``
        the train and val samples train together and nothing validates."""
        if split not in ("train", "val") or (self.folds is None and not self.refit):
            return self.find_samples(split)
        if self._folds is None:
            pool = self._training_pool("data.refit" if self.refit else "data.folds")
            self._folds = {"train": pool, "val": []} if self.refit else self.fold_splits(pool)
            check_disjoint_splits(self._folds)
        return self._folds[split]

    def _training_pool(self, option: str) -> list[SampleFile]:
        """The train and val samples together; ConfigError in one line where the test split is made of
        them (VOC and COCO test on their val split: ``option`` would train on test images)."""
        pool = self.find_samples("train") + self.find_samples("val")
        try:
            test = {sample.image for sample in self.find_samples("test")}
        except ConfigError:  # no test split to be found: the command that needs one says so
            test = set()
        shared = [sample.image for sample in pool if sample.image in test]
        if shared:
            raise ConfigError(
                f"{shared[0]}: {option} would train on test images ({len(shared)} of the train and val "
                "samples are also the test split's); use it on data with a test split of its own"
            )
        return pool

    def fold_splits(self, pool: list[SampleFile]) -> dict[str, list[SampleFile]]:
        """``pool`` split into :attr:`folds` folds (:func:`lightning_seg.data.folds.assign_folds`) by the
        classes its masks hold (read once at :attr:`size`, cached) and its image labels: {"train": the
        other folds, "val": fold :attr:`fold`}, each in name order."""
        pool = sorted(pool, key=lambda sample: sample.name)
        readable = [i for i, sample in enumerate(pool) if sample.error is None]
        presence = torch.zeros(len(pool), self.num_classes, dtype=torch.bool)
        if readable:  # a sample with a missing mask holds nothing here; setup says what is wrong with it
            samples = [pool[i] for i in readable]
            dataset = ImageMaskDataset(samples, self.mask_encoder(), self.size, self.image_value_range)
            presence[readable] = cached_image_presence(
                dataset, self.num_classes, self.ignore_index, self.num_workers
            )
        if self.label_names:
            presence = torch.cat([presence, self._label_rows(pool)], dim=1)
        groups = group_keys([sample.name for sample in pool], self.group_by)
        assigned = assign_folds(presence, groups, self.folds, self.fold_seed)  # type: ignore[arg-type]
        return {
            "train": [s for s, f in zip(pool, assigned, strict=True) if f != self.fold],
            "val": [s for s, f in zip(pool, assigned, strict=True) if f == self.fold],
        }

    def _label_rows(self, samples: list[SampleFile]) -> torch.Tensor:
        """bool N×L: each sample's image labels (one index, or a multi-hot vector as VOC-Kaggle's)."""
        rows = torch.zeros(len(samples), len(self.label_names), dtype=torch.bool)
        for row, sample in enumerate(samples):
            label = sample.label
            if isinstance(label, int):
                rows[row, label] = True
            elif label is not None:
                rows[row] = torch.as_tensor(list(label), dtype=torch.bool)
        return rows

    def find_samples(self, split: str) -> list[SampleFile]:
        """The files of ``split`` ("train", "val", "test", "predict"); for "predict", :meth:`build_dataset`
        drops the masks (and a missing mask's error), so the test or val samples can be returned as they are.
        By default: ``splits()[split]``, the test split for "predict"."""
        return self.splits()["test" if split == "predict" else split]

    def sample_ids(self, split: str) -> list[str] | None:
        """Each sample's image path relative to ``root`` without suffix (its ``name`` where it lies elsewhere)
        and its image file's size in bytes: two files count as the same sample only if both agree (another
        folder whose files are named alike is other data). None for a split whose files cannot be found
        (setup says why, when it needs the split)."""
        try:
            samples = self.split_samples(split)
        except ConfigError:
            return None
        root = getattr(self, "root", None)
        return [sample_id(_relative_id(sample, root), _file_size(sample.image)) for sample in samples]

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
        samples = self.split_samples(split)
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
        dataset = self._check(split, ImageMaskDataset(samples, encoder, self.size, self.image_value_range))
        # after the check: with on_bad_sample "skip" it returns a new dataset of the good samples
        dataset.keep_original_mask = self.keeps_original_mask(split)
        dataset.keep_original_image = self.keep_original_images and split != "train"
        return dataset

    def _check(self, split: str, dataset: ImageMaskDataset) -> ImageMaskDataset:
        mode = "full" if self.on_bad_sample == "skip" else self.check_files
        if mode == "none":
            return dataset
        if mode == "header":
            results = [self._header_check(sample, dataset.encoder) for sample in dataset.samples]
            self._say_rotated(
                split, [s for s, (_, h) in zip(dataset.samples, results, strict=True) if h and h.rotated]
            )
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
            dataset = ImageMaskDataset(keep, dataset.encoder, dataset.size, dataset.image_value_range)
            results = [r for r in results if not r[0]]
        if self.size is None and self.batch_size > 1:
            sizes = {header.size: i for i, (_, header) in enumerate(results) if header is not None}
            if len(sizes) > 1:
                (a, i), (b, j) = list(sizes.items())[:2]
                raise ConfigError(
                    f"{name}: {split} images differ in size ({dataset.samples[i].image} is {a[0]}x{a[1]}, "
                    f"{dataset.samples[j].image} is {b[0]}x{b[1]}); set data.size to resize them"
                )
        return dataset

    def _say_rotated(self, split: str, rotated: list[SampleFile]) -> None:
        """Count the images an EXIF orientation rotates, once: their masks must match the rotated view, and
        for a square image no size check can tell."""
        if rotated and any(sample.mask is not None for sample in rotated):
            rank_zero_warn(
                f"{type(self).__name__}: {len(rotated)} {split} image(s) carry an EXIF orientation and are read "
                f"rotated, as a viewer shows them (first: {rotated[0].image}); their masks must match that view"
            )

    def _header_check(
        self, sample: SampleFile, encoder: MaskEncoder | None
    ) -> tuple[str | None, ImageHeader | None]:
        """A sample's problem from its file headers (or None), and its image's header."""
        if sample.error:
            return sample.error, None
        try:
            header = image_header(sample.image)
            if header.deep and self.image_value_range is None:
                read_image(sample.image)  # its message gives the stored range and the setting to use
            if encoder is not None and sample.mask is not None:
                encoder.check_format(sample.mask)
                problem = size_mismatch_message(
                    sample.image, header.size, sample.mask, image_size(sample.mask)
                )
                if problem:
                    return problem, None
        except ConfigError as err:
            return str(err), None
        return None, header
