"""``SegmentationModule``: one LightningModule for every net, loss and dataset.

Data flow of a step: normalised float32 B×3×H×W batch → net (padded to its ``size_divisor``, cropped
back) → :class:`~lightning_seg.models.outputs.NetOutput` → :class:`~lightning_seg.losses.CompoundLoss`
(float32) → confusion-matrix metrics updated on the device → ``self.log`` under ``stage/name``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lightning_seg import random_state
from lightning_seg.errors import ConfigError
from lightning_seg.inference import Inference
from lightning_seg.inference.predictor import to_probabilities
from lightning_seg.losses import CompoundLoss
from lightning_seg.metrics import SegMetrics, WeightedMean
from lightning_seg.models.outputs import NetOutput, as_net_output, pad_to_multiple

NetBuilder = Callable[[int], nn.Module]
"""A net class with its arguments but without ``num_classes``; YAML: ``class_path`` + ``init_args``."""

STAGES = ("train", "val", "test")


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


NO_LABEL = -100
"""Image-level target of an image whose mask has no labelled pixel: left out of the label loss and metrics."""


def dominant_class(mask: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Image-level label derived from a mask: the most frequent non-background class, 0 if the labelled
    pixels are all background, and :data:`NO_LABEL` if no pixel is labelled (nothing is known of the image).

    Args:
        mask: int64 B×H×W.

    Returns:
        int64 (B,).
    """
    valid = (mask != ignore_index) & (mask > 0)
    flat = torch.where(valid, mask, 0).flatten(1)
    counts = torch.zeros(mask.shape[0], num_classes, device=mask.device).scatter_add_(
        1, flat, valid.flatten(1).float()
    )
    counts[:, 0] = 0
    label = torch.where(counts.sum(1) > 0, counts.argmax(1), torch.zeros_like(counts[:, 0], dtype=torch.long))
    labelled = (mask != ignore_index).flatten(1).any(1)
    return torch.where(labelled, label, NO_LABEL)


def build_net(builder: NetBuilder, num_classes: int, num_labels: int | None) -> nn.Module:
    """Call the net builder with ``num_classes``, and with ``num_labels`` when the data has image-level
    classes and the net takes a ``num_labels`` the config left null (so a config never states it twice)."""
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if num_labels is not None:
        keywords = getattr(builder, "keywords", {})
        try:
            parameters = inspect.signature(builder).parameters
        except (TypeError, ValueError):
            parameters = {}
        if keywords.get("num_labels") is None and ("num_labels" in keywords or "num_labels" in parameters):
            kwargs["num_labels"] = num_labels
    return builder(**kwargs)


