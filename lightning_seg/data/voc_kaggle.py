"""PASCAL VOC 2009 as laid out for the in-class Kaggle competition: NumPy arrays and label CSVs.

::

    root/train/train_set.csv          Id,aeroplane,...,tvmonitor   one 0/1 column per VOC object class
    root/train/img/train_<Id>.npy     uint8 H×W×3
    root/train/seg/train_<Id>.npy     H×W class indices 0..20, 255 = void (the border around objects)
    root/test/test_set.csv            Id,aeroplane,...,tvmonitor   label values -1 (unknown)
    root/test/img/test_<Id>.npy       uint8 H×W×3, no masks

``train`` and ``val`` are a seeded split of ``train/`` (stratified by each image's rarest present label),
``test`` is the val split unless ``test_fraction`` holds out a share of its own, and ``predict`` runs on the
competition's ``test/`` images in the CSV's order, each sample named by its ``Id``
(:meth:`VOCKaggleDataModule.competition_ids` gives them in that order, for a submission file).
Every training sample carries ``label``: the int64 20-long 0/1 vector of its CSV row, the target of a
multi-label image-level head (``model.label_mode: multi``).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import torch

from lightning_seg.data.files import SampleFile
from lightning_seg.data.image_mask import ImageMaskDataModule, ImageMaskDataset
from lightning_seg.data.io import ImageHeader, MaskEncoder
from lightning_seg.data.splits import split_samples
from lightning_seg.data.voc import VOC_BORDER, VOC_CLASSES
from lightning_seg.errors import ConfigError

VOC_KAGGLE_LABELS = VOC_CLASSES[1:]
"""The 20 image-level labels: the CSV columns after ``Id``, in VOC's class order."""
TRAIN_CSV = Path("train") / "train_set.csv"
TEST_CSV = Path("test") / "test_set.csv"


# ------------------------------------------------------------------------------------------ .npy files
def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file from its header (memory-mapped: no pixel is read)."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        shape, dtype = tuple(array.shape), array.dtype
        del array
    except Exception as err:
        raise ConfigError(f"{path}: cannot read as .npy ({type(err).__name__}: {err})") from None
    return shape, dtype


def load_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file (read whole; pickled objects refused)."""
    try:
        return np.load(path, mmap_mode=None, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except Exception as err:
        raise ConfigError(f"{path}: cannot read as .npy ({type(err).__name__}: {err})") from None


def image_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """What is wrong with an image array of ``shape`` and ``dtype`` (None: a uint8 H×W×3 image)."""
    if dtype != np.uint8 or len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        return f"{path}: image array is {dtype} {'x'.join(map(str, shape)) or 'scalar'}, expected uint8 HxWx3"
    return None


def mask_problem(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, image: Path, size: tuple[int, int]
) -> str | None:
    """What is wrong with a mask array beside its image of ``size`` (None: an integer H×W mask)."""
    if len(shape) != 2 or not np.issubdtype(dtype, np.integer):
        return f"{path}: mask array is {dtype} {'x'.join(map(str, shape)) or 'scalar'}, expected integer HxW"
    if tuple(shape) != tuple(size):
        return f"{path}: mask is {shape[0]}x{shape[1]} but its image {image} is {size[0]}x{size[1]}"
    return None


def read_npy_image(path: Path) -> torch.Tensor:
    """uint8 3×H×W from a uint8 H×W×3 ``.npy`` file."""
    array = load_npy(path)
    problem = image_problem(path, tuple(array.shape), array.dtype)
    if problem:
        raise ConfigError(problem)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclasses.dataclass(frozen=True)
class NpyIndexMaskEncoder(MaskEncoder):
    """``.npy`` masks of class indices ``0 .. num_classes - 1`` with ``ignore_index`` for void pixels."""

    num_classes: int
    ignore_index: int = 255

    def check_format(self, path: str | Path) -> None:
        return None  # .npy stores exact values

    def read(self, path: str | Path) -> torch.Tensor:
        path = Path(path)
        array = load_npy(path)
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(
                f"{path}: mask array is {array.dtype} {'x'.join(map(str, array.shape))}, expected integer HxW"
            )
        mask = torch.from_numpy(array.astype(np.int64, copy=False))
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)
        if bool(bad.any()):
            values = torch.unique(mask[bad])[:5].tolist()
            raise ConfigError(
                f"{path}: mask values {values} are outside 0..{self.num_classes - 1} and void {self.ignore_index}"
            )
        return mask


class NpyImageMaskDataset(ImageMaskDataset):
    """:class:`ImageMaskDataset` over ``.npy`` images (uint8 H×W×3) and ``.npy`` masks: the same resizing,
    ``orig_mask``/``orig_image`` and ``label`` handling; only the image reader differs."""

    def decode(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        sample = self.samples[index]
        if sample.error:
            raise ConfigError(sample.error)
        image = read_npy_image(sample.image)
        mask = self._read_mask(sample, tuple(image.shape[-2:])) if self.encoder is not None else None
        return image, mask


# ---------------------------------------------------------------------------------------------- CSVs
@dataclasses.dataclass(frozen=True)
class CSVRow:
    """One row of a label CSV: the image ``Id`` as written and its 20 values in VOC's label order."""

    id: str
    values: tuple[int, ...]


