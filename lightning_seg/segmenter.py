"""``Segmenter``: a trained model in one call, for notebooks and scripts.

::

    import lightning_seg
    model = lightning_seg.load("runs/default/version_0/checkpoints/last.ckpt")
    result = model.predict("street.png")              # one Segmentation
    results = model.predict("photos/", probabilities=True)   # one per image of the folder
    result.classes                                     # uint8 H×W class map at the image's own size

The images go the way ``predict`` takes them, step by step the same code: decoded with
:func:`~lightning_seg.data.io.read_image`, resized for batching as the training data was
(:func:`~lightning_seg.data.transforms.resize_sample`), prepared by the data module's own
``prepare_batch`` (scaling, evaluation augmentations, normalisation), then the model's ``predict_step``:
its inference (windows, TTA), probabilities resized back to each image's size, its post-processing chain
(tuned thresholds included). So ``Segmenter.predict`` writes what ``python -m lightning_seg predict``
writes, pixel for pixel (tests/checkpoints/test_standalone.py checks it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_seg.checkpoints.load import load_module
from lightning_seg.cli.records import record_from_config
from lightning_seg.data.base import SegDataModule
from lightning_seg.data.io import IMAGE_EXTENSIONS, read_image
from lightning_seg.data.transforms import resize_sample
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.task.module import SegmentationModule

ImageInput = str | Path | torch.Tensor


@dataclasses.dataclass
class Segmentation:
    """One image's prediction, on the CPU.

    Attributes:
        name: the file's stem (relative to the folder given), or the tensor's index ``00000``.
        classes: uint8 H×W class map at the image's own size (int64 with more than 256 classes).
        probabilities: float32 K×H×W what the decision read (after a CRF), when asked for (a one-channel
            sigmoid head: 1×H×W, the foreground's).
        label_probabilities: float32 (L,) image-level label probabilities of a net with a class head.
        labels: the label names the head decides present (its tuned thresholds when loaded).
    """

    name: str
    classes: torch.Tensor
    probabilities: torch.Tensor | None = None
    label_probabilities: torch.Tensor | None = None
    labels: list[str] | None = None


class Segmenter:
    """A model rebuilt from a checkpoint, ready to predict (see the module's docstring).

    Args:
        module: the model, weights loaded.
        record: its checkpoint's record (:mod:`lightning_seg.checkpoints.record`): how images are made batchable.
        device: where it runs; None: CUDA when available.
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        module: SegmentationModule,
        record: dict[str, Any],
        device: str | torch.device | None = None,
        batch_size: int = 8,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.to(self.device).eval()
        spec = record.get("input") or {}
        self.size = tuple(spec["size"]) if spec.get("size") is not None else None
        self.image_value_range = spec.get("image_value_range")
        self.batch_size = batch_size
        # the data module's own batch preparation (scaling, evaluation augmentations, normalisation)
        self.data = SegDataModule(
            mean=module.mean,
            std=module.std,
            eval_augmentations=_build_augmentations(spec.get("eval_augmentations")),
        )
        self.data.ignore_index = module.ignore_index

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        device: str | torch.device | None = None,
        config: str | Path | None = None,
        weights_only: bool = True,
        batch_size: int = 8,
    ) -> Segmenter:
        """Rebuild the model of ``checkpoint`` (from the record it carries; ``config``: the run's
        config.yaml for a checkpoint older than that record), load its weights and its tuned thresholds
        (beside it or carried by it). Raises ConfigError in one line for a file that is no checkpoint of
        this project."""
        record = record_from_config(config) if config is not None else None
        module, record = load_module(checkpoint, record=record, weights_only=weights_only)
        if not isinstance(module, SegmentationModule):
            raise ConfigError(
                f"{checkpoint}: a {type(module).__name__} predicts image labels, not masks; load it with "
                f"lightning_seg.checkpoints.load.load_module, or run predict with its config"
            )
        module.load_postprocess(str(checkpoint))
        return cls(module, record, device, batch_size)

    @property
    def class_names(self) -> list[str]:
        return list(self.module.class_names)

    def predict(
        self, images: ImageInput | Sequence[ImageInput], probabilities: bool = False
    ) -> Segmentation | list[Segmentation]:
        """Class maps at each image's own size.

        Args:
            images: an image file, a folder (every image in it, recursively, sorted), a uint8 (or float in
                [0, 1]) 3×H×W tensor, a B×3×H×W tensor, or a list of files and 3×H×W tensors.
            probabilities: also return each image's float32 K×H×W probabilities.

        Returns:
            one :class:`Segmentation` for one file or one 3×H×W tensor, else a list in input order.
        """
        named, single = _collect(images, self.image_value_range)
        results: list[Segmentation] = []
        previous = self.module.predict_probabilities
        self.module.predict_probabilities = probabilities
        try:
            with torch.inference_mode():
                for index, batch in enumerate(self._batches(named)):
                    results.extend(self._unpack(self.module.predict_step(batch, index)))
        finally:
            self.module.predict_probabilities = previous
            self.module.postprocess.close()
        return results[0] if single else results

    def _batches(self, named: list[tuple[str, torch.Tensor]]) -> Iterator[dict[str, Any]]:
        """Batches as the data loader and ``on_after_batch_transfer`` give them to ``predict_step``:
        consecutive images of the same batchable size, at most ``batch_size``."""
        group: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for name, image in named:
            resized, _ = resize_sample(image, None, self.size)
            if group and (len(group) == self.batch_size or group[0][1].shape != resized.shape):
                yield self._batch(group)
                group = []
            group.append((name, resized, image))
        if group:
            yield self._batch(group)

    def _batch(self, group: list[tuple[str, torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "image": torch.stack([resized for _, resized, _ in group]).to(self.device),
            "name": [name for name, _, _ in group],
            "orig_size": torch.tensor([list(original.shape[-2:]) for _, _, original in group]),
        }
        if self.module.postprocess.needs_image:  # a CRF reads each image as stored
            batch["orig_image"] = [original.to(self.device) for _, _, original in group]
        return self.data.prepare_batch(batch, train=False)

    def _unpack(self, out: dict[str, Any]) -> list[Segmentation]:
        results = []
        for i, (name, mask) in enumerate(zip(out["name"], out["mask"], strict=True)):
            result = Segmentation(name=str(name), classes=mask.cpu())
            if "probability" in out:
                result.probabilities = out["probability"][i].cpu()
            if "label_probability" in out:
                result.label_probabilities = out["label_probability"][i].cpu()
                decided = out["label_decision"][i].cpu().tolist()
                result.labels = [n for n, d in zip(self.module.label_names, decided, strict=True) if d]
            results.append(result)
        return results


load = Segmenter.load
"""A trained model in one call: ``lightning_seg.load(path).predict(images)`` (see :meth:`Segmenter.load`)."""


def _collect(
    images: ImageInput | Sequence[ImageInput], value_range: Sequence[float] | None
) -> tuple[list[tuple[str, torch.Tensor]], bool]:
    """(name, uint8 3×H×W) pairs of the input, and whether it was one image."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return [(f"{i:05d}", _as_uint8(image, f"images[{i}]")) for i, image in enumerate(images)], False
    if isinstance(images, str | Path):
        path = Path(images)
        if path.is_dir():
            from lightning_seg.data.files import find_files

            found = find_files(path, IMAGE_EXTENSIONS)
            if not found:
                raise ConfigError(f"{short_path(str(path))}: no images ({', '.join(IMAGE_EXTENSIONS)})")
            return [(name, _read(file, value_range)) for name, file in found.items()], False
        return [(path.stem, _read(path, value_range))], True
    if isinstance(images, torch.Tensor):
        return [("00000", _as_uint8(images, "image"))], True
    named = []
    for i, item in enumerate(images):
        if isinstance(item, torch.Tensor):
            named.append((f"{i:05d}", _as_uint8(item, f"images[{i}]")))
        else:
            named.append((Path(item).stem, _read(Path(item), value_range)))
    return named, False


def _read(path: Path, value_range: Sequence[float] | None) -> torch.Tensor:
    return read_image(path, tuple(value_range) if value_range is not None else None)


def _as_uint8(image: torch.Tensor, where: str) -> torch.Tensor:
    """A uint8 3×H×W image from a tensor: uint8 as is, float in [0, 1] scaled to 0..255 and rounded (the
    data path reads 8-bit images), one channel repeated; anything else refused in one line."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ConfigError(
            f"{where}: expected a 3×H×W (or 1×H×W) image tensor, got shape {tuple(image.shape)}"
        )
    if image.dtype != torch.uint8:
        if not image.is_floating_point():
            raise ConfigError(f"{where}: {image.dtype} image; give uint8 (0..255) or float in [0, 1]")
        low, high = float(image.min()), float(image.max())
        if bool(image.isnan().any()):
            raise ConfigError(f"{where}: float image holds NaN values")
        if low < 0 or high > 1:
            raise ConfigError(
                f"{where}: float image with values in [{low:g}, {high:g}]; give uint8 (0..255) or float in "
                "[0, 1] (not normalised: the model normalises itself)"
            )
        image = (image * 255).round().to(torch.uint8)
    return image.expand(3, -1, -1).contiguous().cpu()


def _build_augmentations(config: list[Any] | None) -> list[nn.Module] | None:
    """The data's evaluation augmentations rebuilt from their config (class_path/init_args)."""
    if not config:
        return None
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--eval_augmentations", type=list[nn.Module])
    parsed = parser.parse_object({"eval_augmentations": config})
    return parser.instantiate_classes(parsed).eval_augmentations
