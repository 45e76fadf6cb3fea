"""``UncertaintyWriter``: where ``predict`` is unsure, per pixel and per image (``predict --uncertainty
entropy``).

For each predicted image, the normalised entropy of its final probabilities (what the decision read, at the
image's original size), ``H = −Σ_c p_c log p_c / log K`` in [0, 1] (0: one class certain, 1: all equally
likely), written as ``<name>_uncertainty.png`` (8-bit, 255 = 1) beside the masks, and one row per image in
``uncertainty.csv``: the mean entropy, and the share of pixels above 0.5 (the unsure area). A one-channel
head's ``[1 − p, p]`` has K = 2.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torchvision.io import write_png

from lightning_seg.runs.log_dir import run_directory

UncertaintyKind = Literal["entropy"]
UNSURE = 0.5
"""Normalised entropy above which a pixel counts as unsure in the CSV."""


def normalised_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """float32 H×W entropy in [0, 1] of float K×H×W probabilities (K ≥ 2; one channel: a sigmoid's p)."""
    p = probabilities.float()
    if p.shape[0] == 1:
        p = torch.cat([1 - p, p])
    entropy = -(p * p.clamp_min(1e-12).log()).sum(0)
    return (entropy / torch.log(torch.tensor(float(p.shape[0])))).clamp_(0, 1)


class UncertaintyWriter(BasePredictionWriter):
    """Writes each predicted image's uncertainty map and its row (see the module docstring). The CLI adds it
    for ``predict --uncertainty entropy`` (with the model's ``predict_probabilities`` on), into the folder the
    masks go to.

    Args:
        kind: "entropy".
    """

    def __init__(self, kind: UncertaintyKind = "entropy") -> None:
        super().__init__(write_interval="batch")
        self.kind = kind
        self.folder: Path | None = None
        self.rows: list[tuple[str, float, float]] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder = run_directory(trainer) / "predictions"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        assert self.folder is not None
        for name, probabilities in zip(prediction["name"], prediction["probability"], strict=True):
            entropy = normalised_entropy(probabilities)
            picture = (entropy * 255).round().to(torch.uint8).cpu()[None]
            write_png(picture, str(self.folder / f"{name}_uncertainty.png"))
            # one host read per image, for its CSV row
            mean, unsure = torch.stack([entropy.mean(), (entropy > UNSURE).float().mean()]).tolist()
            self.rows.append((str(name), mean, unsure))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.folder is None:
            return
        suffix = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        with (self.folder / f"uncertainty{suffix}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", f"mean_{self.kind}", f"share_above_{UNSURE}"])
            writer.writerows((name, f"{mean:.6f}", f"{unsure:.6f}") for name, mean, unsure in self.rows)
