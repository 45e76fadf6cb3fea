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

from lightning_seg import random_state
from lightning_seg.class_argmax import class_argmax
from lightning_seg.data.base import IMAGENET_MEAN, IMAGENET_STD
from lightning_seg.errors import ConfigError
from lightning_seg.inference import Inference
from lightning_seg.inference.predictor import to_probabilities
from lightning_seg.labels import (  # noqa: F401  NO_LABEL, dominant_class: still imported from here
    NO_LABEL,
    LabelMode,
    LabelTask,
    dominant_class,
    label_weight_source,
    plain_scores,
    resolve_label_mode,
)
from lightning_seg.losses import CompoundLoss
from lightning_seg.metrics import NamedSums, SegMetrics
from lightning_seg.models.outputs import NetOutput, as_net_output, pad_to_multiple
from lightning_seg.postprocess import PostProcess, Prediction, Step
from lightning_seg.standalone import RECORD_KEY, load_module

NetBuilder = Callable[[int], nn.Module]
"""A net class with its arguments but without ``num_classes``; YAML: ``class_path`` + ``init_args``."""

STAGES = ("train", "val", "test")
UNBUILT_HEAD_MARKERS = (".aux_classifier.", ".label_head.", ".classification_head.")
"""Parameter names of the heads that are not built when their loss weight is 0 (torchvision's aux
classifier, MicroUNet's and SMP's image-level heads)."""


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


