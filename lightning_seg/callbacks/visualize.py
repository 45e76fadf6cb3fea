"""``SampleOverlays``: image | target | prediction of a few validation images, each validation epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid

from lightning_seg.callbacks.summary import run_directory
from lightning_seg.callbacks.writer import colourize, default_palette
from lightning_seg.data.workers import save_png


class SampleOverlays(L.Callback):
    """Log a grid of the first validation batch's images, targets and predictions.

    Rows: images (denormalised), targets, predictions; ignored target pixels are drawn white. The grid goes
    to TensorBoard (``add_image``) or W&B (``log_image``) when that is the logger, and is always written as
    ``<log_dir>/samples/epoch_XXX.png``. It reuses the predictions of the validation step (no extra forward).

    Args:
        num_samples: images shown (at most the batch size).
        every_n_epochs: log every this many validation epochs.
    """

    def __init__(self, num_samples: int = 8, every_n_epochs: int = 1) -> None:
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        grid = self.render(pl_module, trainer.datamodule, batch, outputs["pred"])
        log_dir = run_directory(trainer)  # every rank asks: a broadcast under DDP
        if trainer.is_global_zero:
            self._publish(trainer, grid, log_dir)

    def render(
        self, pl_module: L.LightningModule, datamodule: Any, batch: dict[str, Any], pred: torch.Tensor
    ) -> torch.Tensor:
        """uint8 3×H'×W' grid for the first ``num_samples`` images of a prepared (normalised) batch and the
        int64 B×H×W classes the validation step predicted for it."""
        image = batch["image"][: self.num_samples]
        mask = batch["mask"][: self.num_samples]
        pred = pred[: self.num_samples]
        palette = torch.cat(
            [default_palette(pl_module.num_classes), torch.tensor([[255, 255, 255]], dtype=torch.uint8)]
        )
        palette = palette.to(image.device)
        ignored = len(palette) - 1
        target = torch.where(mask == pl_module.ignore_index, ignored, mask.clamp(max=ignored - 1))
        rows = [
            (datamodule.denormalize(image.float()) * 255).round().to(torch.uint8),
            torch.stack([colourize(t, palette) for t in target]),
            torch.stack([colourize(p, palette) for p in pred]),
        ]
        return make_grid(torch.cat(rows).cpu(), nrow=len(image), padding=2)

    @staticmethod
    def _publish(trainer: L.Trainer, grid: torch.Tensor, log_dir: Path) -> None:
        tag = "val/samples"
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, grid, trainer.global_step)
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=tag, images=[grid.permute(1, 2, 0).numpy()], step=trainer.global_step)
        out = log_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        save_png(grid, str(out / f"epoch_{trainer.current_epoch:03d}.png"))
