"""``OutOfFoldWriter``: each validation image's class probabilities, written to a folder during ``validate``.

``cv`` attaches it to the ``validate`` pass that scores each fold's best checkpoint on its validation fold,
so that every training image gets probabilities from a model that never saw it (the out-of-fold
predictions ``tune --oof`` calibrates on). Per image ``<folder>/<name>.npz`` holds

* ``probabilities``: uint8 K×H×W, ``round(255 · p)``, from the model's own inference path (its windows and
  TTA, before any post-processing), resized to the mask's stored size: p is within 1/510 of the float;
* ``mask``: the mask as stored, H×W, in the narrowest integer type that holds every class and the ignore
  index (:func:`~lightning_seg.data.base.mask_wire_dtype`).

``<folder>/index.json`` is written at the end
(the classes, ignore index, the checkpoint and its SHA-256, every file's name): a folder without it is
incomplete (an interrupted pass), and ``cv`` runs the pass again; readers read exactly the files it lists.
One process only: ``cv`` validates on one device.

The probabilities are computed by a second plain forward pass of each batch (``validate``'s step returns
nothing to read): written by hand because no Lightning writer covers validation, and cheap beside training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from typing_extensions import override

from lightning_seg.data.base import mask_wire_dtype
from lightning_seg.errors import ConfigError
from lightning_seg.postprocess.thresholds import file_digest
from lightning_seg.task.evaluation import EvaluationPath
from lightning_seg.utils.atomic import atomic_write

OOF_FORMAT = "lightning_seg.oof/1"
INDEX = "index.json"


class OutOfFoldWriter(L.Callback):
    """Write each validation image's probabilities and mask into ``folder`` (see the module's docstring).

    Args:
        folder: where the files go (created; files of an earlier pass are replaced).
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.files: list[str] = []
        self.written: set[str] = set()

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "evaluation"):
            raise ConfigError("OutOfFoldWriter needs lightning_seg's SegmentationModule as the model")
        if trainer.world_size > 1:
            raise ConfigError(
                f"OutOfFoldWriter writes from one process; this validate runs {trainer.world_size} "
                "(--trainer.devices=1)"
            )
        # incomplete until this pass ends; files of an earlier pass may stay (overwritten or, never listed in
        # this pass's index, never read)
        (self.folder / INDEX).unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files = []
        self.written = set()

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking:
            return
        module: Any = pl_module
        probabilities = module.evaluation.probabilities(module.mask_logits, batch["image"])
        truths = EvaluationPath.truths(batch)
        names = batch.get("name") or [f"{batch_idx:05d}_{i:03d}" for i in range(len(truths))]
        dtype = mask_wire_dtype(module.num_classes, module.ignore_index)
        for name, item, truth in zip(names, probabilities, truths, strict=True):
            resized = module.inference.at_size(item, truth.shape[-2:])
            quantised = (resized.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            file = f"{name}.npz"
            target = self.folder / file
            if file in self.written:
                raise ConfigError(f"OutOfFoldWriter: two validation images are named {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(target, probabilities=quantised, mask=truth.to(dtype).cpu().numpy())
            self.files.append(file)
            self.written.add(file)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module: Any = pl_module
        checkpoint = Path(trainer.ckpt_path).resolve() if trainer.ckpt_path else None
        index = {
            "format": OOF_FORMAT,
            "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            "checkpoint_sha256": file_digest(checkpoint) if checkpoint is not None else None,
            "images": len(self.files),
            "class_names": list(module.class_names),
            "ignore_index": module.ignore_index,
            "inference": module.inference.describe(),
            # a one-channel (sigmoid) head's probabilities are stored as [1 - p, p]
            "binary_head": bool(module.evaluation.binary_head),
            "probabilities": "uint8 K×H×W, round(255 p), at each mask's stored size",
            "files": self.files,
        }
        atomic_write(self.folder / INDEX, json.dumps(index, indent=2) + "\n")


def read_out_of_fold(folder: Path) -> tuple[dict[str, Any], list[Path]]:
    """A complete out-of-fold folder's index and the files it lists; ConfigError in one line when the
    folder has no index (never written, or an interrupted pass) or a listed file is missing."""
    index_file = folder / INDEX
    if not index_file.is_file():
        raise ConfigError(
            f"{folder}: no out-of-fold probabilities ({INDEX} missing: the pass did not finish); run the cv "
            "command again"
        )
    index = json.loads(index_file.read_text())
    if index.get("format") != OOF_FORMAT:
        raise ConfigError(f"{index_file}: format {index.get('format')!r}, expected {OOF_FORMAT!r}")
    files = [folder / name for name in index.get("files") or []]
    missing = [file for file in files if not file.is_file()]
    if missing or len(files) != index.get("images"):
        raise ConfigError(
            f"{folder}: {len(missing)} of the {len(files)} files its {INDEX} lists are missing; run the cv "
            "command again"
        )
    return index, files


def load_out_of_fold(file: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's float32 K×H×W probabilities (q / 255) and int64 H×W mask."""
    with np.load(file) as stored:
        probabilities = torch.from_numpy(stored["probabilities"]).float() / 255
        mask = torch.from_numpy(stored["mask"].astype(np.int64))
    return probabilities, mask