def build_net(
    builder: NetBuilder,
    num_classes: int,
    num_labels: int | None,
    derived_labels: bool = False,
    *,
    aux_head: bool = True,
    label_head: bool = True,
    class_names: Sequence[str] | None = None,
) -> nn.Module:
    """Call the net builder with ``num_classes``, and with ``num_labels`` when the data has image-level
    classes and the net takes a ``num_labels`` the config left null (so a config never states it twice).

    With ``derived_labels`` (labels made from the masks) only a net that has a class head when its
    ``num_labels`` is null (``label_head_by_default``, e.g. MicroUNet) is given ``num_labels``: its head is
    sized for the labels, and a net without a head by default (SMPNet) does not grow one.

    ``aux_head=False`` / ``label_head=False`` (the loss gives that head weight 0) build the net without it:
    an untrained head would cost a forward pass per step, and its parameters, without gradients, stop DDP
    (which runs without ``find_unused_parameters``). A net that takes ``aux_loss`` gets ``aux_loss=False``;
    no net is given ``num_labels``, except ``num_labels=0`` (no head) for a net with a head by default. A
    config that asks for the head itself (``aux_loss: true``, ``num_labels`` > 0) raises ConfigError.

    A net that takes ``class_names`` (pretrained nets compare them with the classes of their weights) is given
    the data's ``class_names`` when its config leaves them null.
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    # a CLI builder is a partial whose keywords hold every init_arg, the defaults included
    keywords = getattr(builder, "keywords", None) or {}
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        parameters = {}

    def takes(name: str) -> bool:
        return name in keywords or name in parameters

    if not aux_head and takes("aux_loss"):
        if keywords.get("aux_loss"):
            raise ConfigError(
                "model.net aux_loss: true contradicts model.loss aux_weight: 0 (the aux head would run "
                "untrained and leave DDP parameters without gradients); set aux_loss: null (or false) or aux_weight > 0"
            )
        kwargs["aux_loss"] = False
    given = keywords.get("num_labels")
    by_default = getattr(_net_class(builder), "label_head_by_default", False)
    if not label_head:
        if given:
            raise ConfigError(
                f"model.net num_labels: {given} contradicts model.loss label_weight: 0 (the image-level head "
                "would run untrained and leave DDP parameters without gradients); set num_labels: null (or 0) or "
                "label_weight > 0"
            )
        if given is None and by_default and takes("num_labels"):
            kwargs["num_labels"] = 0
    elif num_labels is not None and given is None and takes("num_labels"):
        if not derived_labels or by_default:
            kwargs["num_labels"] = num_labels
    if class_names is not None and takes("class_names") and keywords.get("class_names") is None:
        kwargs["class_names"] = list(class_names)
    return builder(**kwargs)


def _net_class(builder: Any) -> type | None:
    """The net class a builder makes: the class itself, or the class a partial (a CLI builder) calls."""
    if isinstance(builder, type):
        return builder
    candidates = [getattr(builder, "func", None), *getattr(builder, "args", ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, nn.Module)), None)


class SegmentationModule(L.LightningModule):
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
        postprocess: the steps after inference, in the order probabilities → decision → class map
            (:mod:`lightning_seg.postprocess`: DenseCRF, ClassThresholds, LabelConsistency, SmallComponents);
            applied by ``test``, ``predict`` and ``tune`` alike, never by validation inside ``fit``.
        mean: the data's normalisation mean (linked from the data module; undoes it for steps that read
            the image).
        std: the data's normalisation std (linked from the data module).
        channels_last: run the net in channels-last memory format (faster convolutions on GPUs).
        compile: wrap the net in ``torch.compile``. Under DDP the compiled net runs inside DDP's forward,
            where Dynamo splits its graph at DDP's gradient buckets (DDPOptimizer, torch's default), so the
            all-reduces overlap the backward (tests/test_ddp.py checks the condition).
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
        loss: CompoundLoss | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] | None = None,
        scheduler_monitor: str = "val/loss",
        binary_threshold: float = 0.5,
        predict_probabilities: bool = False,
        inference: Inference | None = None,
        postprocess: list[Step] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
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
        self.label_mode = resolve_label_mode(label_mode, label_names)
        derived = not label_names
        if derived:
            names = self.class_names[1:] if self.label_mode == "multi" else self.class_names
        else:
            names = list(label_names)
        self.label_names = list(names)
        self.label_task = LabelTask(
            self.label_mode,
            names,
            self.class_names,
            derived,
            label_thresholds,
            num_classes,
            ignore_index,
            label_classes=label_classes or None,
        )
        # the loss first: a head it gives weight 0 is not built (see build_net)
        loss = loss if loss is not None else CompoundLoss()
        self.net = build_net(
            net,
            num_classes,
            len(names),
            derived_labels=derived,
            aux_head=loss.aux_weight > 0,
            label_head=loss.label_weight > 0,
            class_names=self.class_names,
        )
        self.size_divisor = int(getattr(self.net, "size_divisor", 1))
        self.loss = loss
        self.loss.bind(num_classes, ignore_index)
        self.loss.bind_labels(self.label_mode, len(names))
        self.optimizer_builder = optimizer
        self.scheduler_builder = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.binary_threshold = binary_threshold
        self.predict_probabilities = predict_probabilities
        self.inference = inference if inference is not None else Inference()
        self.postprocess = PostProcess(postprocess or [])
        for step in self.postprocess.steps:
            bind = getattr(step, "bind", None)
            if callable(bind):
                bind(self.class_names)
        self.mean = tuple(mean) if mean is not None else IMAGENET_MEAN
        self.std = tuple(std) if std is not None else IMAGENET_STD
        # per stage: whether the last batch was scored at the masks' original size or the batch's
        self.scored_at: dict[str, str] = {}
        # the stages scored through the whole path (inference, post-processing) with a stage table
        self.full_path_stages: set[str] = {"test"}
        # one SegMetrics per row of the stage table ("<stage>_<row>"), made when the stage starts
        self.stage_metrics = nn.ModuleDict()
        self.stage_names: dict[str, list[str]] = {}
        self.stage_table: dict[str, list[dict[str, Any]]] = {}
        # set by `tune` for its calibration pass (lightning_seg.commands.tune.ThresholdSearch)
        self.threshold_search: Any = None
        # set by `attack` for its pass (lightning_seg.commands.attack.RobustnessPass); test_step feeds it
        self.robustness: Any = None
        # what rebuilds this model from its checkpoint alone, as plain data (lightning_seg.standalone);
        # the CLI gives it (it holds the resolved config), every checkpoint saved carries it
        self.standalone_record: dict[str, Any] | None = None
        # thresholds carried by the loaded checkpoint (export's bundle)
        self.embedded_thresholds: dict[str, Any] | None = None
        self._binary_head = False
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
        # each evaluation stage's loss sums (numerators and denominators), divided once at the epoch's end
        self.eval_loss_sums = nn.ModuleDict(
            {f"{stage}_": NamedSums() for stage in STAGES if stage != "train"}
        )
        self.metrics = nn.ModuleDict({f"{stage}_": SegMetrics(num_classes, ignore_index) for stage in STAGES})
        self.label_metrics = nn.ModuleDict({f"{stage}_": self.label_task.new_metrics() for stage in STAGES})
        # image-label scores of each stage's last epoch (confusion, per-label precision/recall), for the
        # run summary
        self.last_label_scores: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        # a class-weight rule reads the data module's training statistics, lazily and only if the weights
        # are not restored from a checkpoint (see on_load_checkpoint)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.loss.weights_pending:
            self.loss.bind(self.num_classes, self.ignore_index, getattr(datamodule, "class_weights", None))
        if self.loss.label_weights_pending:  # the same for label weights, from the label counts
            source = label_weight_source(datamodule, self.label_task)
            self.loss.bind_labels(self.label_mode, len(self.label_names), source)
        if stage == "fit":
            # before DDP wraps the net: parameters the logits never use must not wait for gradients
            freeze_unused = getattr(self.net, "freeze_unused_parameters", None)
            if callable(freeze_unused):
                freeze_unused()
        if stage == "fit" and self.trainer.ckpt_path is None:
            self._resolve_weights_on_rank_zero()
        evaluated = (
            stage in ("test", "predict")
            or self.threshold_search is not None
            or "val" in self.full_path_stages
        )
        if evaluated and self.postprocess.needs_image and datamodule is not None:
            # the one hand-off back to the data: a CRF reads each image as stored, at the size it scores
            keep = getattr(datamodule, "keep_original_image_of_evaluation_splits", None)
            if callable(keep):
                keep()

    def _resolve_weights_on_rank_zero(self) -> None:
        """Resolve class- and label-weight rules before training starts: rank 0 reads the data's statistics
        (one cached pass over the training masks) and broadcasts the weights, so the other DDP ranks neither
        repeat the pass nor stall inside the first step. A resumed fit restores them from its checkpoint."""
        strategy = self.trainer.strategy
        for pending, weights, assign in (
            (self.loss.weights_pending, self.loss.pixel_weights, self.loss.set_class_weights),
            (self.loss.label_weights_pending, self.loss.label_weights, self.loss.set_label_class_weights),
        ):
            if not pending:
                continue
            payload: tuple[torch.Tensor | None, str | None] | None = None
            failure: Exception | None = None
            if self.trainer.is_global_zero:
                try:
                    payload = (weights.resolved(), None)
                except Exception as error:  # sent to every rank, so that all stop (none waits in broadcast)
                    failure, payload = error, (None, str(error))
            resolved, message = strategy.broadcast(payload, src=0)
            if failure is not None:
                raise failure
            if message is not None:
                raise ConfigError(message)
            assign(resolved)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.loss.weight_tensor is not None:
            checkpoint["loss_class_weights"] = self.loss.weight_tensor.cpu()
        if self.loss.label_weight_tensor is not None:
            checkpoint["loss_label_class_weights"] = self.loss.label_weight_tensor.cpu()
        if self._trainer is not None and self.trainer.state.fn == "fit":
            checkpoint["random_state"] = self._random_state()
        if self.standalone_record is not None:
            checkpoint[RECORD_KEY] = self.standalone_record

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
        return class_argmax(logits, 1)

    def classes_from_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """B×K×H×W probabilities → int64 B×H×W classes: the most probable class (a one-channel head: the
        foreground where its probability exceeds ``binary_threshold``)."""
        if probabilities.shape[1] == 1:
            return (probabilities[:, 0] > self.binary_threshold).long()
        return class_argmax(probabilities, 1)

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

    def _tuned_label_thresholds(self) -> torch.Tensor | None:
        """The multi-label thresholds ``tune`` found, when a ClassThresholds step loaded them (else None:
        ``label_thresholds``)."""
        thresholds = self.postprocess.thresholds
        return thresholds.labels if thresholds is not None else None

    def classes_of_labels(self, decisions: torch.Tensor) -> torch.Tensor:
        """bool B×L label decisions → bool B×K: the mask classes they say are present (background always)."""
        return self.label_task.classes_of_labels(decisions)

    def _mask_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The net's mask logits (what :class:`Inference` calls, window by window when sliding)."""
        return self(image).mask

    # ------------------------------------------------------------------------------------------ steps
    def _step(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor] | None]:
        """Loss and metric updates of one batch; returns the loss terms (``"loss"`` their weighted sum;
        training only, evaluation adds to the split's sums) and, for a stage scored through the whole path,
        the final int64 H_i×W_i class maps it scored (else None)."""
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
                tuned = self._tuned_label_thresholds() if stage in self.full_path_stages else None
                decisions = self.label_decisions(probabilities, tuned)
                self.label_metrics[f"{stage}_"].update(probabilities, decisions, label)
        return losses, final

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
        """Update the stage's metrics; returns the final class maps of :meth:`_full_path` (None for the
        other stages).

        The stages in :attr:`full_path_stages` (``test``) are scored through the whole path that
        ``predict`` takes (:meth:`_full_path`). Others decide from the training step's own logits: against
        each mask as stored when the batch carries ``orig_mask`` (probabilities resized back to it), else
        against the mask resized for batching.
        """
        metrics = self.metrics[f"{stage}_"]
        originals = batch.get("orig_mask")
        self.scored_at[stage] = "original size" if originals is not None else "batch size"
        if stage in self.full_path_stages or self.threshold_search is not None:
            return self._full_path(batch, stage, logits, label_logits)
        if originals is None:  # the training step's path: no softmax needed
            metrics.update(self.classes_from_logits(logits), batch["mask"])
            return None
        probabilities = to_probabilities(logits)
        for item, original in zip(probabilities, originals, strict=True):  # sizes differ: one at a time
            resized = self.inference.at_size(item, original.shape)
            metrics.update(self.classes_from_probabilities(resized[None]), original[None].long())
        return None

    # ------------------------------------------------------------------------ the inference path
    def _two_channels(self, probabilities: torch.Tensor) -> torch.Tensor:
        """B×K×H×W probabilities with a one-channel (sigmoid) head given as [1 - p, p], so every step and
        decision sees K ≥ 2 channels."""
        self._binary_head = probabilities.shape[1] == 1
        return torch.cat([1 - probabilities, probabilities], 1) if self._binary_head else probabilities

    def _decide_plain(self, prediction: Prediction) -> None:
        """The decision without thresholds: the argmax (a one-channel head: ``p > binary_threshold``)."""
        probabilities = prediction.probabilities
        if self._binary_head:  # back to the head's one channel for classes_from_probabilities
            probabilities = probabilities[1:]
        prediction.classes = self.classes_from_probabilities(probabilities[None])[0]

    def inference_probabilities(
        self, image: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """float32 B×K×H×W probabilities of :attr:`inference` (K ≥ 2, see :meth:`_two_channels`), at the
        batch's size; ``logits`` (the plain pass, when already computed) spare a forward pass."""
        if self.inference.is_plain:
            if logits is None:
                logits = self._mask_logits(image)
            return self._two_channels(to_probabilities(logits))
        return self._two_channels(self.inference.probabilities(self._mask_logits, image, logits))

    def _original_images(self, batch: dict[str, Any], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """uint8 3×h×w images at the sizes predictions are made at: as stored (``orig_image``), else the
        batch's images with the normalisation undone (and resized, when the data gave no original)."""
        if "orig_image" in batch:
            return list(batch["orig_image"])
        image = batch["image"]
        mean = torch.tensor(self.mean, device=image.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=image.device).view(1, -1, 1, 1)
        rgb = (image * std + mean).clamp(0, 1)
        out = []
        for item, size in zip(rgb, sizes, strict=True):
            if tuple(item.shape[-2:]) != tuple(size):
                item = F.interpolate(item[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
            out.append((item * 255).round().to(torch.uint8))
        return out

    def _predictions(
        self,
        probabilities: torch.Tensor,
        batch: dict[str, Any],
        sizes: list[tuple[int, int]],
        label_logits: torch.Tensor | None,
        truths: list[torch.Tensor] | None = None,
    ) -> list[Prediction]:
        """One :class:`Prediction` per image at its size, with what the post-processing steps read."""
        images = self._original_images(batch, sizes) if self.postprocess.needs_image else None
        present = self._present_classes(label_logits, truths)
        return [
            Prediction(
                probabilities=self.inference.at_size(item, size),
                image=images[i] if images is not None else None,
                present_classes=present[i] if present is not None else None,
            )
            for i, (item, size) in enumerate(zip(probabilities, sizes, strict=True))
        ]

    def _present_classes(
        self, label_logits: torch.Tensor | None, truths: list[torch.Tensor] | None
    ) -> torch.Tensor | None:
        """bool B×K: the mask classes each image holds according to the image-level head (its tuned
        thresholds when loaded), or to the true masks for LabelConsistency's oracle ablation."""
        from lightning_seg.postprocess import LabelConsistency

        consistency = self.postprocess.find(LabelConsistency)
        if consistency is None:
            return None
        if getattr(consistency, "oracle", False):
            if truths is None:
                raise ConfigError(
                    "model.postprocess LabelConsistency oracle: true needs masks (test, not predict)"
                )
            classes = torch.arange(self.num_classes, device=truths[0].device)
            return torch.stack([(t.long().flatten()[:, None] == classes).any(0) for t in truths])
        if label_logits is None:
            return None
        decisions = self.label_decisions(
            self.label_probabilities(label_logits), self._tuned_label_thresholds()
        )
        return self.classes_of_labels(decisions)

    def predict_path(
        self, batch: dict[str, Any], out: NetOutput, truths: list[torch.Tensor] | None = None
    ) -> list[Prediction]:
        """The whole path of ``predict`` for one batch: :attr:`inference` → probabilities resized back to
        each image's original size → :attr:`postprocess` → class maps.

        Args:
            batch: the batch as the data module gives it (normalised float32 B×3×H×W ``image``; ``orig_size``
                int64 B×2, else the batch's size is each image's).
            out: the plain forward pass of ``batch["image"]`` (its logits spare inference a pass).
            truths: int64 H_i×W_i true masks, only for LabelConsistency's oracle ablation.

        Returns:
            one :class:`Prediction` per image, ``classes`` int64 H_i×W_i.
        """
        image = batch["image"]
        probabilities = self.inference_probabilities(image, out.mask)
        if "orig_size" in batch:
            sizes = [tuple(s) for s in batch["orig_size"].tolist()]
        else:
            sizes = [tuple(image.shape[-2:])] * len(image)
        predictions = self._predictions(probabilities, batch, sizes, out.label, truths)
        self.postprocess.run(predictions, self._decide_plain)
        return predictions

    def _stage_rows(self, stage: str) -> list[str]:
        """The names of the stage table's rows: the plain pass, + inference, + each post-processing step."""
        rows = ["raw"]
        if not self.inference.is_plain:
            rows.append("+ " + self.inference.describe())
        return rows + ["+ " + name for name in self.postprocess.describe()]

    def _full_path(
        self, batch: dict[str, Any], stage: str, logits: torch.Tensor, label_logits: torch.Tensor | None
    ) -> list[torch.Tensor] | None:
        """Score a batch as ``predict`` sees it: inference → post-processing → decision, at each mask's
        stored size, updating one metric per row of the stage table (the last row is the stage's metrics).
        Returns the final int64 H_i×W_i class maps it scored (None during ``tune``'s calibration pass, where
        the probabilities before the decision fill its histograms instead)."""
        originals = batch.get("orig_mask")
        truths = [o.long() for o in originals] if originals is not None else list(batch["mask"])
        sizes = [tuple(t.shape[-2:]) for t in truths]
        probabilities = self.inference_probabilities(batch["image"], logits)
        predictions = self._predictions(probabilities, batch, sizes, label_logits, truths)
        if self.threshold_search is not None:
            for step in self.postprocess.before_decision():
                step.apply(predictions)
            search = self.threshold_search
            label_probabilities = label_targets = None
            if search.labels is not None and label_logits is not None:
                label_probabilities = self.label_probabilities(label_logits)
                label_targets = self.label_targets(batch)
            search.update(predictions, truths, label_probabilities, label_targets)
            return None
        names = self.stage_names.setdefault(stage, self._stage_rows(stage))
        rows = iter(range(len(names)))

        def report(_: str, items: list[Prediction]) -> None:
            row = self._stage_metric(stage, next(rows))
            for item, truth in zip(items, truths, strict=True):
                assert item.classes is not None
                row.update(item.classes[None], truth[None])

        if not self.inference.is_plain:  # the raw row: the plain pass's own logits, resized back
            plain = self._two_channels(to_probabilities(logits))
            raw = [Prediction(self.inference.at_size(p, size)) for p, size in zip(plain, sizes, strict=True)]
            PostProcess.decide_all(raw, self._decide_plain)
            report("raw", raw)
        PostProcess.decide_all(predictions, self._decide_plain)
        report("inference", predictions)
        self.postprocess.run(predictions, self._decide_plain, report)
        return [item.classes for item in predictions if item.classes is not None]

    def _stage_metric(self, stage: str, row: int) -> SegMetrics:
        """The metrics of one row of the stage table; the last row's are the stage's own (what it logs)."""
        if row == len(self.stage_names[stage]) - 1:
            return self.metrics[f"{stage}_"]
        key = f"{stage}_{row}"
        if key not in self.stage_metrics:
            self.stage_metrics[key] = SegMetrics(self.num_classes, self.ignore_index).to(self.device)
        return self.stage_metrics[key]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        losses = self._step(batch, "train")[0]
        # the terms go to callbacks (DivergenceGuard names them when the loss turns non-finite)
        terms = {name: value.detach() for name, value in losses.items() if name != "loss"}
        return {"loss": losses["loss"], "loss_terms": terms}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """Returns ``classes``: the final int64 H_i×W_i class maps at each mask's stored size, what test
        scored (RunPlots ranks images by them)."""
        if self.robustness is not None:  # `attack`: its pass scores clean and adversarial images itself
            self.robustness.step(batch, batch_idx)
            return None
        return {"classes": self._step(batch, "test")[1]}

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
                p.probabilities[1:] if self._binary_head else p.probabilities for p in predictions
            ]
        if out_plain.label is not None:  # a class head: float32 B×L probabilities, bool B×L decisions
            out["label_probability"] = self.label_probabilities(out_plain.label)
            out["label_decision"] = self.label_decisions(
                out["label_probability"], self._tuned_label_thresholds()
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
        logged = {f"{stage}/{name}": scores[name] for name in ("dice", "dice_fg", "acc")}
        logged.update({f"{stage}/loss/{name}": value for name, value in losses.items() if name != "loss"})
        if "loss" in losses:
            self.log(f"{stage}/loss", losses["loss"], prog_bar=True)
        for name in ("IoU_fg", "image_IoU", "image_dice_fg", "image_IoU_fg", "competition_dice"):
            if name in scores:
                logged[f"{stage}/{name}"] = scores[name]
        # one host copy for the NaN test (classes absent from the whole evaluation are not logged)
        for class_name, value, present in zip(
            self.class_names, scores["iou"], (~scores["iou"].isnan()).tolist(), strict=True
        ):
            if present:
                logged[f"{stage}/IoU/{class_name}"] = value
        label_metric = self.label_metrics[f"{stage}_"]
        if label_metric.update_count:
            label_scores = label_metric.compute()  # synced across processes by torchmetrics
            label_metric.reset()
            for name in ("f1", "acc", "mAP"):
                if name in label_scores:
                    logged[f"{stage}/label_{name}"] = label_scores[name]
            record = plain_scores(label_scores, self.label_mode, self.label_names)  # one host copy
            self.last_label_scores[stage] = record
            for kind in ("precision", "recall"):
                for label_name, value, known in zip(
                    self.label_names, label_scores[kind], record[kind], strict=True
                ):
                    if known is not None:  # undefined (no prediction / no target of the label): not logged
                        logged[f"{stage}/label_{kind}/{label_name}"] = value
        self.log_dict(logged, prog_bar=False)
        self.log(f"{stage}/mIoU", scores["mIoU"], prog_bar=True)
        self.last_confusion[stage] = scores["confusion"].cpu()
        if stage in self.stage_names:
            self.stage_table[stage] = self._stage_table(stage, scores)
        metrics.reset()

    def _split_losses(self, stage: str) -> dict[str, torch.Tensor]:
        """An evaluation stage's loss terms over the whole split (summed across processes, divided once:
        :mod:`lightning_seg.split_loss`), and the sums reset; {} for training or without an update."""
        sums = self.eval_loss_sums[f"{stage}_"] if f"{stage}_" in self.eval_loss_sums else None
        if sums is None or not sums.update_count:
            return {}
        losses = self.loss.from_split_sums(sums.compute())
        sums.reset()
        return losses

    def _stage_table(self, stage: str, final: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One row per stage of the path (raw; + inference; + each post-processing step): mIoU, Dice, the
        per-image foreground Dice and the per-class IoU. Synced across processes by torchmetrics. The last
        row is ``final``, the stage's own scores."""
        table = []
        names = self.stage_names[stage]
        for row, name in enumerate(names):
            key = f"{stage}_{row}"
            if row == len(names) - 1:
                scores = final
            elif key in self.stage_metrics:
                scores = self.stage_metrics[key].compute()
                self.stage_metrics[key].reset()
            else:
                continue
            entry: dict[str, Any] = {"stage": name}
            for field in (
                "mIoU",
                "dice",
                "dice_fg",
                "image_dice_fg",
                "image_IoU_fg",
                "competition_dice",
                "acc",
            ):
                if field in scores:
                    value = float(scores[field])
                    entry[field] = None if value != value else round(value, 6)
            entry["IoU"] = {
                class_name: None if value != value else round(value, 6)
                for class_name, value in zip(self.class_names, scores["iou"].tolist(), strict=True)
            }
            table.append(entry)
        return table

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def _start_full_path(self, stage: str) -> None:
        """Before a stage scored (or predicted) through the whole path: read the tuned thresholds of the
        evaluated checkpoint, reset the stage table, and say in the log what runs."""
        from lightning.pytorch.utilities import rank_zero_info

        if self.threshold_search is None:
            self.load_postprocess(self.trainer.ckpt_path)
        else:
            self._check_label_consistency()
        self.stage_names.pop(stage, None)
        for key in [k for k in self.stage_metrics if k.startswith(f"{stage}_")]:
            del self.stage_metrics[key]
        steps = " → ".join(self.postprocess.describe()) or "none"
        rank_zero_info(f"{stage}: inference {self.inference.describe()}; post-processing: {steps}")

    def load_postprocess(self, ckpt_path: str | None) -> None:
        """Make the post-processing chain ready for the weights of ``ckpt_path``: read its tuned thresholds
        (beside it, or carried by it), and refuse a LabelConsistency step the net cannot feed."""
        thresholds = self.postprocess.thresholds
        if thresholds is not None:
            thresholds.load(
                self.class_names,
                ckpt_path,
                inference=self.inference.describe(),
                tuned_after=[step.describe() for step in self.postprocess.before_decision()],
                label_names=self.label_names if self.label_mode == "multi" else None,
                embedded=self.embedded_thresholds,
            )
        self._check_label_consistency()

    def on_fit_start(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and "val" in getattr(datamodule, "score_at_original_size", ()):
            rank_zero_info("validation: the whole image once, scored at each mask's original size")
        else:
            rank_zero_info(
                "validation: the whole image once, scored at the batch size (fast); test scores at the "
                "original size through model.inference and model.postprocess "
                "(data.score_at_original_size: [val, test] validates at the original size)"
            )

    def _check_label_consistency(self) -> None:
        """LabelConsistency reads a multi-label head, or a single-label one on labels that name classes;
        refuse what it would misread (before a pass over the data, not at its first batch)."""
        from lightning_seg.postprocess import LabelConsistency

        step = self.postprocess.find(LabelConsistency)
        if step is None or getattr(step, "oracle", False):
            return
        if getattr(self.net, "label_head", None) is None:
            raise ConfigError(
                f"model.postprocess LabelConsistency: the net ({type(self.net).__name__}) has no image-level "
                "head; use a net with one (MicroUNet) and model.loss label_weight > 0, or oracle: true for the "
                "ablation"
            )
        if self.label_mode == "single" and self.label_task.derived:
            raise ConfigError(
                "model.postprocess LabelConsistency: a single-label head trained on each mask's dominant class "
                "would remove every other class of an image; train with model.label_mode: multi"
            )

    def on_test_start(self) -> None:
        self._start_full_path("test")

    def on_predict_start(self) -> None:
        self._start_full_path("predict")

    def on_validation_start(self) -> None:
        if "val" in self.full_path_stages and not self.trainer.sanity_checking:
            self._start_full_path("val")
        elif self.trainer.state.fn == "validate" and self.threshold_search is None:
            from lightning.pytorch.utilities import rank_zero_info

            # never silently: validate's numbers are the plain path's, not the configured chain's
            rank_zero_info(
                "validate: the whole image once, without model.inference's windows/TTA and without "
                "model.postprocess (those run in test, predict and tune)"
            )

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def on_test_end(self) -> None:
        self.postprocess.close()

    def on_validation_end(self) -> None:
        if "val" in self.full_path_stages or self.threshold_search is not None:
            self.postprocess.close()  # tune's passes: the CRF's process pool

    def on_predict_end(self) -> None:
        self.postprocess.close()

    # ------------------------------------------------------------------------------------- optimizers
    def scheduler_with_total_steps(self, total_steps: int) -> tuple[LRSchedulerCallable, bool]:
        """The scheduler builder with a null ``total_steps`` filled in with ``total_steps`` (the run's
        optimizer-step count), and whether it was; OneCycleLR given epochs + steps_per_epoch is left alone."""
        builder = self.scheduler_builder
        keywords = getattr(builder, "keywords", {}) or {}
        if "total_steps" in keywords and keywords["total_steps"] is None and keywords.get("epochs") is None:
            return functools.partial(builder, total_steps=total_steps), True
        return builder, False

    def _check_optimizer_precision(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse an ``eps`` that is 0 in the weights' dtype: with ``precision: 16-true`` Adam's state is
        float16, its default eps 1e-8 rounds to 0 there, and a parameter without gradient divides 0 by 0
        (NaN at the first step)."""
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)
        for group in optimizer.param_groups:
            eps = group.get("eps")
            if isinstance(eps, float) and 0 < eps and torch.tensor(eps, dtype=dtype) == 0:
                raise ConfigError(
                    f"model.optimizer eps {eps:g} is 0 in {dtype} (trainer.precision "
                    f"{self.trainer.precision}): {type(optimizer).__name__} would divide by it; set "
                    "model.optimizer.init_args.eps: 1e-4, or use a mixed precision (16-mixed, bf16-mixed)"
                )

    def configure_optimizers(self) -> Any:
        # only trainable parameters: a finetuning callback adds the frozen backbone as its own group later
        optimizer = self.optimizer_builder([p for p in self.parameters() if p.requires_grad])
        self._check_optimizer_precision(optimizer)
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