def _zero_one(text: str) -> int | None:
    """0 or 1 from a CSV field ("0", "1", "1.0"), None for anything else."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def read_label_csv(path: Path, check_values: bool) -> list[CSVRow]:
    """The rows of ``train_set.csv`` / ``test_set.csv``, columns reordered to :data:`VOC_KAGGLE_LABELS`.

    Refuses (one line naming the file): a missing file, a header other than ``Id`` plus exactly the 20 VOC
    labels, a short or long row, a repeated ``Id``, no rows, and with ``check_values`` a value other than
    0 or 1.
    """
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; expected the VOC Kaggle layout (train/train_set.csv, test/...)"
        )
    with path.open(newline="", encoding="utf-8-sig") as handle:
        lines = list(csv.reader(handle))
    header = [field.strip() for field in lines[0]] if lines else []
    columns = header[1:]
    if (
        not header
        or header[0] != "Id"
        or len(columns) != len(VOC_KAGGLE_LABELS)
        or set(columns) != set(VOC_KAGGLE_LABELS)
    ):
        missing = [name for name in VOC_KAGGLE_LABELS if name not in columns]
        extra = [name for name in columns if name not in VOC_KAGGLE_LABELS]
        raise ConfigError(
            f"{path}: header must be Id then the 20 VOC classes aeroplane..tvmonitor; "
            f"got first column {(header or [''])[0]!r} and {len(columns)} label columns "
            f"(missing {missing[:3]}, unknown {extra[:3]})"
        )
    order = [columns.index(name) + 1 for name in VOC_KAGGLE_LABELS]
    rows: list[CSVRow] = []
    seen: set[str] = set()
    for line_number, fields in enumerate(lines[1:], start=2):
        if not fields or all(not field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            raise ConfigError(
                f"{path}: line {line_number} has {len(fields)} fields, the header {len(header)}"
            )
        row_id = fields[0].strip()
        if not row_id or row_id in seen:
            raise ConfigError(
                f"{path}: line {line_number}: Id {row_id!r} is {'repeated' if row_id else 'empty'}"
            )
        seen.add(row_id)
        values: tuple[int, ...] = ()
        if check_values:
            texts = [fields[i].strip() for i in order]
            bad = next((text for text in texts if _zero_one(text) is None), None)
            if bad is not None:
                raise ConfigError(f"{path}: Id {row_id}: label value {bad!r} is not 0 or 1")
            values = tuple(_zero_one(text) for text in texts)
        rows.append(CSVRow(row_id, values))
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def rarest_present_label(labels: list[tuple[int, ...]]) -> list[int]:
    """Each multi-hot row's rarest present label (fewest rows hold it; ties to the lower index), -1 for a row
    without any: the group a split is stratified by and ``balanced_labels`` draws by."""
    counts = [sum(column) for column in zip(*labels, strict=True)] if labels else []
    return [
        min((i for i, value in enumerate(row) if value), key=lambda i: (counts[i], i), default=-1)
        for row in labels
    ]


# --------------------------------------------------------------------------------------------- module
class VOCKaggleDataModule(ImageMaskDataModule):
    """PASCAL VOC 2009 in the Kaggle competition's ``.npy`` + CSV layout (see the module docstring).

    ``class_names`` are VOC's 21 (background + 20), void 255 is ``ignore_index``, and ``label_names`` the 20
    object classes: each train/val/test sample carries ``label``, the int64 (20,) 0/1 vector of its CSV row.
    ``predict`` samples are the competition's test images in ``test_set.csv`` order, named by their ``Id``,
    without masks or labels; :meth:`competition_ids` lists those Ids in that order.

    Args:
        root: the folder holding ``train/`` and ``test/``.
        size: (height, width) samples are resized to (the photos are at most 500×500, of varied shapes).
        val_fraction: seeded share of ``train/`` for validation (``split_seed``), stratified by each image's
            rarest present label.
        test_fraction: share of ``train/`` held out for ``test``; 0: ``test`` scores the val split.
        **kwargs: :class:`~lightning_seg.data.image_mask.ImageMaskDataModule` arguments (``on_bad_sample``,
            ``check_files``, ``split_seed``) and :class:`~lightning_seg.data.base.SegDataModule` arguments.
    """

    class_names = VOC_CLASSES
    ignore_index = VOC_BORDER
    label_names = VOC_KAGGLE_LABELS

    def __init__(
        self,
        root: str,
        size: tuple[int, int] | None = (320, 320),
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(size=size, **kwargs)
        self.root = Path(root)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self._competition: list[SampleFile] | None = None

    # ----------------------------------------------------------------------------------------- files
    def no_val_split_requested(self) -> bool:
        """``val_fraction: 0``: trained without validation, on purpose."""
        return self.val_fraction == 0

    def _train_samples(self) -> list[SampleFile]:
        path = self.root / TRAIN_CSV
        rows = read_label_csv(path, check_values=True)
        samples = []
        for row in rows:
            image = self.root / "train" / "img" / f"train_{row.id}.npy"
            mask = self.root / "train" / "seg" / f"train_{row.id}.npy"
            missing = next((p for p in (image, mask) if not p.is_file()), None)
            error = f"{missing}: not found (Id {row.id} of {path})" if missing else None
            samples.append(SampleFile(image, mask, row.id, row.values, error=error))
        return samples

    def competition_samples(self) -> list[SampleFile]:
        """The competition's test images (no masks), in ``test_set.csv`` order, named by ``Id``."""
        if self._competition is None:
            path = self.root / TEST_CSV
            samples = []
            for row in read_label_csv(path, check_values=False):
                image = self.root / "test" / "img" / f"test_{row.id}.npy"
                error = None if image.is_file() else f"{image}: not found (Id {row.id} of {path})"
                samples.append(SampleFile(image, None, row.id, error=error))
            self._competition = samples
        return self._competition

    def competition_ids(self, split: str = "predict") -> list[str]:
        """The sample names (CSV ``Id`` values) of ``split`` in the order its loader yields them: for
        "predict" the order of ``test/test_set.csv`` (the order a submission lists them in)."""
        if split == "predict":
            return [sample.name for sample in self.competition_samples()]
        dataset = self.datasets.get(split)
        samples = dataset.samples if dataset is not None else self.split_samples(split)
        return [sample.name for sample in samples]

    def competition_label_names(self) -> list[str]:
        """The label columns of ``test/test_set.csv`` in its header's order: the order of the 0/1 vector a
        submission's classification rows encode (the data and the model use VOC's order)."""
        path = Path(self.root) / TEST_CSV
        read_label_csv(path, check_values=False)  # the header is checked (one line naming the file)
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle))
        return [field.strip() for field in header[1:]]

    def all_splits(self) -> dict[str, list[SampleFile]]:
        samples = self._train_samples()
        groups = rarest_present_label([sample.label for sample in samples])
        # stratify by the rarest present label: split_samples groups by SampleFile.label
        proxies = [dataclasses.replace(s, label=g) for s, g in zip(samples, groups, strict=True)]
        by_name = {sample.name: sample for sample in samples}
        split = split_samples(proxies, self.val_fraction, self.test_fraction, self.split_seed)
        out = {name: [by_name[proxy.name] for proxy in part] for name, part in split.items()}
        if self.test_fraction == 0:
            out["test"] = list(out["val"])
        return out

    def find_samples(self, split: str) -> list[SampleFile]:
        if split == "predict":
            return self.competition_samples()
        return self.splits()[split]

    def mask_encoder(self) -> MaskEncoder:
        return NpyIndexMaskEncoder(len(self.class_names), self.ignore_index)

    def empty_split_hint(self, split: str) -> str:
        if split == "val":
            return "set data.val_fraction above 0"
        return f"check {self.root / (TEST_CSV if split == 'predict' else TRAIN_CSV)}"

    # -------------------------------------------------------------------------------------- datasets
    def build_dataset(self, split: str) -> NpyImageMaskDataset:
        samples = self.split_samples(split)
        if not samples:
            raise ConfigError(
                f"{type(self).__name__}: the {split} split is empty; {self.empty_split_hint(split)}"
            )
        encoder = None if split == "predict" else self.mask_encoder()
        dataset = self._check(split, NpyImageMaskDataset(samples, encoder, self.size))
        if not isinstance(dataset, NpyImageMaskDataset):  # on_bad_sample "skip" rebuilt it with the good ones
            dataset = NpyImageMaskDataset(dataset.samples, encoder, self.size)
        dataset.keep_original_mask = self.keeps_original_mask(split)
        dataset.keep_original_image = self.keep_original_images and split != "train"
        return dataset

    def _header_check(
        self, sample: SampleFile, encoder: MaskEncoder | None
    ) -> tuple[str | None, ImageHeader | None]:
        """A sample's problem from its ``.npy`` headers (or None), and its image's size: image uint8
        H×W×3, mask integer H×W of the same size. Mask values are checked when the mask is read."""
        if sample.error:
            return sample.error, None
        try:
            shape, dtype = npy_header(sample.image)
            problem = image_problem(sample.image, shape, dtype)
            if problem:
                return problem, None
            size = (shape[0], shape[1])
            if encoder is not None and sample.mask is not None:
                mask_shape, mask_dtype = npy_header(sample.mask)
                problem = mask_problem(sample.mask, mask_shape, mask_dtype, sample.image, size)
                if problem:
                    return problem, None
        except ConfigError as err:
            return str(err), None
        return None, ImageHeader(size)

    # ------------------------------------------------------------------------------------ labels
    def sample_labels(self, split: str = "train") -> torch.Tensor:
        """int64 (N,): each sample's rarest present label (-100 for an image with none), the group
        ``data.balanced_labels`` draws by. :meth:`multi_hot_labels` gives the full vectors."""
        groups = rarest_present_label([tuple(row) for row in self.multi_hot_labels(split).tolist()])
        return torch.tensor([-100 if g < 0 else g for g in groups], dtype=torch.int64)

    def multi_hot_labels(self, split: str = "train") -> torch.Tensor:
        """int64 N×20: the CSV label vectors of ``split``'s samples, in the dataset's order."""
        dataset = self.datasets.get(split)
        samples = dataset.samples if dataset is not None else self.split_samples(split)
        return torch.tensor([list(s.label) for s in samples], dtype=torch.int64).view(
            -1, len(self.label_names)
        )

    def label_image_counts(self, split: str = "train") -> torch.Tensor:
        """int64 (20,): how many images of ``split`` hold each label."""
        return self.multi_hot_labels(split).sum(0)
