"""``SegDataModule``: the one data path every dataset shares.

A dataset's ``__getitem__`` runs in a CPU worker and only decodes and makes the sample batchable; it returns::

    {"image": uint8 3×H×W, "mask": int64 H×W, "name": str, "orig_size": int64 (2,), "label"?: int64 ()}

:func:`collate_samples` turns those into a dict batch, masks narrowed to :func:`mask_wire_dtype` (uint8 for
up to 255 classes). After the batch reaches the device, ``on_after_batch_transfer`` converts the image to
float and the mask to int64, runs the split's Kornia pipeline once for the whole batch, normalises, and
applies the precision plugin's input conversion (bf16-true, 16-true, 64-true). ``num_classes``, ``ignore_index`` and ``class_names`` live here and only here; the CLI
links them into the model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from lightning_seg.data.augment import SegAugmentation, natural_image_augmentations
from lightning_seg.data.sampling import EpochSampler
from lightning_seg.errors import ConfigError

if TYPE_CHECKING:
    from lightning_seg.data.stats import ClassStatistics

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test", "predict")


ORIGINALS = ("orig_mask", "orig_image")
"""Sample keys holding a tensor at the sample's stored size (sizes differ: batched as lists)."""


def mask_wire_dtype(num_classes: int, ignore_index: int) -> torch.dtype:
    """The narrowest integer dtype holding every mask value (0..K-1 and ``ignore_index``): masks travel to
    the device in it (uint8 for up to 255 classes with ignore 255: an eighth of int64's bytes) and are
    widened to int64 there."""
    low, high = min(0, ignore_index), max(num_classes - 1, ignore_index)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    return torch.int64


def _narrow(mask: torch.Tensor, dtype: torch.dtype, name: Any) -> torch.Tensor:
    """``mask`` in ``dtype``, refusing a value that would not survive the cast (never wrap a label)."""
    if mask.dtype == dtype or mask.numel() == 0:
        return mask
    info = torch.iinfo(dtype)
    low, high = torch.aminmax(mask)  # on the CPU, in a loader worker
    if low < info.min or high > info.max:
        raise ValueError(
            f"{name}: mask value {int(high) if high > info.max else int(low)} is outside {dtype}"
        )
    return mask.to(dtype)


def collate_samples(items: list[dict[str, Any]], mask_dtype: torch.dtype = torch.int64) -> dict[str, Any]:
    """Stack the samples into a batch, masks in ``mask_dtype`` (see :func:`mask_wire_dtype`); ``orig_mask``
    and ``orig_image`` (each at its stored size, sizes differ) stay lists of tensors."""
    for item in items:
        for key in ("mask", "orig_mask"):
            if key in item:
                item[key] = _narrow(item[key], mask_dtype, item.get("name", key))
    originals = {key: [item.pop(key) for item in items] for key in ORIGINALS if key in items[0]}
    batch = default_collate(items)
    batch.update(originals)
    return batch


SAMPLE_ID_SEPARATOR = "\t"
"""Between a sample's name and its fingerprint in :meth:`SegDataModule.sample_ids` (never in a file name)."""


def sample_id(name: str, fingerprint: int | str | None = None) -> str:
    """A sample's id: its ``name`` (a path relative to its dataset), and what tells two files of that name
    apart (the image file's size), when known."""
    return name if fingerprint is None else f"{name}{SAMPLE_ID_SEPARATOR}{fingerprint}"