class SegmentationModule(L.LightningModule):
    """Semantic segmentation with any net, a compound loss and confusion-matrix metrics.

    Args:
        net: builds the net from ``num_classes`` (a net class with its other arguments).
        num_classes: classes including background (linked from the data module by the CLI).
        ignore_index: target label excluded from loss and metrics (linked from the data module).
        class_names: names for per-class metrics (linked from the data module).
        label_names: image-level classes of a net with a class head (linked; empty: mask classes).
        loss: the loss; None means cross-entropy + Dice with weight 1 each.
        optimizer: builds the optimizer from the trainable parameters.
        lr_scheduler: builds the scheduler from the optimizer; a null ``total_steps`` is filled in with the
            run's optimizer-step count.
        scheduler_interval: step the scheduler each "step" or each "epoch"; None: per step for schedules
            measured in steps (OneCycle, WarmupCosine, Poly), else per epoch.
        scheduler_monitor: metric that ReduceLROnPlateau watches (``val/loss`` or ``val/mIoU``).
        binary_threshold: probability threshold of a one-channel (sigmoid) head.
        predict_probabilities: also return per-class probabilities from ``predict`` (large: K floats per pixel).
        inference: how ``test`` and ``predict`` turn images into probabilities (resize or sliding window,
            flip and scale TTA); None: the whole image once. Validation inside ``fit`` always uses that.
        channels_last: run the net in channels-last memory format (faster convolutions on GPUs).
        compile: wrap the net in ``torch.compile``.
    """

    def __init__(
        self,
        net: NetBuilder,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        loss: CompoundLoss | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] | None = None,
        scheduler_monitor: str = "val/loss",
        binary_threshold: float = 0.5,
        predict_probabilities: bool = False,
        inference: Inference | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2 (background + one class), got {num_classes}")
        # No save_hyperparameters(): the run's config.yaml beside the checkpoint is the one record of the
        # configuration. LightningCLI merges checkpoint hparams back into the config on --ckpt_path, and a
        # partial record (without the net) made it drop the config's net.
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ConfigError(
                f"model.class_names has {len(self.class_names)} names for {num_classes} classes"
            )
        self.label_names = list(label_names) if label_names else self.class_names
        self.net = build_net(net, num_classes, len(label_names) if label_names else None)
        self.size_divisor = int(getattr(self.net, "size_divisor", 1))
        self.loss = loss if loss is not None else CompoundLoss()
        self.loss.bind(num_classes, ignore_index)
        self.optimizer_builder = optimizer
        self.scheduler_builder = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.binary_threshold = binary_threshold
        self.predict_probabilities = predict_probabilities
        self.inference = inference if inference is not None else Inference()
        # per stage: whether the last batch was scored at the masks' original size or the batch's
        self.scored_at: dict[str, str] = {}
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # kept out of the module tree so checkpoints hold the plain net's keys
        self.__dict__["_run_net"] = torch.compile(self.net) if compile else self.net
        # keyed "<stage>_" because a ModuleDict key "train" would shadow nn.Module.train
        # K×K confusion matrix of each stage's last epoch, for the run summary
        self.last_confusion: dict[str, torch.Tensor] = {}
        # the generators' states of the checkpoint a fit resumes from, restored at on_train_start
        self._resumed_random_state: dict[str, Any] | None = None
        self.eval_loss_means = nn.ModuleDict()  # "<stage>_<term>" → WeightedMean, created on first use
        self.metrics = nn.ModuleDict({f"{stage}_": SegMetrics(num_classes, ignore_index) for stage in STAGES})
        num_labels = len(self.label_names)
        self.label_metrics = nn.ModuleDict(
            {
                f"{stage}_": nn.ModuleDict(
                    {
                        "label_f1": MulticlassF1Score(
                            num_labels, average="macro", ignore_index=NO_LABEL, validate_args=False
                        ),
                        "label_acc": MulticlassAccuracy(
                            num_labels, average="micro", ignore_index=NO_LABEL, validate_args=False
                        ),
                    }
                )
                for stage in STAGES
            }
        )

    # ------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        # a class-weight rule reads the data module's training statistics, lazily and only if the weights
        # are not restored from a checkpoint (see on_load_checkpoint)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.loss.weights_pending:
            self.loss.bind(self.num_classes, self.ignore_index, getattr(datamodule, "class_weights", None))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.loss.weight_tensor is not None:
            checkpoint["loss_class_weights"] = self.loss.weight_tensor.cpu()
        if self._trainer is not None and self.trainer.state.fn == "fit":
            checkpoint["random_state"] = self._random_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("loss_class_weights") is not None:
            self.loss.set_class_weights(checkpoint["loss_class_weights"])
        self._resumed_random_state = checkpoint.get("random_state")

    def _random_state(self) -> dict[str, Any]:
        """The generators' states at this save; under DDP each rank's torch and CUDA states (Kornia's and
        dropout's draws differ per rank), gathered since only rank 0 writes the file."""
        state = random_state.capture()
        if self.trainer.world_size > 1:
            for key in ("torch", "cuda"):
                if key in state:
                    state[f"{key}_per_rank"] = self.all_gather(state[key].to(self.device)).cpu()
        return state

    def on_train_start(self) -> None:
        # restored here, after the sanity check and the creation of the epoch's loader, so that the first
        # draw after it is the first augmentation of the resumed batch, as in the uninterrupted run
        state = self._resumed_random_state
        if state is None:
            return
        self._resumed_random_state = None
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        saved_world = len(state["torch_per_rank"]) if "torch_per_rank" in state else 1
        if saved_world != world_size:
            return  # another number of processes: keep each rank's own seeding (the draws cannot repeat anyway)
        for key in ("torch", "cuda"):
            per_rank = state.get(f"{key}_per_rank")
            if per_rank is not None:
                # a copy, not a view: torch.set_rng_state reads a view with a storage offset out of
                # bounds (a segmentation fault with torch 2.15)
                state[key] = per_rank[rank].clone()
        random_state.restore(state)

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, image: torch.Tensor) -> NetOutput:
        """float32 B×3×H×W (normalised) → :class:`NetOutput` with B×K×H×W mask logits at the input size."""
        padded, (h, w) = pad_to_multiple(image, self.size_divisor)
        if self.channels_last:
            padded = padded.contiguous(memory_format=torch.channels_last)
        out = as_net_output(self._run_net(padded))

        def to_input_size(logits: torch.Tensor) -> torch.Tensor:
            if logits.shape[-2:] != padded.shape[-2:]:  # nets (or aux heads) that predict at a lower stride
                logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
            return logits[..., :h, :w]

        out.mask = to_input_size(out.mask)
        if out.aux is not None:
            out.aux = to_input_size(out.aux)
        return out

    def classes_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """B×K×H×W logits → int64 B×H×W classes (sigmoid threshold for a one-channel head)."""
        if logits.shape[1] == 1:
            return (logits[:, 0].float().sigmoid() > self.binary_threshold).long()
        return logits.argmax(1)

    def classes_from_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """B×K×H×W probabilities → int64 B×H×W classes: the most probable class (a one-channel head: the
        foreground where its probability exceeds ``binary_threshold``)."""
        if probabilities.shape[1] == 1:
            return (probabilities[:, 0] > self.binary_threshold).long()
        return probabilities.argmax(1)

    def _mask_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The net's mask logits (what :class:`Inference` calls, window by window when sliding)."""
        return self(image).mask

    # ------------------------------------------------------------------------------------------ steps
    def _step(self, batch: dict[str, Any], stage: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Loss and metric updates of one batch; returns the loss terms (``"loss"`` their weighted sum) and
        the int64 B×H×W predicted classes."""
        image, mask = batch["image"], batch["mask"]
        out = self(image)
        label = None
        if out.label is not None:
            label = batch.get("label")
            if label is None:
                label = dominant_class(mask, self.num_classes, self.ignore_index)
        losses = self.loss(out, mask, label)
        # epoch means weigh each batch by its images with a labelled pixel: a batch of wholly ignored masks
        # has loss 0 and weight 0 (a device tensor: no host sync)
        batch_size = (mask != self.ignore_index).flatten(1).any(1).sum()
        if stage == "train":
            # per-process values: syncing training losses would stall every step
            self.log(
                "train/loss",
                losses["loss"],
                on_step=True,
                on_epoch=True,
                prog_bar=True,
                batch_size=batch_size,
            )
            for name, value in losses.items():
                if name != "loss":
                    self.log(f"train/loss/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)
        else:
            for name, value in losses.items():
                self._log_eval_loss(stage, name, value.detach(), batch_size)
        with torch.no_grad():
            pred = self._score(batch, stage, out.mask.detach())

            if out.label is not None:
                for metric in self.label_metrics[f"{stage}_"].values():
                    metric.update(out.label.detach().argmax(1), label)
        return losses, pred

    def _score(self, batch: dict[str, Any], stage: str, logits: torch.Tensor) -> torch.Tensor:
        """Update the stage's metrics; returns the int64 B×H×W classes at the batch's size.

        ``test`` decides through :attr:`inference` (sliding window, TTA), as ``predict`` does. A batch that
        carries ``orig_mask`` (the data module's ``score_at_original_size``) is scored against each mask as
        stored: probabilities resized back to it, as ``predict`` writes them. Otherwise against the mask
        resized for batching.
        """
        metrics = self.metrics[f"{stage}_"]
        originals = batch.get("orig_mask")
        self.scored_at[stage] = "original size" if originals is not None else "batch size"
        sliding_or_tta = stage == "test" and not self.inference.is_plain
        if originals is None and not sliding_or_tta:  # the training step's path: no softmax needed
            pred = self.classes_from_logits(logits)
            metrics.update(pred, batch["mask"])
            return pred
        if sliding_or_tta:
            probabilities = self.inference.probabilities(self._mask_logits, batch["image"])
        else:
            probabilities = to_probabilities(logits)
        pred = self.classes_from_probabilities(probabilities)
        if originals is None:
            metrics.update(pred, batch["mask"])
            return pred
        for item, original in zip(probabilities, originals, strict=True):  # sizes differ: one at a time
            resized = self.inference.at_size(item, original.shape)
            metrics.update(self.classes_from_probabilities(resized[None]), original[None].long())
        return pred

    def _log_eval_loss(self, stage: str, name: str, value: torch.Tensor, batch_size: torch.Tensor) -> None:
        """Log an evaluation loss as a batch-size-weighted mean over the whole split, across processes.

        A metric summed over processes, then divided, rather than ``sync_dist``: with uneven shards the
        latter averages the processes' means, which is not the split's mean.
        """
        key = f"{stage}_{name}"
        if key not in self.eval_loss_means:
            self.eval_loss_means[key] = WeightedMean().to(value.device)
        metric = self.eval_loss_means[key]
        metric.update(value, weight=batch_size)
        log_name = f"{stage}/loss" if name == "loss" else f"{stage}/loss/{name}"
        self.log(
            log_name,
            metric,
            on_step=False,
            on_epoch=True,
            prog_bar=name == "loss",
            metric_attribute=f"eval_loss_means.{key}",  # created after Lightning indexed the metrics
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        losses = self._step(batch, "train")[0]
        # the terms go to callbacks (DivergenceGuard names them when the loss turns non-finite)
        terms = {name: value.detach() for name, value in losses.items() if name != "loss"}
        return {"loss": losses["loss"], "loss_terms": terms}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        # the predictions go to callbacks (SampleOverlays) so they need no second forward pass
        return {"pred": self._step(batch, "val")[1]}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"pred": self._step(batch, "test")[1]}

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Class maps at each image's own size.

        Returns:
            ``{"name": [str], "mask": [uint8 H_i×W_i]}`` (int64 when there are more than 256 classes), one
            entry per image, plus ``"probability": [float32 K×H_i×W_i]`` when ``predict_probabilities``.
            Probabilities come from :attr:`inference` and are resized back to ``orig_size`` before the
            decision, so borders stay smooth. Lightning keeps every prediction in host memory, hence compact
            masks and probabilities on request only.
        """
        image = batch["image"]
        probabilities = self.inference.probabilities(self._mask_logits, image)
        sizes = batch["orig_size"].tolist() if "orig_size" in batch else [list(image.shape[-2:])] * len(image)
        mask_dtype = torch.uint8 if self.num_classes <= 256 else torch.int64
        masks, per_image = [], []
        for item, size in zip(probabilities, sizes, strict=True):  # one image at full size at a time
            resized = self.inference.at_size(item, size)
            masks.append(self.classes_from_probabilities(resized[None])[0].to(mask_dtype))
            if self.predict_probabilities:
                per_image.append(resized)
        names = batch.get("name") or [f"{batch_idx:05d}_{i:03d}" for i in range(len(masks))]
        out: dict[str, Any] = {"name": list(names), "mask": masks}
        if self.predict_probabilities:
            out["probability"] = per_image
        return out

    # -------------------------------------------------------------------------------------- epoch end
    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.metrics[f"{stage}_"]
        if not metrics.updated:
            return
        scores = metrics.compute()
        # already synced across processes by torchmetrics; no sync_dist needed
        logged = {f"{stage}/{name}": scores[name] for name in ("dice", "dice_fg", "acc")}
        for name in ("IoU_fg", "image_IoU"):
            if name in scores:
                logged[f"{stage}/{name}"] = scores[name]
        # one host copy for the NaN test (classes absent from the whole evaluation are not logged)
        for class_name, value, present in zip(
            self.class_names, scores["iou"], (~scores["iou"].isnan()).tolist(), strict=True
        ):
            if present:
                logged[f"{stage}/IoU/{class_name}"] = value
        for name, metric in self.label_metrics[f"{stage}_"].items():
            if metric.update_count:
                logged[f"{stage}/{name}"] = metric.compute()
                metric.reset()
        self.log_dict(logged, prog_bar=False)
        self.log(f"{stage}/mIoU", scores["mIoU"], prog_bar=True)
        self.last_confusion[stage] = scores["confusion"].cpu()
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_start(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"test: inference {self.inference.describe()}")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ------------------------------------------------------------------------------------- optimizers
    def scheduler_with_total_steps(self, total_steps: int) -> tuple[LRSchedulerCallable, bool]:
        """The scheduler builder with a null ``total_steps`` filled in with ``total_steps`` (the run's
        optimizer-step count), and whether it was; OneCycleLR given epochs + steps_per_epoch is left alone."""
        builder = self.scheduler_builder
        keywords = getattr(builder, "keywords", {}) or {}
        if "total_steps" in keywords and keywords["total_steps"] is None and keywords.get("epochs") is None:
            return functools.partial(builder, total_steps=total_steps), True
        return builder, False

    def configure_optimizers(self) -> Any:
        # only trainable parameters: a finetuning callback adds the frozen backbone as its own group later
        optimizer = self.optimizer_builder([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_builder is None:
            return optimizer
        builder, filled = self.scheduler_with_total_steps(int(self.trainer.estimated_stepping_batches))
        scheduler = builder(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            interval = "epoch"
        else:
            interval = self.scheduler_interval or ("step" if filled or _counts_steps(scheduler) else "epoch")
        config = {"scheduler": scheduler, "interval": interval, "monitor": self.scheduler_monitor}
        return {"optimizer": optimizer, "lr_scheduler": config}


def _counts_steps(scheduler: Any) -> bool:
    """Schedules whose length is a number of optimizer steps by definition."""
    from lightning_seg.schedulers import PolyLR, WarmupCosineLR

    return isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR | WarmupCosineLR | PolyLR)
