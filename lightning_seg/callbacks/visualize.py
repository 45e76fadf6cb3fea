"""``SampleOverlays``: a fixed spread of validation images with their true and predicted classes drawn over
them, every validation epoch, to every logger and the run folder.

The images are chosen once, so epochs compare the same images, and chosen to show something: the first
validation images in file order were all of one class on a defect dataset, so seven classes and the
defect-free images never appeared. :func:`spread_of_samples` covers every class present (rarest first)
and every image label, then fills the rest evenly over the split.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import Subset

from lightning_seg.callbacks.base import command_pass
from lightning_seg.reports.drawing import (
    class_legend,
    classes_shown,
    clear_classes,
    drawable_target,
    overlay,
    palette_with_ignored,
    show_picture,
)
from lightning_seg.reports.publish import MaskLayers, figure_pixels, publish_image
from lightning_seg.runs.log_dir import run_directory


def spread_of_samples(presence: torch.Tensor, labels: torch.Tensor | None, count: int) -> list[int]:
    """Indices of ``count`` images that together show every class and image label present.

    Classes are covered rarest first (each by the image holding most still-uncovered classes), then each
    image label (and an image without any label), then the remaining places are filled with images spread
    evenly over the candidates. Deterministic: the same data gives the same images.

    Args:
        presence: bool N×K, class k has a pixel in image n.
        labels: int64 N (single label, -100: none) or bool/float N×L (multi-label), or None.
        count: images wanted.

    Returns:
        sorted indices into the N candidates (fewer than ``count`` only when N is smaller).
    """
    total = len(presence)
    count = min(count, total)
    chosen: list[int] = []
    covered = torch.zeros(presence.shape[1], dtype=torch.bool)

    def take(candidates: torch.Tensor) -> None:
        free = [int(i) for i in candidates.nonzero().flatten() if int(i) not in chosen]
        if free and len(chosen) < count:
            gains = presence[free][:, ~covered].sum(1) if (~covered).any() else torch.zeros(len(free))
            best = free[int(torch.argmax(gains))]  # argmax: the first of equal gains (lowest index)
            chosen.append(best)
            covered.logical_or_(presence[best])

    for k in presence.sum(0).argsort(stable=True).tolist():  # rarest class first
        if presence[:, k].any() and not covered[k]:
            take(presence[:, k])
    if labels is not None:
        groups = labels.bool() if labels.dim() == 2 else labels[:, None] == labels.unique()[None]
        if labels.dim() == 2:
            groups = torch.cat([groups, ~groups.any(1, keepdim=True)], 1)  # images with no label too
        for g in range(groups.shape[1]):
            if not groups[chosen, g].any():
                take(groups[:, g])
    for i in torch.linspace(0, total - 1, count).round().long().tolist():
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    for i in range(total):  # evenly spaced positions that were already taken: the first free ones
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen)


class SampleOverlays(L.Callback):
    """Image | target | prediction overlays of a fixed spread of validation images, each validation epoch.

    Rows are labelled; each column's title gives the image's name and, for a net with an image-level head,
    its true and predicted image labels; a legend gives the class colours (ignored target pixels: white).
    The picture goes to every logger under ``val/samples`` and to ``<log_dir>/samples/epoch_XXX.png``
    (:mod:`lightning_seg.reports.publish`); W&B gets each image with its target and prediction as mask
    layers (classes toggled in its UI). Predictions are the validation pass's (the plain forward pass at the
    batch's size), computed for these images only at the end of the epoch.

    Args:
        num_samples: images shown.
        every_n_epochs: draw every this many validation epochs.
        candidates: how many validation images (the first ones) the spread is chosen from; their masks are
            read once.
        alpha: opacity of the class colours.
    """

    def __init__(
        self, num_samples: int = 8, every_n_epochs: int = 1, candidates: int = 256, alpha: float = 0.55
    ) -> None:
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.candidates = candidates
        self.alpha = alpha
        self.chosen: list[int] | None = None

    # ------------------------------------------------------------------------------------ choosing
    def choose(self, datamodule: Any, dataset: Any) -> list[int]:
        """The spread of :func:`spread_of_samples` over the first ``candidates`` images of ``dataset``."""
        from lightning_seg.data.stats import image_presence

        head = Subset(dataset, range(min(self.candidates, len(dataset))))
        presence = image_presence(
            head, datamodule.num_classes, datamodule.ignore_index, getattr(datamodule, "num_workers", 0)
        )
        labels = None
        if getattr(datamodule, "label_names", ()):
            labels = datamodule.sample_labels("val")
            labels = labels[: len(head)] if labels is not None else None
        return spread_of_samples(presence, labels, self.num_samples)

    # ------------------------------------------------------------------------------------- drawing
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a command's own passes over val (tune) are validations too; they show nothing new
        if (
            trainer.sanity_checking
            or command_pass(trainer) is not None
            or trainer.current_epoch % self.every_n_epochs
        ):
            return
        log_dir = run_directory(trainer)  # every rank asks: a broadcast under DDP
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        loader = trainer.val_dataloaders
        loader = loader[0] if isinstance(loader, list | tuple) else loader
        dataset = loader.dataset
        if self.chosen is None:
            self.chosen = self.choose(datamodule, dataset)
        if not self.chosen:
            return
        batch = loader.collate_fn([dataset[i] for i in self.chosen])
        picture, layers = self.render(trainer, pl_module, datamodule, batch)
        publish_image(
            trainer,
            "val/samples",
            picture,
            log_dir / "samples" / f"epoch_{trainer.current_epoch:03d}.png",
            layers=layers,
        )

    @torch.no_grad()
    def predict(
        self, trainer: L.Trainer, pl_module: Any, datamodule: Any, batch: dict[str, Any]
    ) -> tuple[dict[str, Any], torch.Tensor, list[str] | None]:
        """The batch prepared as validation prepares it, its int64 B×H×W predicted classes, and each image's
        predicted image labels as text (None without a head)."""
        batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch = datamodule.prepare_batch(batch, train=False)
        batch = trainer.precision_plugin.convert_input(batch)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with trainer.precision_plugin.forward_context():
                out = pl_module(batch["image"])
        finally:
            pl_module.train(was_training)
        pred = pl_module.classes_from_logits(out.mask.float())
        predicted_labels = None
        if out.label is not None:
            decisions = pl_module.label_decisions(pl_module.label_probabilities(out.label.float()), None)
            predicted_labels = self._label_text(pl_module, decisions)
        return batch, pred, predicted_labels

    @staticmethod
    def _label_text(pl_module: Any, labels: torch.Tensor) -> list[str]:
        """Image labels as names: int64 B (single; -100: unknown, "?") or B×L 0/1 (multi; a negative row:
        unknown, "?") → one string per image."""
        names = list(pl_module.label_names)
        if labels.dim() == 1:
            return [names[i] if 0 <= i < len(names) else "?" for i in labels.tolist()]
        texts = []
        for row in labels.float().tolist():
            if any(value < 0 for value in row):
                texts.append("?")
            else:
                texts.append(", ".join(n for n, v in zip(names, row, strict=True) if v > 0.5) or "none")
        return texts

    def render(
        self, trainer: L.Trainer, pl_module: Any, datamodule: Any, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, MaskLayers]]]:
        """The labelled figure as uint8 3×H'×W' pixels, and per image (uint8 3×H×W, :class:`MaskLayers`)."""
        import matplotlib.pyplot as plt

        names = batch.get("name") or [str(i) for i in self.chosen or []]
        prepared, pred, predicted_labels = self.predict(trainer, pl_module, datamodule, batch)
        true_labels = None
        if predicted_labels is not None:
            targets = pl_module.label_targets(prepared)
            true_labels = self._label_text(pl_module, targets) if targets is not None else None
        images = (datamodule.denormalize(prepared["image"].float()) * 255).round().to(torch.uint8).cpu()
        mask, pred = prepared["mask"].cpu(), pred.cpu()
        num_classes, ignore_index = pl_module.num_classes, pl_module.ignore_index
        palette = palette_with_ignored(num_classes)
        target = drawable_target(mask, num_classes, ignore_index)

        clear = clear_classes(pl_module.class_names)
        columns = len(images)
        # the legend lists the classes these images show; its rows add to the figure's height
        shown, ignored = classes_shown(list(target), list(pred), num_classes)
        legend_rows = -(-(len(shown) + ignored) // 8)
        figure, axes = plt.subplots(
            3, columns, figsize=(1.7 * columns + 0.6, 5.4 + 0.22 * legend_rows), squeeze=False, dpi=100
        )
        layers = []
        for i in range(columns):
            title = str(names[i])[-18:]
            if predicted_labels is not None:
                title += f"\ntrue: {true_labels[i] if true_labels else '?'}\npred: {predicted_labels[i]}"
            rows = (
                images[i],
                overlay(images[i], target[i], palette, self.alpha, clear),
                overlay(images[i], pred[i], palette, self.alpha, clear),
            )
            for row, picture in enumerate(rows):
                show_picture(axes[row, i], picture)
            axes[0, i].set_title(title, fontsize=7)
            layers.append(
                (
                    images[i],
                    MaskLayers(
                        prediction=pred[i],
                        target=mask[i],
                        class_names=list(pl_module.class_names),
                        ignore_index=ignore_index,
                        caption=title.replace("\n", " | "),
                    ),
                )
            )
        for row, label in enumerate(("image", "target", "prediction")):
            axes[row, 0].set_ylabel(label, fontsize=9)
        legend = class_legend(pl_module.class_names, shown, ignored)
        figure.legend(handles=legend, loc="lower center", ncol=min(len(legend), 8), fontsize=7, frameon=False)
        figure.suptitle(f"validation samples, epoch {trainer.current_epoch}", fontsize=9)
        figure.tight_layout(rect=(0, 0.25 * legend_rows / figure.get_figheight() + 0.02, 1, 0.97))
        try:
            return figure_pixels(figure), layers
        finally:
            plt.close(figure)
