"""Where a run's pictures and tables go: a file in the run folder, and every logger that can show them.

Callbacks (``SampleOverlays``, ``RunPlots``) call these functions and never test for a logger themselves,
so TensorBoard, Weights & Biases and a plain folder of PNGs receive the same set of pictures under the same
tags:

* TensorBoard: ``add_image`` (CHW uint8) and tables as Markdown text (``add_text``);
* W&B: ``wandb.Image`` (with mask layers when given: ground truth and prediction, each class toggled in the
  W&B UI) and ``wandb.Table``;
* any other logger (CSV): the files only.

Only rank zero publishes; the caller decides the file's path (under the run folder).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from lightning_seg.data.workers import save_png
from lightning_seg.reports.drawing import drawable_target
from lightning_seg.utils.atomic import atomic_write


@dataclass
class MaskLayers:
    """Class maps of one image that W&B draws over it as toggleable layers.

    Attributes:
        target: int64 H×W true classes (``ignore_index`` pixels are shown as class "ignored"), or None.
        prediction: int64 H×W predicted classes.
        class_names: the K class names.
        ignore_index: the target's ignored value.
        caption: the image's title (its name, true and predicted image labels).
    """

    prediction: torch.Tensor
    class_names: Sequence[str]
    target: torch.Tensor | None = None
    ignore_index: int = 255
    caption: str = ""

    WANDB_MAX_VALUE = 127
    """W&B stores a mask as ``int8`` pixels: class values (and "ignored", K) above 127 would wrap."""

    @property
    def fits_wandb(self) -> bool:
        """Whether W&B can hold these layers (K + 1 values, "ignored" included, up to 127)."""
        return len(self.class_names) <= self.WANDB_MAX_VALUE

    def wandb_masks(self) -> dict[str, Any]:
        """``masks=`` of ``wandb.Image``: uint8/int64 H×W arrays and ``{index: name}``."""
        labels = {i: name for i, name in enumerate(self.class_names)}
        layers = {"prediction": {"mask_data": self.prediction.cpu().numpy(), "class_labels": labels}}
        if self.target is not None:
            ignored = len(self.class_names)
            target = drawable_target(self.target, ignored, self.ignore_index)
            layers["ground_truth"] = {
                "mask_data": target.cpu().numpy(),
                "class_labels": {**labels, ignored: "ignored"},
            }
        return layers


def _loggers(trainer: L.Trainer) -> list[Any]:
    return list(getattr(trainer, "loggers", []) or [])


def publish_image(
    trainer: L.Trainer,
    tag: str,
    image: torch.Tensor,
    path: Path,
    layers: Sequence[tuple[torch.Tensor, MaskLayers]] = (),
) -> Path:
    """Write ``image`` (uint8 3×H×W) to ``path`` (PNG) and hand it to the loggers under ``tag``.

    Args:
        layers: W&B gets these (uint8 3×h×w image, its :class:`MaskLayers`) instead of the composed
            ``image``: one ``wandb.Image`` each, with its class layers; the other loggers get ``image``
            (and W&B too when there are more classes than its masks hold).
    """
    if not trainer.is_global_zero:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    image = image.detach().to("cpu", torch.uint8).contiguous()
    save_png(image, str(path))
    step = trainer.global_step
    for logger in _loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step)
        elif isinstance(logger, WandbLogger):
            if layers and all(masks.fits_wandb for _, masks in layers):
                logger.log_image(
                    key=tag,
                    images=[picture.permute(1, 2, 0).cpu().numpy() for picture, _ in layers],
                    step=step,
                    caption=[masks.caption for _, masks in layers],
                    masks=[masks.wandb_masks() for _, masks in layers],
                )
            else:
                logger.log_image(key=tag, images=[image.permute(1, 2, 0).numpy()], step=step)
    return path


def figure_pixels(figure: Any) -> torch.Tensor:
    """uint8 3×H×W pixels of a matplotlib figure (rendered once, with the Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).contiguous()


def publish_figure(trainer: L.Trainer, tag: str, figure: Any, path: Path) -> Path:
    """Render a matplotlib figure once, write it to ``path`` (PNG), hand it to the loggers; closes it."""
    import matplotlib.pyplot as plt

    try:
        pixels = figure_pixels(figure)
    finally:
        plt.close(figure)
    return publish_image(trainer, tag, pixels, path)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats with 4 decimals, None as "n/a"."""

    def cell(value: Any) -> str:
        if value is None:
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def publish_table(
    trainer: L.Trainer, tag: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], path: Path
) -> Path:
    """Write a table to ``path`` (CSV) and hand it to the loggers (W&B ``Table``, TensorBoard Markdown)."""
    if not trainer.is_global_zero:
        return path
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())
    for logger in _loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(tag, markdown_table(columns, rows), trainer.global_step)
        elif isinstance(logger, WandbLogger):
            logger.log_table(
                key=tag, columns=list(columns), data=[list(r) for r in rows], step=trainer.global_step
            )
    return path
