"""``SegmentationModule``: one LightningModule for every net, loss and dataset.

Data flow of a step: normalised float32 B×3×H×W batch → net (padded to its ``size_divisor``, cropped
back) → :class:`~lightning_seg.models.outputs.NetOutput` → :class:`~lightning_seg.losses.CompoundLoss`
(float32) → confusion-matrix metrics updated on the device → ``self.log`` under ``stage/name``. ``test`` scores
through :class:`~lightning_seg.task.evaluation.EvaluationPath`, the path ``predict`` writes with; what a stage
leaves beside its logged metrics is in :attr:`SegmentationModule.results`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lightning_seg.checkpoints.load import load_module
from lightning_seg.checkpoints.record import RECORD_KEY
from lightning_seg.data.base import IMAGENET_MEAN, IMAGENET_STD
from lightning_seg.errors import ConfigError
from lightning_seg.inference import Inference
from lightning_seg.inference.predictor import to_probabilities
from lightning_seg.labels import LabelMode, LabelTask, plain_scores
from lightning_seg.losses import CompoundLoss
from lightning_seg.metrics import NamedSums, SegMetrics
from lightning_seg.metrics.intervals import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_intervals,
    scores_of_counts,
)
from lightning_seg.models.outputs import NetOutput, forward_at_input_size
from lightning_seg.postprocess import PostProcess, Prediction, Step, TemperatureScaling
from lightning_seg.task.classes import model_class_names
from lightning_seg.task.epoch_logs import composite_score, label_logs, segmentation_logs
from lightning_seg.task.evaluation import EvaluationPath
from lightning_seg.task.loss_weights import class_weights_of, label_weights_of, resolve_on_rank_zero
from lightning_seg.task.net_builder import UNBUILT_HEAD_MARKERS, NetBuilder, build_net
from lightning_seg.task.optimizers import ConfiguredOptimizers, default_optimizer
from lightning_seg.task.results import StageResults, TaskResults
from lightning_seg.utils import random_state

STAGES = ("train", "val", "test")


class SegmentationModule(ConfiguredOptimizers, L.LightningModule):
    """Semantic segmentation with any net, a compound loss and confusion-matrix metrics.

    Args:
        net: builds the net from ``num_classes`` (a net class with its other arguments).
        num_classes: classes including background (linked from the data module by the CLI).
        ignore_index: target label excluded from loss and metrics (linked from the data module).
        class_names: names for per-class metrics (linked from the data module).
        label_names: image-level classes of a net with a class head (linked; empty: derived from the
            masks, see ``label_mode``).
        label_classes: the mask class each data label says is present (None: none; linked from the data
            module); empty: a label names the class of the same name.
        label_mode: "single" (one class per image, softmax) or "multi" (several, sigmoid) for a net with a
            class head; None: "single" when the data has ``label_names``, else "multi". Without data labels,
            multi-label targets are the foreground classes present in the mask (L = K-1, named
            ``class_names[1:]``) and single-label ones the dominant mask class (L = K). See
            :mod:`lightning_seg.labels`.
        label_thresholds: multi-label decision thresholds, one per label (or one for all); None: 0.5.
        label_relative: the relative multi-label rule instead of thresholds: a label is present when its
            probability reaches this share of the image's highest (``p >= r · max p``; 0.5 in one VOC
            notebook, so every image keeps at least its most likely label). None: the thresholds.
        loss: the loss; None means cross-entropy + Dice with weight 1 each.
        optimizer: builds the optimizer from the trainable parameters.
        lr_scheduler: builds the scheduler from the optimizer; a null ``total_steps`` is filled in with the
            run's optimizer-step count.
        scheduler_interval: step the scheduler each "step" or each "epoch"; None: per step for schedules
            measured in steps (OneCycle, WarmupCosine, Poly), else per epoch.
        scheduler_monitor: metric that ReduceLROnPlateau watches (``val/loss`` or ``val/mIoU``).
        binary_threshold: probability threshold of a one-channel (sigmoid) head.
        binary_head: build any net with one mask channel, a sigmoid foreground probability (BCE with the
            ``ce`` term), for two classes (background, foreground), as the Pet notebook trained U-Net and
            ResNet34-U-Net; thresholds and metrics as for MicroUNet's ``binary_head``.
        predict_probabilities: also return per-class probabilities from ``predict`` (large: K floats per pixel).
        inference: how ``test`` and ``predict`` turn images into probabilities (resize or sliding window,
            flip and scale TTA); None: the whole image once. Validation inside ``fit`` always uses that.
        postprocess: the steps after inference, in the order probabilities → decision → class map
            (:mod:`lightning_seg.postprocess`: DenseCRF, ClassThresholds, LabelConsistency, SmallComponents);
            applied by ``test``, ``predict`` and ``tune`` alike, never by validation inside ``fit``.
        mean: the data's normalisation mean (linked from the data module; undoes it for steps that read
            the image).
        std: the data's normalisation std (linked from the data module).
        score: a composite score logged as ``<stage>/score`` for val and test: a weighted sum of the stage's
            logged metrics, named without the stage (e.g. ``{image_mIoU: 0.75, label_f1: 0.25}``, the phone
            defect notebook's selection rule); monitor it as ``val/score`` in ModelCheckpoint or
            EarlyStopping. None: no score.
        boundary_iou: also score test by Boundary IoU (Cheng et al. 2021; the bands within 2% of the image
            diagonal of each class's contour), logged as ``test/boundary_mIoU`` and ``test/boundary_IoU/<class>``;
            off by default (about 75 ms per 12-class 360×480 image on a 2-core CPU, BENCHMARKS.md).
        intervals: bootstrap resamples of the test images for each test metric's 95% interval (seeded: 0;
            in ``summary.json`` and the printed table; see :mod:`lightning_seg.metrics.intervals`); 0: none.
        channels_last: run the net in channels-last memory format (faster convolutions on GPUs).
        compile: wrap the net in ``torch.compile``. Under DDP the compiled net runs inside DDP's forward,
            where Dynamo splits its graph at DDP's gradient buckets (DDPOptimizer, torch's default), so the
            all-reduces overlap the backward (tests/cli/test_ddp.py checks the condition).
    """

    def __init__(
        self,
        net: NetBuilder,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        label_classes: Sequence[str | None] | None = None,
        label_mode: LabelMode | None = None,
        label_thresholds: Sequence[float] | None = None,
        label_relative: float | None = None,
        loss: CompoundLoss | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] | None = None,
        scheduler_monitor: str = "val/loss",
        binary_threshold: float = 0.5,
        binary_head: bool = False,
        predict_probabilities: bool = False,
        inference: Inference | None = None,
        postprocess: list[Step] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        score: dict[str, float] | None = None,
        intervals: int = DEFAULT_RESAMPLES,
        boundary_iou: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        # No save_hyperparameters(): the run's config.yaml beside the checkpoint is the one record of the
        # configuration. LightningCLI merges checkpoint hparams back into the config on --ckpt_path, and a
        # partial record (without the net) made it drop the config's net.
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = model_class_names(num_classes, class_names)
        self.label_task = LabelTask.of_model(
            label_mode,
            label_names,
            self.class_names,
            label_thresholds,
            ignore_index,
            label_classes,
            relative=label_relative,
        )
        self.label_mode, self.label_names = self.label_task.mode, list(self.label_task.names)
        derived, names = self.label_task.derived, self.label_names
        # the loss first: a head it gives weight 0 is not built (see build_net); made for this task, its
        # weight rules reading the data's statistics through this module when first used
        loss = (loss if loss is not None else CompoundLoss()).for_task(
            num_classes,
            ignore_index,
            self.label_mode,
            len(names),
            # bound methods, not lambdas: the module stays picklable (ddp_spawn, torch.save)
            class_weight_source=self._class_weights_of_data,
            label_weight_source=self._label_weights_of_data,
        )
        if binary_head and num_classes != 2:
            raise ConfigError(
                f"model.binary_head: one sigmoid channel is for two classes (background, foreground); the data "
                f"has {num_classes}"
            )
        self.net = build_net(
            net,
            1 if binary_head else num_classes,
            len(names),
            derived_labels=derived,
            aux_head=loss.aux_weight > 0,
            label_head=loss.label_weight > 0,
            # a pretrained net compares its classes with these: not with one channel
            class_names=None if binary_head else self.class_names,
            mean=mean if mean is not None else IMAGENET_MEAN,
            std=std if std is not None else IMAGENET_STD,
        )
        self.size_divisor = int(getattr(self.net, "size_divisor", 1))
        self.loss = loss
        self.optimizer_builder = optimizer
        self.scheduler_builder = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.binary_threshold = binary_threshold
        self.predict_probabilities = predict_probabilities
        self.inference = inference if inference is not None else Inference()
        steps = [s.for_classes(self.class_names) if isinstance(s, Step) else s for s in postprocess or []]
        self.postprocess = PostProcess(steps)
        one_channel = binary_head or getattr(getattr(self.net, "mask_head", None), "out_channels", 0) == 1
        if (
            one_channel
            and binary_threshold != 0.5
            and self.postprocess.find(TemperatureScaling) is not None
            and self.postprocess.thresholds is None
        ):
            # p > binary_threshold would then read calibrated probabilities: another rule than the one configured
            raise ConfigError(
                f"model.postprocess TemperatureScaling with binary_threshold {binary_threshold}: the threshold was "
                "chosen on uncalibrated probabilities; add ClassThresholds after it (tune fits both), or keep 0.5"
            )
        self.mean = tuple(mean) if mean is not None else IMAGENET_MEAN
        self.std = tuple(std) if std is not None else IMAGENET_STD
        # the path after training, shared by test, predict and the commands (tune, attack, submit, export)
        self.evaluation = EvaluationPath(
            self.inference,
            self.postprocess,
            num_classes,
            ignore_index,
            self.class_names,
            self.label_task,
            binary_threshold,
            self.mean,
            self.std,
            boundary_iou=boundary_iou,
        )
        # what each stage leaves for the run's records (RunSummary, RunPlots read it)
        self.results = TaskResults()
        if score is not None and (not score or not all(math.isfinite(float(w)) for w in score.values())):
            raise ConfigError(f"model.score must name metrics with finite weights, got {score}")
        self.score = dict(score) if score is not None else None
        if intervals < 0 or 0 < intervals < 100:
            raise ConfigError(
                f"model.intervals: 0 (none) or at least 100 bootstrap resamples, got {intervals}"
            )
        self.interval_resamples = intervals
        # thresholds carried by the loaded checkpoint (export's bundle)
        self.embedded_thresholds: dict[str, Any] | None = None
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # kept out of the module tree so checkpoints hold the plain net's keys
        self.__dict__["_run_net"] = torch.compile(self.net) if compile else self.net
        # the generators' states of the checkpoint a fit resumes from, restored at on_train_start
        self._resumed_random_state: dict[str, Any] | None = None
        # keyed "<stage>_" because a ModuleDict key "train" would shadow nn.Module.train
        # each evaluation stage's loss sums (numerators and denominators), divided once at the epoch's end
        self.eval_loss_sums = nn.ModuleDict(
            {f"{stage}_": NamedSums() for stage in STAGES if stage != "train"}
        )
        # test keeps each image's counts: its metrics' intervals and paired comparisons are computed from them
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_": SegMetrics(
                    num_classes, ignore_index, keep_per_image=stage == "test" and intervals > 0
                )
                for stage in STAGES
            }
        )
        self.label_metrics = nn.ModuleDict({f"{stage}_": self.label_task.new_metrics() for stage in STAGES})

    # ------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if stage == "fit":
            # before DDP wraps the net: parameters the logits never use must not wait for gradients
            freeze_unused = getattr(self.net, "freeze_unused_parameters", None)
            if callable(freeze_unused):
                freeze_unused()
        if stage == "fit" and self.trainer.ckpt_path is None:
            resolve_on_rank_zero(self.loss, self.trainer.strategy, self.trainer.is_global_zero)

    def _datamodule(self) -> Any:
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def _class_weights_of_data(self, rule: str, beta: float) -> torch.Tensor:
        return class_weights_of(self._datamodule(), rule, beta)

    def _label_weights_of_data(self, rule: str, beta: float) -> torch.Tensor:
        return label_weights_of(self._datamodule(), self.label_task, rule, beta)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.loss.weight_tensor is not None:
            checkpoint["loss_class_weights"] = self.loss.weight_tensor.cpu()
        if self.loss.label_weight_tensor is not None:
            checkpoint["loss_label_class_weights"] = self.loss.label_weight_tensor.cpu()
        if self._trainer is not None and self.trainer.state.fn == "fit":
            checkpoint["random_state"] = random_state.capture_per_rank(
                self.trainer.world_size, self.all_gather, self.device
            )

    def unbuilt_head_keys(self, state: dict[str, Any]) -> list[str]:
        """The keys of ``state`` that belong to a head this model does not build (an aux or image-label
        head whose loss weight is 0): a checkpoint written before such heads were left out holds them, and
        they never shaped a mask (trained with weight 0, they were never trained)."""
        own = self.state_dict()
        return [k for k in state if k not in own and any(marker in k for marker in UNBUILT_HEAD_MARKERS)]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        dropped = self.unbuilt_head_keys(checkpoint.get("state_dict", {}))
        if dropped:
            from lightning.pytorch.utilities import rank_zero_info

            for key in dropped:
                del checkpoint["state_dict"][key]
            rank_zero_info(
                f"checkpoint: left out {len(dropped)} weights of a head this model does not build "
                f"({dropped[0]}, ...; its loss weight is 0)"
            )
        if checkpoint.get("loss_class_weights") is not None:
            self.loss.set_class_weights(checkpoint["loss_class_weights"])
        if checkpoint.get("loss_label_class_weights") is not None:
            self.loss.set_label_class_weights(checkpoint["loss_label_class_weights"])
        self._resumed_random_state = checkpoint.get("random_state")
        record = checkpoint.get(RECORD_KEY)
        self.embedded_thresholds = record.get("thresholds") if isinstance(record, dict) else None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> SegmentationModule:
        """The model rebuilt from the checkpoint's own record (no arguments needed; eval mode, on CPU
        unless ``map_location``); with ``hparams_file`` or constructor arguments, Lightning's loader."""
        if hparams_file is not None or kwargs or strict is False:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        return load_module(
            checkpoint_path, weights_only=weights_only is not False, map_location=map_location or "cpu"
        )[0]

    def on_train_start(self) -> None:
        # restored here, after the sanity check and the creation of the epoch's loader, so that the first
        # draw after it is the first augmentation of the resumed batch, as in the uninterrupted run
        state, self._resumed_random_state = self._resumed_random_state, None
        if state is not None:
            random_state.restore_for_rank(state, self.trainer.global_rank, self.trainer.world_size)

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, image: torch.Tensor) -> NetOutput:
        """float32 B×3×H×W (normalised) → :class:`NetOutput` with B×K×H×W mask logits at the input size."""
        return self._forward(image, self._run_net)

    def forward_uncompiled(self, image: torch.Tensor) -> NetOutput:
        """:meth:`forward` through the plain net even when ``compile`` is on (``export`` traces this)."""
        return self._forward(image, self.net)

    def _forward(self, image: torch.Tensor, net: nn.Module) -> NetOutput:
        return forward_at_input_size(net, image, self.size_divisor, self.channels_last)

    def mask_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The net's B×K×H×W mask logits (what :class:`Inference` calls, window by window when sliding)."""
        return self(image).mask

    def classes_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """B×K×H×W logits → int64 B×H×W classes (sigmoid threshold for a one-channel head)."""
        return self.evaluation.classes_from_logits(logits)

    def predict_path(
        self, batch: dict[str, Any], out: NetOutput, truths: list[torch.Tensor] | None = None
    ) -> list[Prediction]:
        """The whole path of ``predict`` for one batch (:meth:`EvaluationPath.predict_path`)."""
        return self.evaluation.predict_path(self.mask_logits, batch, out, truths)

    # ------------------------------------------------------------------------------ image-level labels
    def label_targets(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """The batch's image-level target: int64 (B,) (single) or float32 B×L 0/1 (multi), -100 where
        unknown; None when the data has labels but the batch carries none."""
        return self.label_task.targets(batch.get("label"), batch["mask"])

    def label_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """B×L label logits → float32 B×L probabilities (softmax for single-label, sigmoid for multi)."""
        return self.label_task.probabilities(logits)

    def label_decisions(
        self, probabilities: torch.Tensor, thresholds: torch.Tensor | Sequence[float] | None = None
    ) -> torch.Tensor:
        """float32 B×L probabilities → bool B×L: the argmax one-hot (single), or ``p >= threshold`` per label
        (multi; ``thresholds`` (L,) or None for ``label_thresholds``)."""
        return self.label_task.decisions(probabilities, thresholds)

    def classes_of_labels(self, decisions: torch.Tensor) -> torch.Tensor:
        """bool B×L label decisions → bool B×K: the mask classes they say are present (background always)."""
        return self.label_task.classes_of_labels(decisions)

    def tuned_label_thresholds(self) -> torch.Tensor | None:
        """The multi-label thresholds ``tune`` found, when a ClassThresholds step loaded them (else None:
        ``label_thresholds``)."""
        return self.evaluation.tuned_label_thresholds()

    # ------------------------------------------------------------------------------------------ steps
    def _step(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[dict[str, torch.Tensor], NetOutput, list[torch.Tensor] | None]:
        """Loss and metric updates of one batch; returns the loss terms (``"loss"`` their weighted sum;
        training only, evaluation adds to the split's sums), the net's output and, for ``test`` (scored
        through the whole path), the final int64 H_i×W_i class maps it scored (else None)."""
        image, mask = batch["image"], batch["mask"]
        out = self(image)
        label = None
        if out.label is not None:
            self.label_task.check_head(out.label)
            label = self.label_targets(batch)
        if stage == "train":
            losses = self.loss(out, mask, label)
            self._log_training_losses(losses, mask)
        else:  # the split's sums; the terms are computed once from them at the epoch's end
            losses = {}
            self.eval_loss_sums[f"{stage}_"].update(self.loss.split_sums(out, mask, label))
        with torch.no_grad():
            final = self._score(batch, stage, out.mask.detach(), out.label)
            if out.label is not None and label is not None:
                probabilities = self.label_probabilities(out.label.detach())
                # test decides the labels as predict does: with the tuned thresholds when loaded
                tuned = self.tuned_label_thresholds() if stage == "test" else None
                decisions = self.label_decisions(probabilities, tuned)
                self.label_metrics[f"{stage}_"].update(probabilities, decisions, label)
        return losses, out, final

    def _log_training_losses(self, losses: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        """Per-process values: syncing training losses would stall every step. The step values go to the
        logger only (read on the host every log_every_n_steps); the progress bar shows the epoch mean,
        because Lightning turns every step-level progress-bar value into a float with .item() on every
        step, which waits for the device."""
        # epoch means weigh each batch by its images with a labelled pixel: a batch of wholly ignored masks
        # has loss 0 and weight 0 (a device tensor: no host sync)
        batch_size = (mask != self.ignore_index).flatten(1).any(1).sum()
        self.log("train/loss_step", losses["loss"], on_step=True, on_epoch=False, batch_size=batch_size)
        self.log(
            "train/loss",
            losses["loss"],
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
        )
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/loss/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)

    def _score(
        self,
        batch: dict[str, Any],
        stage: str,
        logits: torch.Tensor,
        label_logits: torch.Tensor | None = None,
    ) -> list[torch.Tensor] | None:
        """Update the stage's metrics; returns the final class maps of the whole path (``test``; None for
        the other stages).

        ``test`` is scored through the whole path that ``predict`` takes (:meth:`EvaluationPath.score`).
        Others decide from the step's own logits: against each mask as stored when the batch carries
        ``orig_mask`` (probabilities resized back to it), else against the mask resized for batching.
        """
        metrics = self.metrics[f"{stage}_"]
        originals = batch.get("orig_mask")
        self.results.stage(stage).scored_at = "original size" if originals is not None else "batch size"
        if stage == "test":
            return self.evaluation.score(self.mask_logits, batch, stage, logits, label_logits, metrics)
        if originals is None:  # the training step's path: no softmax needed
            metrics.update(self.classes_from_logits(logits), batch["mask"])
            return None
        probabilities = to_probabilities(logits)
        for item, original in zip(probabilities, originals, strict=True):  # sizes differ: one at a time
            resized = self.inference.at_size(item, original.shape)
            metrics.update(self.evaluation.classes_from_probabilities(resized[None]), original[None].long())
        return None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        losses = self._step(batch, "train")[0]
        # the terms go to callbacks (DivergenceGuard names them when the loss turns non-finite)
        terms = {name: value.detach() for name, value in losses.items() if name != "loss"}
        return {"loss": losses["loss"], "loss_terms": terms}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Returns ``classes``: the final int64 H_i×W_i class maps at each mask's stored size, what test
        scored (RunPlots ranks images by them)."""
        # the names of the images scored, in the order their counts are kept (one process: host strings)
        self.results.stage("test").image_names.extend(str(name) for name in batch.get("name") or [])
        return {"classes": self._step(batch, "test")[2]}

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Class maps at each image's own size.

        Returns:
            ``{"name": [str], "mask": [uint8 H_i×W_i]}`` (int64 when there are more than 256 classes), one
            entry per image, plus ``"probability": [float32 K×H_i×W_i]`` when ``predict_probabilities``.
            Probabilities come from :attr:`inference` and are resized back to ``orig_size``, then go
            through :attr:`postprocess` to the decision, as in ``test``. ``MaskWriter`` copies each batch's
            masks to the host and writes them on a background thread; the CLI's ``predict`` keeps no
            predictions (``--return_predictions true`` makes Lightning keep them all in host memory).
            Compact masks, and probabilities on request only, keep each batch's copy small.
        """
        out_plain = self(batch["image"])
        predictions = self.predict_path(batch, out_plain)
        mask_dtype = torch.uint8 if self.num_classes <= 256 else torch.int64
        masks = [p.classes.to(mask_dtype) for p in predictions if p.classes is not None]
        names = batch.get("name") or [f"{batch_idx:05d}_{i:03d}" for i in range(len(masks))]
        out: dict[str, Any] = {"name": list(names), "mask": masks}
        if self.predict_probabilities:
            # what the decision read (after a CRF); a one-channel head keeps its one channel
            out["probability"] = [
                p.probabilities[1:] if self.evaluation.binary_head else p.probabilities for p in predictions
            ]
        if out_plain.label is not None:  # a class head: float32 B×L probabilities, bool B×L decisions
            out["label_probability"] = self.label_probabilities(out_plain.label)
            out["label_decision"] = self.label_decisions(
                out["label_probability"], self.tuned_label_thresholds()
            )
        return out

    # -------------------------------------------------------------------------------------- epoch end
    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.metrics[f"{stage}_"]
        losses = self._split_losses(stage)
        if not metrics.updated:  # e.g. tune's calibration pass: nothing to log, nothing to carry over
            self.label_metrics[f"{stage}_"].reset()
            return
        scores = metrics.compute()
        # already synced across processes by torchmetrics; no sync_dist needed
        logged = segmentation_logs(stage, scores, losses, self.class_names)
        if "loss" in losses:
            self.log(f"{stage}/loss", losses["loss"], prog_bar=True)
        label_metric = self.label_metrics[f"{stage}_"]
        if label_metric.update_count:
            label_scores = label_metric.compute()  # synced across processes by torchmetrics
            label_metric.reset()
            record = plain_scores(label_scores, self.label_mode, self.label_names)  # one host copy
            self.results.stage(stage).label_scores = record
            logged.update(label_logs(stage, label_scores, record, self.label_names))
        boundary = self.evaluation.boundary_scores(stage) if stage == "test" else None
        if boundary is not None:  # a collective: every rank
            logged[f"{stage}/boundary_mIoU"] = boundary["boundary_mIoU"]
            present = (~boundary["boundary_iou"].isnan()).tolist()  # one host copy at the epoch's end
            for name, value, known in zip(self.class_names, boundary["boundary_iou"], present, strict=True):
                if known:
                    logged[f"{stage}/boundary_IoU/{name}"] = value
        calibration = self.evaluation.calibration_scores(stage) if stage == "test" else None
        if calibration is not None:  # whether the probabilities mean what they say (a collective: every rank)
            logged.update({f"{stage}/{name}": calibration[name] for name in ("ECE", "ECE_classwise", "NLL")})
            self.results.stage(stage).reliability = calibration["reliability"].cpu()
        if self.score is not None and stage != "train":
            logged[f"{stage}/score"] = composite_score(stage, self.score, logged, scores["mIoU"])
        self.log_dict(logged, prog_bar=False)
        self.log(f"{stage}/mIoU", scores["mIoU"], prog_bar=True)
        results = self.results.stage(stage)
        results.confusion = scores["confusion"].cpu()
        results.table = self.evaluation.table(stage, scores)
        counts = metrics.kept_counts()
        if counts is not None and len(counts):
            self._record_intervals(results, counts.cpu())
        metrics.reset()

    def _record_intervals(self, results: StageResults, counts: torch.Tensor) -> None:
        """The test metrics' bootstrap intervals over the images (and the composite score's), from each
        image's per-class counts; the counts themselves, with the images' names in one process (a paired
        ``compare`` matches two runs by them)."""
        resamples = self.interval_resamples
        found = bootstrap_intervals(
            lambda weights: scores_of_counts(weights, counts, self.class_names),
            len(counts),
            resamples,
            DEFAULT_SEED,
            score=self.score,
        )
        results.intervals = {
            "resamples": resamples,
            "seed": DEFAULT_SEED,
            "level": DEFAULT_LEVEL,
            "unit": "image",
            "images": len(counts),
            "metrics": found,
        }
        results.image_counts = counts
        if self.trainer.world_size > 1 or len(results.image_names) != len(counts):
            results.image_names = []  # each process knows its own names only: no pairing by name

    def _split_losses(self, stage: str) -> dict[str, torch.Tensor]:
        """An evaluation stage's loss terms over the whole split (summed across processes, divided once:
        :mod:`lightning_seg.losses.split_sums`), and the sums reset; {} for training or without an update."""
        sums = self.eval_loss_sums[f"{stage}_"] if f"{stage}_" in self.eval_loss_sums else None
        if sums is None or not sums.update_count:
            return {}
        losses = self.loss.from_split_sums(sums.compute())
        sums.reset()
        return losses

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _start_full_path(self, stage: str) -> None:
        """Before a stage scored (or predicted) through the whole path: read the tuned thresholds of the
        evaluated checkpoint, reset the stage table and the stage's per-image record, and say in the log
        what runs."""
        self.load_postprocess(self.trainer.ckpt_path)
        self.evaluation.start_table(stage)
        self.results.reset(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        test_is_val = getattr(datamodule, "test_is_val", None)
        if stage == "test" and callable(test_is_val) and test_is_val():
            note = (
                f"the test split is the val split ({type(datamodule).__name__} holds no test split of its own): "
                "the checkpoint was chosen, and thresholds are tuned, on these images; hold out data.test_fraction "
                "for an unbiased test"
            )
            self.results.stage(stage).notes = [note]
            rank_zero_warn(f"test: {note}")
        if self.postprocess.needs_image and not getattr(datamodule, "keep_original_images", True):
            # the CLI sets it from this chain; a script that builds the trainer itself says it
            rank_zero_warn(
                f"{stage}: a post-processing step reads each image, and the data module does not keep them "
                "as stored: it reads the batch's images resized back; set datamodule.keep_original_images = "
                "True before the trainer runs"
            )
        rank_zero_info(f"{stage}: {self.evaluation.describe()}")

    def load_postprocess(self, ckpt_path: str | None, postprocess: PostProcess | None = None) -> None:
        """Make a post-processing chain (the model's, or a command's ``postprocess``) ready for the weights of
        ``ckpt_path`` (:meth:`EvaluationPath.load_postprocess`)."""
        self.evaluation.load_postprocess(ckpt_path, self.embedded_thresholds, self.net, postprocess)

    def check_label_consistency(self) -> None:
        """Refuse a LabelConsistency step the net cannot feed (:meth:`EvaluationPath.check_label_consistency`)."""
        self.evaluation.check_label_consistency(self.net)

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not getattr(datamodule, "validates", True):
            return  # the CLI said what a run without validation leaves out
        if datamodule is not None and "val" in getattr(datamodule, "score_at_original_size", ()):
            rank_zero_info("validation: the whole image once, scored at each mask's original size")
        else:
            rank_zero_info(
                "validation: the whole image once, scored at the batch size (fast); test scores at the "
                "original size through model.inference and model.postprocess "
                "(data.score_at_original_size: [val, test] validates at the original size)"
            )

    def on_validation_start(self) -> None:
        # never silently: validate's numbers are the plain path's, not the configured chain's
        if self.trainer.state.fn == "validate":
            rank_zero_info(
                "validate: the whole image once, without model.inference's windows/TTA and without "
                "model.postprocess (those run in test, predict and tune)"
            )

    def on_test_start(self) -> None:
        self._start_full_path("test")

    def on_predict_start(self) -> None:
        self._start_full_path("predict")

    def on_test_end(self) -> None:
        self.postprocess.close()

    def on_predict_end(self) -> None:
        self.postprocess.close()