class SegDataModule(L.LightningDataModule):
    """Base class of every dataset module.

    Subclasses set ``class_names`` (and ``ignore_index`` if it is not 255) and implement
    :meth:`build_dataset`; optionally :meth:`default_train_augmentations`.

    Args:
        batch_size: samples per batch (every split).
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory; None means "when CUDA is available".
        persistent_workers: keep workers alive between epochs (only when ``num_workers > 0``).
        train_augmentations: Kornia augmentation modules for training batches, applied on the device;
            None takes the dataset's default, ``[]`` turns augmentation off.
        eval_augmentations: Kornia modules for val/test/predict batches (usually none).
        mean: per-channel normalisation mean in [0, 1] units; None means ImageNet's.
        std: per-channel normalisation std; None means ImageNet's.
        max_ignored_fraction: setup refuses a train, val or test split whose masks are more than this
            share ``ignore_index`` (a sign of misread masks, e.g. 0/255 binary masks read as indices);
            raise it (up to 1.0) for sparse annotations such as scribbles.
        allow_absent_classes: setup refuses a class with no pixel in the training masks (a net cannot
            learn it, and it usually means misread masks); True trains without it. With this True and
            ``max_ignored_fraction`` 1.0 setup skips the statistics pass altogether.
        score_at_original_size: the evaluation splits whose metrics are computed against each mask as
            stored (its own size), from probabilities resized back to it, instead of against the mask
            resized for batching. Always "test" (what ``predict`` writes is what ``test`` scores); add
            "val" to validate inside ``fit`` that way too (slower: the masks travel as a list).
        balanced_labels: draw the training order with probability ∝ 1 / the frequency of each sample's
            image label (with replacement, the same epoch length; deterministic from the seed and epoch,
            resumable): the data's labels, or without them each image's rarest present mask class (one
            pass over the training masks at setup), so rare image classes are seen as often as common ones.
    """

    class_names: tuple[str, ...] = ()
    ignore_index: int = 255
    # image-level classes (e.g. MSD's None/Scratch/Stain/Oil); empty: a net's class head predicts labels
    # derived from the mask by the module (the classes present, or the dominant one; model.label_mode)
    label_names: tuple[str, ...] = ()
    # the mask class each image-level label says is present (None: none), for post-processing that checks a
    # class map against the labels; empty: a label names the class of the same name
    label_classes: tuple[str | None, ...] = ()
    # whether evaluation samples also carry ``orig_image``, the image as stored: set before setup by whoever
    # runs a model whose post-processing reads the image (a dense CRF; the CLI does it from the model's chain)
    keep_original_images: bool = False

    def __init__(
        self,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_augmentations: list[nn.Module] | None = None,
        eval_augmentations: list[nn.Module] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_ignored_fraction: float = 0.5,
        allow_absent_classes: bool = False,
        score_at_original_size: Sequence[Literal["val", "test"]] = ("test",),
        balanced_labels: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
        if not 0 <= max_ignored_fraction <= 1:
            raise ConfigError(f"data.max_ignored_fraction must be in [0, 1], got {max_ignored_fraction}")
        self.max_ignored_fraction = max_ignored_fraction
        unknown = sorted(set(score_at_original_size) - {"val", "test"})
        if unknown:
            raise ConfigError(f"data.score_at_original_size: {unknown} are not evaluation splits (val, test)")
        if not score_at_original_size:
            raise ConfigError(
                "data.score_at_original_size: test always scores at the original size (what predict writes); "
                "use [test] or [val, test]"
            )
        # [val] asks for val: test scores at the original size whatever the list says
        self.score_at_original_size = tuple(dict.fromkeys([*score_at_original_size, "test"]))
        self.allow_absent_classes = allow_absent_classes
        self.balanced_labels = balanced_labels
        self._balance_weights: torch.Tensor | None = None  # per training sample, computed once
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self._train_augmentations = train_augmentations
        self._eval_augmentations = eval_augmentations or []
        self.mean = tuple(mean) if mean is not None else IMAGENET_MEAN
        self.std = tuple(std) if std is not None else IMAGENET_STD
        self.datasets: dict[str, Dataset] = {}
        # a plain dict: the pipelines hold no parameters and follow the batch's device
        self._augmenters: dict[str, SegAugmentation] | None = None
        # mean and std as B×C×H×W-broadcastable tensors per (device, dtype): made once, not per batch
        # (on CUDA each torch.tensor(...) would be a blocking host-to-device copy)
        self._norm_tensors: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        # the seed this module gave the global generator for its DDP rank (see _decorrelate_ranks)
        self._rank_seed: int | None = None
        # the training order's seed (the same on every rank) and where a resumed run starts: (epoch, batch)
        self._shuffle_seed: int | None = None
        self._resume_position: tuple[int, int] | None = None
        # the split a command evaluates through the test (or validation) loop, see evaluate()
        self._evaluated: str | None = None

    # ----------------------------------------------------------------------------------------- classes
    @property
    def num_classes(self) -> int:
        """Number of classes the net predicts, background included."""
        return len(self.class_names)

    def check_classes(self) -> None:
        """Fail early with one line when the class list cannot make a segmentation task."""
        if self.num_classes < 2:
            raise ConfigError(
                f"{type(self).__name__}: num_classes must be >= 2 (background + one class), got {self.num_classes}"
            )
        if 0 <= self.ignore_index < self.num_classes:
            raise ConfigError(
                f"{type(self).__name__}: ignore_index {self.ignore_index} collides with a class index "
                f"(num_classes={self.num_classes})"
            )

    def keep_original_image_of_evaluation_splits(self) -> None:
        """Deprecated: set ``keep_original_images = True`` before setup (the CLI does, for a chain that reads
        the image). Kept for scripts written before; datasets built already follow."""
        warnings.warn(
            "keep_original_image_of_evaluation_splits() is deprecated: set datamodule.keep_original_images = "
            "True before the trainer runs",
            FutureWarning,
            stacklevel=2,
        )
        self.keep_original_images = True
        self._follow_keep_flags()

    @property
    def eval_augmentations(self) -> list[nn.Module]:
        """The Kornia modules applied to val/test/predict batches (usually none)."""
        return list(self._eval_augmentations)

    def keeps_original_mask(self, split: str) -> bool:
        """Whether ``split``'s samples carry their mask as stored (``orig_mask``: scored at the original
        size): the splits of ``score_at_original_size``, and the split a command evaluates (:meth:`evaluate`)."""
        return split in self.score_at_original_size or (split == self._evaluated and split != "predict")

    @contextlib.contextmanager
    def evaluate(self, split: Literal["val", "test", "predict"]) -> Iterator[None]:
        """For one command's pass over ``split`` (``tune`` through the validation loop, ``attack`` through the
        test loop): ``split`` is scored at each mask's stored size, and ``setup("test")`` and
        ``test_dataloader()`` serve it. Datasets built already follow; all is as before after the block.

        What a command asks of the data, said here before setup, instead of reconfiguring the module."""
        if split not in ("val", "test", "predict"):
            raise ConfigError(f"{type(self).__name__}.evaluate: {split!r} is not an evaluation split")
        previous, self._evaluated = self._evaluated, split
        self._follow_keep_flags()
        try:
            yield
        finally:
            self._evaluated = previous
            self._follow_keep_flags()

    def _follow_keep_flags(self) -> None:
        """Datasets built already carry the originals that :meth:`keeps_original_mask` and
        ``keep_original_images`` now ask for."""
        for split, dataset in self.datasets.items():
            if hasattr(dataset, "keep_original_mask"):
                dataset.keep_original_mask = self.keeps_original_mask(split)
            if hasattr(dataset, "keep_original_image"):
                dataset.keep_original_image = self.keep_original_images and split != "train"

    def sample_ids(self, split: str) -> list[str] | None:
        """Names that identify ``split``'s samples across runs (a file's path relative to the dataset, never an
        absolute one: a moved dataset keeps its names), found without decoding anything; None where they
        cannot be listed cheaply. A checkpoint records its training split's names, and an evaluation that
        would score one of them is refused (:mod:`lightning_seg.checkpoints.splits`)."""
        return None

    # ---------------------------------------------------------------------------------------- datasets
    def build_dataset(self, split: str) -> Dataset:
        """Return the CPU-side dataset of ``split`` ("train", "val", "test" or "predict")."""
        raise NotImplementedError

    def default_train_augmentations(self) -> list[nn.Module]:
        """The training pipeline used when the config gives none."""
        return natural_image_augmentations()

    def test_is_val(self) -> bool:
        """Whether the test split is the val split (VOC and COCO, VOC-Kaggle without ``test_fraction``): a
        test there scores the images the checkpoint (and any tuned threshold) was chosen on."""
        test, val = self.sample_ids("test"), self.sample_ids("val")
        return bool(test) and test == val

    @property
    def validates(self) -> bool:
        """Whether ``fit`` validates (False: a module configured to train without a val split, which the CLI
        then runs with checkpoints by epoch and no monitor)."""
        return True

    def setup(self, stage: str) -> None:
        self.check_classes()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}[
            stage
        ]
        if not self.validates:
            if stage == "validate":
                raise ConfigError(
                    f"{type(self).__name__}: this config trains without a val split (data.refit, or "
                    "val_fraction 0 without a val list): there is nothing to validate on"
                )
            needed = tuple(split for split in needed if split != "val")
        if stage == "test" and self._evaluated is not None:
            needed = (self._evaluated,)  # a command's pass over another split through the test loop
        self._follow_keep_flags()
        for split in needed:
            if split not in self.datasets:
                dataset = self.build_dataset(split)
                if len(dataset) == 0:
                    raise ConfigError(f"{type(self).__name__}: the {split} split is empty")
                self.datasets[split] = dataset
                if split != "predict":
                    self.check_labels(split)
        if stage == "fit":
            if self._shuffle_seed is None:
                self._shuffle_seed = self._shared_seed()
            self._decorrelate_ranks()

    def check_labels(self, split: str) -> None:
        """Refuse masks that would train or score nothing, from the split's class statistics (one cached
        pass): mostly ``ignore_index`` (every split), or a class without a pixel (training only).

        Masks can be read wrongly without any single file looking bad: 0/255 binary masks read as class
        indices make every foreground pixel 255, i.e. ignored, and the run then reports mIoU 1.0.
        """
        if self.max_ignored_fraction >= 1 and (split != "train" or self.allow_absent_classes):
            return  # nothing to check: spare the pass over the masks (COCO's is minutes the first time)
        stats = self.class_statistics(split)
        name, labelled = type(self).__name__, int(stats.pixel_counts.sum())
        ignored = stats.ignored_pixels / max(labelled + stats.ignored_pixels, 1)
        if labelled == 0:
            raise ConfigError(
                f"{name}: every {split} mask pixel is ignore_index {self.ignore_index}"
                f"{self.mask_reading_hint(stats)}; check how the masks are read"
            )
        if ignored > self.max_ignored_fraction:
            raise ConfigError(
                f"{name}: {ignored:.0%} of the {split} mask pixels are ignore_index {self.ignore_index}"
                f"{self.mask_reading_hint(stats)}; for sparse labels on purpose raise data.max_ignored_fraction"
            )
        absent = [i for i, count in enumerate(stats.pixel_counts.tolist()) if count == 0]
        if split == "train" and absent and not self.allow_absent_classes:
            classes = ", ".join(f"{self.class_names[i]!r} ({i})" for i in absent[:5])
            raise ConfigError(
                f"{name}: class {classes} has no pixel in the {stats.num_images} training masks"
                f"{self.mask_reading_hint(stats)}; set data.allow_absent_classes: true to train without it"
            )

    def mask_reading_hint(self, stats: ClassStatistics) -> str:
        """Appended to :meth:`check_labels` errors: the likely misreading of this dataset's masks, judged
        from the split's statistics ("" when none is likely)."""
        return ""

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _shared_seed(self) -> int:
        """The run's seed (``seed_everything``'s), else rank 0's initial seed given to every rank."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed())) % 2**31
        trainer = self.trainer
        return int(trainer.strategy.broadcast(seed)) if trainer is not None else seed

    # ----------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the training order's seed and how far the current epoch got.

        Read from Lightning's own progress counters at the moment of the save, not counted by the loader:
        Lightning fetches one batch ahead, so the loader has always yielded one more than was trained on.
        """
        trainer = self.trainer
        if trainer is None or self._shuffle_seed is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress
        epoch, done = trainer.current_epoch, progress.current.processed
        if progress.is_last_batch or done >= trainer.num_training_batches:
            # the epoch's batches are all done: a resume starts the next epoch (with workers the loader
            # reads its sampler as soon as Lightning creates the iterator, before it calls set_epoch)
            epoch, done = epoch + 1, 0
        return {"shuffle_seed": self._shuffle_seed, "epoch": epoch, "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "shuffle_seed" not in state_dict:
            return  # a checkpoint written before the order was resumable
        self._shuffle_seed = int(state_dict["shuffle_seed"])
        self._resume_position = (int(state_dict["epoch"]), int(state_dict["batches_done"]))
        # Lightning warns that a loader without state_dict() cannot resume mid-epoch; this one's position is
        # restored here, from the data module's state, so the warning would be wrong
        warnings.filterwarnings(
            "ignore", message=r"You're resuming from a checkpoint that ended before the epoch"
        )

    def _decorrelate_ranks(self) -> None:
        """Give each DDP rank its own global RNG stream.

        Kornia draws augmentation parameters (flips, crops, angles, jitter) from torch's global generator,
        and ``seed_everything`` seeds it identically on every rank: every GPU would apply the same flips and
        crops to its batch, so the effective augmentation would be one draw per step, not one per sample.
        Offsetting the seed by the global rank fixes that. It is safe here: the model is already built, and
        DDP broadcasts rank 0's weights to every rank when it wraps the model.
        """
        world_size, rank = self._world()
        if world_size <= 1 or torch.initial_seed() == self._rank_seed:
            return  # single process, or already done for the current seed (setup("fit") called again)
        self._rank_seed = (torch.initial_seed() + rank) % 2**64
        torch.manual_seed(self._rank_seed)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        sampler = None
        world_size, rank = self._world()
        # a generator of its own: without one, creating each epoch's iterator draws the workers' base seed
        # from the global generator, shifting every augmentation draw after it
        generator = torch.Generator().manual_seed(0)
        if split == "train":
            sampler = EpochSampler(
                self.datasets[split],
                num_replicas=world_size,
                rank=rank,
                shuffle=shuffle,
                seed=self._shuffle_seed if self._shuffle_seed is not None else self._shared_seed(),
                batch_size=self.batch_size,
                weights=self.balance_weights() if self.balanced_labels and shuffle else None,
            )
            if self._resume_position is not None:
                sampler.resume_at(*self._resume_position)
                self._resume_position = None
            generator = sampler.worker_generator
        elif split in ("val", "test") and 1 < world_size <= len(self.datasets[split]):
            # each sample evaluated exactly once: Lightning's default DistributedSampler pads the split with
            # repeated samples so that ranks get equal counts, which biases the metrics. Lightning leaves a
            # DataLoader that already has a DistributedSampler alone. Ranks may run one batch apart; that is
            # safe in evaluation (no gradient sync) as long as every rank gets a sample, hence the size
            # condition (a split smaller than the world keeps Lightning's padding sampler).
            sampler = UnrepeatedDistributedSampler(
                self.datasets[split], num_replicas=world_size, rank=rank, shuffle=False
            )
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            # a ragged last batch would recompile/retune kernels and skews BatchNorm; keep it out of training
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=generator,
            collate_fn=functools.partial(
                collate_samples, mask_dtype=mask_wire_dtype(self.num_classes, self.ignore_index)
            ),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        # during a command's pass over another split (evaluate), that split through the test loop
        return self._loader(self._evaluated or "test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

    # ------------------------------------------------------------------------------------ statistics
    def class_statistics(self, split: str = "train") -> ClassStatistics:
        """Pixel counts per class over ``split``'s masks (one cached pass; see ``lightning_seg.data.stats``)."""
        from lightning_seg.data.stats import class_statistics

        self.check_classes()
        dataset = self.datasets.get(split)
        if dataset is None:
            dataset = self.build_dataset(split)
        return class_statistics(dataset, self.num_classes, self.ignore_index, num_workers=self.num_workers)

    def class_frequencies(self, split: str = "train") -> torch.Tensor:
        """float64 (num_classes,): each class's share of the labelled pixels of ``split``."""
        return self.class_statistics(split).frequencies()

    def class_weights(
        self, rule: str = "median_frequency", split: str = "train", beta: float | None = None
    ) -> torch.Tensor:
        """float32 (num_classes,) loss weights by a rule of :meth:`ClassStatistics.weights` ("inverse_frequency",
        "median_frequency", "enet", "effective_number" with ``beta``)."""
        statistics = self.class_statistics(split)
        return statistics.weights(rule, beta) if beta is not None else statistics.weights(rule)

    def sample_labels(self, split: str = "train") -> torch.Tensor | None:
        """int64 (N,): each sample's image-level label (``label_names`` index, -100 where a sample has
        none); None when the data has no image labels. Read from the dataset's ``samples`` (file-based
        datasets) without decoding anything, else from its items."""
        if not self.label_names:
            return None
        dataset = self.datasets.get(split)
        if dataset is None:
            dataset = self.build_dataset(split)
        samples = getattr(dataset, "samples", None)
        if samples is not None and all(hasattr(sample, "label") for sample in samples):
            labels = [sample.label for sample in samples]
        else:
            labels = [dataset[i].get("label") for i in range(len(dataset))]
        return torch.tensor([-100 if label is None else int(label) for label in labels], dtype=torch.int64)

    def balance_weights(self, split: str = "train") -> torch.Tensor:
        """float64 (N,) sampling weights of ``data.balanced_labels`` (computed once): ∝ 1 / the frequency
        of each sample's image label, or without data labels of its rarest present mask class."""
        if self._balance_weights is None:
            from lightning_seg.data.label_sampling import balancing_weights, rarest_present_class
            from lightning_seg.data.stats import image_presence

            groups = self.sample_labels(split)
            if groups is None:
                dataset = self.datasets[split] if split in self.datasets else self.build_dataset(split)
                presence = image_presence(dataset, self.num_classes, self.ignore_index, self.num_workers)
                groups = rarest_present_class(presence)
            self._balance_weights = balancing_weights(groups)
        return self._balance_weights

    # ------------------------------------------------------------------------------- device-side work
    @property
    def augmenters(self) -> dict[str, SegAugmentation]:
        """One Kornia pipeline for training batches, one for evaluation batches (built on first use)."""
        if self._augmenters is None:
            train = self._train_augmentations
            if train is None:
                train = self.default_train_augmentations()
            self._augmenters = {
                "train": SegAugmentation(train, self.ignore_index),
                "eval": SegAugmentation(self._eval_augmentations, self.ignore_index),
            }
        return self._augmenters

    def _mean_std(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as 1×C×1×1 tensors on ``image``'s device and dtype (cached)."""
        key = (image.device, image.dtype)
        tensors = self._norm_tensors.get(key)
        if tensors is None:
            tensors = tuple(
                torch.tensor(values, device=image.device, dtype=image.dtype).view(1, -1, 1, 1)
                for values in (self.mean, self.std)
            )
            self._norm_tensors[key] = tensors
        return tensors

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """float B×3×H×W in [0, 1] → normalised float B×3×H×W."""
        mean, std = self._mean_std(image)
        return (image - mean) / std

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, clamped to [0, 1] (for plots)."""
        mean, std = self._mean_std(image)
        return (image * std + mean).clamp(0, 1)

    def prepare_batch(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        """Batch on the device (uint8 images, masks in :func:`mask_wire_dtype`) → augmented, normalised
        float32 images and int64 masks (``orig_mask`` stays narrow; its readers widen it)."""
        image = batch["image"].to(torch.float32).div_(255)
        mask = batch.get("mask")
        augmenter = self.augmenters["train" if train else "eval"]
        image, mask = augmenter(image, mask.long() if mask is not None else None)
        batch["image"] = self.normalize(image).contiguous()
        if mask is not None:
            batch["mask"] = mask
        return batch

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        trainer = self.trainer
        batch = self.prepare_batch(batch, train=trainer is not None and trainer.training)
        if trainer is not None:
            # the precision plugin's own input conversion (bf16-true, 16-true, 64-true): Lightning applies
            # it before the transfer, when the image is still uint8, so it is applied again to the float
            # image made here (mixed precision leaves it float32; autocast casts inside the net)
            batch = trainer.precision_plugin.convert_input(batch)
        return batch
