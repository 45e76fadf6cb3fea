"""``EvaluationPath``: the one path after training, shared by ``test``, ``predict``, ``submit``, ``tune`` and
``attack``.

A batch's plain forward pass (or :class:`~lightning_seg.inference.Inference`'s windows and TTA) → float32
B×K×H×W probabilities → each image's probabilities resized back to its original size → the post-processing
chain (:class:`~lightning_seg.postprocess.PostProcess`) → int64 H_i×W_i class maps. ``test`` scores a batch
through it row by row (:meth:`EvaluationPath.score`: the stage table, raw → + inference → + each step), so the
number ``test`` prints is what ``predict`` writes. The chain is an argument wherever a command runs another one
(``tune``'s before/after pass); the model's own otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lightning_seg.errors import ConfigError
from lightning_seg.inference import Inference
from lightning_seg.inference.predictor import to_probabilities
from lightning_seg.labels import LabelTask
from lightning_seg.metrics import SegMetrics
from lightning_seg.metrics.boundary import BoundaryIoU
from lightning_seg.metrics.calibration import CalibrationBins
from lightning_seg.models.outputs import NetOutput
from lightning_seg.postprocess import LabelConsistency, PostProcess, Prediction
from lightning_seg.postprocess.temperature import TemperatureScaling
from lightning_seg.postprocess.thresholds import ThresholdHistogram, precision_recall_curve
from lightning_seg.utils.class_argmax import class_argmax

MaskLogits = Callable[[torch.Tensor], torch.Tensor]
"""The net on a normalised float B×3×H×W batch → B×K×H×W mask logits (what inference calls per window)."""

CURVE_STEPS = 1001
"""Thresholds of the foreground precision-recall curve (0.000 .. 1.000 by 0.001): a trained head puts most
pixels above 0.99, where tune's 101 bins would lump them into one point of the curve."""

TABLE_FIELDS = ("mIoU", "dice", "dice_fg", "image_dice_fg", "image_IoU_fg", "competition_dice", "acc")
"""The scores of each stage-table row (then the per-class IoU)."""


class EvaluationPath(nn.Module):
    """Probabilities, post-processing and class maps of a batch, and the stage table that scores each step.

    Args:
        inference: how images become probabilities (resize or sliding window, TTA).
        postprocess: the model's chain after inference.
        num_classes: K.
        ignore_index: target pixels left out of the scores.
        class_names: K names (the stage table's per-class IoU).
        label_task: the image-level head's task (LabelConsistency reads its decisions).
        binary_threshold: the foreground threshold of a one-channel (sigmoid) head.
        mean: the data's normalisation mean (undone for steps that read the image).
        std: the data's normalisation std.
        boundary_iou: also score test's final class maps by Boundary IoU (:mod:`lightning_seg.metrics.boundary`).
    """

    def __init__(
        self,
        inference: Inference,
        postprocess: PostProcess,
        num_classes: int,
        ignore_index: int,
        class_names: Sequence[str],
        label_task: LabelTask,
        binary_threshold: float,
        mean: Sequence[float],
        std: Sequence[float],
        boundary_iou: bool = False,
    ) -> None:
        super().__init__()
        self.inference = inference
        self.boundary_iou = boundary_iou
        # test's Boundary IoU sums (created on first use)
        self.boundary_sums = nn.ModuleDict()
        self.postprocess = postprocess
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names)
        # held, not owned: the module owns the task (its metrics are the module's children)
        self.__dict__["label_task"] = label_task
        self.binary_threshold = binary_threshold
        self.mean = tuple(mean)
        self.std = tuple(std)
        # whether the net has a one-channel (sigmoid) head: known from the first probabilities seen
        self.binary_head = False
        # per stage: the stage table's row names, and one SegMetrics per row but the last ("<stage>_<row>")
        self.row_names: dict[str, list[str]] = {}
        self.row_metrics = nn.ModuleDict()
        # per stage: a one-channel head's binned foreground probabilities of the pixels scored, for the
        # precision-recall curve (states not persistent: checkpoints are unchanged)
        self.foreground_counts = nn.ModuleDict()
        # test's reliability bins and NLL of the probabilities the decision reads (created on first use)
        self.calibration_bins = nn.ModuleDict()

    # ---------------------------------------------------------------------------------- decisions
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

    def two_channels(self, probabilities: torch.Tensor) -> torch.Tensor:
        """B×K×H×W probabilities with a one-channel (sigmoid) head given as [1 - p, p], so every step and
        decision sees K ≥ 2 channels."""
        self.binary_head = probabilities.shape[1] == 1
        return torch.cat([1 - probabilities, probabilities], 1) if self.binary_head else probabilities

    def decide_plain(self, prediction: Prediction) -> None:
        """The decision without thresholds: the argmax (a one-channel head: ``p > binary_threshold``)."""
        probabilities = prediction.probabilities
        if self.binary_head:  # back to the head's one channel for classes_from_probabilities
            probabilities = probabilities[1:]
        prediction.classes = self.classes_from_probabilities(probabilities[None])[0]

    def tuned_label_thresholds(self, postprocess: PostProcess | None = None) -> torch.Tensor | None:
        """The multi-label thresholds ``tune`` found, when the chain's ClassThresholds loaded them (else
        None: the head's ``label_thresholds``)."""
        thresholds = (postprocess or self.postprocess).thresholds
        return thresholds.labels if thresholds is not None else None

    def describe(self, postprocess: PostProcess | None = None) -> str:
        """What runs, for the log: ``inference resize; post-processing: thresholds → components``."""
        steps = " → ".join((postprocess or self.postprocess).describe()) or "none"
        return f"inference {self.inference.describe()}; post-processing: {steps}"

    # ------------------------------------------------------------------------------ the chain's state
    def load_postprocess(
        self,
        ckpt_path: str | None,
        embedded: dict[str, Any] | None,
        net: nn.Module,
        postprocess: PostProcess | None = None,
    ) -> None:
        """Make a chain (the model's, or a command's ``postprocess``) ready for the weights of ``ckpt_path``:
        read its tuned thresholds (beside it, or ``embedded`` in it), and refuse a LabelConsistency step
        ``net`` cannot feed."""
        chain = postprocess or self.postprocess
        thresholds = chain.thresholds
        temperature = chain.find(TemperatureScaling)
        if isinstance(temperature, TemperatureScaling):
            given = thresholds.path if thresholds is not None else None
            temperature.load(self.class_names, ckpt_path, given, embedded)
        if thresholds is not None:
            task = self.label_task
            thresholds.load(
                self.class_names,
                ckpt_path,
                inference=self.inference.describe(),
                tuned_after=[step.describe() for step in chain.before_decision()],
                label_names=list(task.names) if task.mode == "multi" else None,
                embedded=embedded,
            )
        self.check_label_consistency(net, chain)

    def check_label_consistency(self, net: nn.Module, postprocess: PostProcess | None = None) -> None:
        """LabelConsistency reads a multi-label head, or a single-label one on labels that name classes;
        refuse what it would misread (before a pass over the data, not at its first batch)."""
        step = (postprocess or self.postprocess).find(LabelConsistency)
        if step is None or getattr(step, "oracle", False) or getattr(step, "table", None) is not None:
            return
        if getattr(net, "label_head", None) is None:
            raise ConfigError(
                f"model.postprocess LabelConsistency: the net ({type(net).__name__}) has no image-level "
                "head; use a net with one (MicroUNet) and model.loss label_weight > 0, another model's labels "
                "(labels: <labels.csv>, e.g. the image classifier's predict output), or oracle: true for the "
                "ablation"
            )
        if self.label_task.mode == "single" and self.label_task.derived:
            raise ConfigError(
                "model.postprocess LabelConsistency: a single-label head trained on each mask's dominant class "
                "would remove every other class of an image; train with model.label_mode: multi"
            )

    # ------------------------------------------------------------------------------ probabilities
    def probabilities(
        self, mask_logits: MaskLogits, image: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """float32 B×K×H×W probabilities of :attr:`inference` (K ≥ 2, see :meth:`two_channels`), at the
        batch's size; ``logits`` (the plain pass, when already computed) spare a forward pass."""
        if self.inference.is_plain:
            if logits is None:
                logits = mask_logits(image)
            return self.two_channels(to_probabilities(logits))
        return self.two_channels(self.inference.probabilities(mask_logits, image, logits))

    def original_images(self, batch: dict[str, Any], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
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

    def predictions(
        self,
        probabilities: torch.Tensor,
        batch: dict[str, Any],
        sizes: list[tuple[int, int]],
        label_logits: torch.Tensor | None,
        truths: list[torch.Tensor] | None = None,
        postprocess: PostProcess | None = None,
    ) -> list[Prediction]:
        """One :class:`Prediction` per image at its size, with what the chain's steps read."""
        chain = postprocess or self.postprocess
        images = self.original_images(batch, sizes) if chain.needs_image else None
        present = self.present_classes(label_logits, truths, chain, batch.get("name"))
        return [
            Prediction(
                probabilities=self.inference.at_size(item, size),
                image=images[i] if images is not None else None,
                present_classes=present[i] if present is not None else None,
            )
            for i, (item, size) in enumerate(zip(probabilities, sizes, strict=True))
        ]

    def present_classes(
        self,
        label_logits: torch.Tensor | None,
        truths: list[torch.Tensor] | None,
        postprocess: PostProcess | None = None,
        names: list[str] | None = None,
    ) -> torch.Tensor | None:
        """bool B×K: the mask classes each image holds according to the image-level head (its tuned
        thresholds when loaded), to LabelConsistency's labels file (looked up by the images' ``names``), or
        to the true masks for its oracle ablation."""
        chain = postprocess or self.postprocess
        consistency = chain.find(LabelConsistency)
        if consistency is None:
            return None
        if consistency.table is not None:
            if names is None:
                raise ConfigError(
                    f"model.postprocess LabelConsistency labels: {consistency.labels}: the batch names no images "
                    "to look up"
                )
            return consistency.table.present_classes(names)
        if getattr(consistency, "oracle", False):
            if truths is None:
                raise ConfigError(
                    "model.postprocess LabelConsistency oracle: true needs masks (test, not predict)"
                )
            classes = torch.arange(self.num_classes, device=truths[0].device)
            return torch.stack([(t.long().flatten()[:, None] == classes).any(0) for t in truths])
        if label_logits is None:
            return None
        task = self.label_task
        decisions = task.decisions(task.probabilities(label_logits), self.tuned_label_thresholds(chain))
        return task.classes_of_labels(decisions)

    def predict_path(
        self,
        mask_logits: MaskLogits,
        batch: dict[str, Any],
        out: NetOutput,
        truths: list[torch.Tensor] | None = None,
    ) -> list[Prediction]:
        """The whole path of ``predict`` for one batch: :attr:`inference` → probabilities resized back to
        each image's original size → :attr:`postprocess` → class maps.

        Args:
            mask_logits: the net (see :data:`MaskLogits`).
            batch: the batch as the data module gives it (normalised float32 B×3×H×W ``image``; ``orig_size``
                int64 B×2, else the batch's size is each image's).
            out: the plain forward pass of ``batch["image"]`` (its logits spare inference a pass).
            truths: int64 H_i×W_i true masks, only for LabelConsistency's oracle ablation.

        Returns:
            one :class:`Prediction` per image, ``classes`` int64 H_i×W_i.
        """
        image = batch["image"]
        probabilities = self.probabilities(mask_logits, image, out.mask)
        if "orig_size" in batch:
            sizes = [tuple(s) for s in batch["orig_size"].tolist()]
        else:
            sizes = [tuple(image.shape[-2:])] * len(image)
        predictions = self.predictions(probabilities, batch, sizes, out.label, truths)
        self.postprocess.run(predictions, self.decide_plain)
        return predictions

    @staticmethod
    def truths(batch: dict[str, Any]) -> list[torch.Tensor]:
        """int64 H_i×W_i masks a batch is scored against: each as stored (``orig_mask``), else the batch's."""
        originals = batch.get("orig_mask")
        return [o.long() for o in originals] if originals is not None else list(batch["mask"])

    def _at_truth_sizes(
        self,
        mask_logits: MaskLogits,
        batch: dict[str, Any],
        logits: torch.Tensor,
        label_logits: torch.Tensor | None,
        chain: PostProcess,
    ) -> tuple[list[Prediction], list[torch.Tensor], list[tuple[int, int]]]:
        """The batch's predictions at the sizes of the masks it is scored against (before any step), the
        int64 H_i×W_i truths, and their sizes."""
        truths = self.truths(batch)
        sizes = [tuple(t.shape[-2:]) for t in truths]
        probabilities = self.probabilities(mask_logits, batch["image"], logits)
        return self.predictions(probabilities, batch, sizes, label_logits, truths, chain), truths, sizes

    def before_decision(
        self,
        mask_logits: MaskLogits,
        batch: dict[str, Any],
        logits: torch.Tensor,
        label_logits: torch.Tensor | None,
        postprocess: PostProcess | None = None,
    ) -> tuple[list[Prediction], list[torch.Tensor]]:
        """A batch's predictions at each mask's stored size after the chain's steps on probabilities (a CRF),
        before any decision, with the truths they are scored against (``tune`` calibrates on them)."""
        chain = postprocess or self.postprocess
        # only the steps before the decision: what steps on the class map read (image labels) is not needed,
        # nor looked up (a labels file may cover the predicted images only)
        before = PostProcess(chain.before_decision())
        predictions, truths, _ = self._at_truth_sizes(mask_logits, batch, logits, label_logits, before)
        for step in before.steps:
            step.apply(predictions)
        return predictions, truths

    # ------------------------------------------------------------------------------ the stage table
    def rows(self, postprocess: PostProcess | None = None, inference_row: bool | None = None) -> list[str]:
        """The stage table's row names: the plain pass, + inference (unless plain; ``inference_row``
        decides for predictions scored from storage), + each post-processing step."""
        names = ["raw"]
        if inference_row if inference_row is not None else not self.inference.is_plain:
            names.append("+ " + self.inference.describe())
        return names + ["+ " + name for name in (postprocess or self.postprocess).describe()]

    def start_table(self, stage: str) -> None:
        """Forget ``stage``'s rows and foreground counts (a new pass)."""
        self.row_names.pop(stage, None)
        for key in [k for k in self.row_metrics if k.startswith(f"{stage}_")]:
            del self.row_metrics[key]
        if stage in self.foreground_counts:
            del self.foreground_counts[stage]
        if stage in self.calibration_bins:
            del self.calibration_bins[stage]
        if stage in self.boundary_sums:
            del self.boundary_sums[stage]

    def _row_metric(self, stage: str, row: int, final: SegMetrics, device: torch.device) -> SegMetrics:
        """The metrics of one row of ``stage``'s table; the last row's are ``final``, the stage's own."""
        if row == len(self.row_names[stage]) - 1:
            return final
        key = f"{stage}_{row}"
        if key not in self.row_metrics:
            self.row_metrics[key] = SegMetrics(self.num_classes, self.ignore_index).to(device)
        return self.row_metrics[key]

    def score(
        self,
        mask_logits: MaskLogits,
        batch: dict[str, Any],
        stage: str,
        logits: torch.Tensor,
        label_logits: torch.Tensor | None,
        final: SegMetrics,
        postprocess: PostProcess | None = None,
    ) -> list[torch.Tensor]:
        """Score a batch as ``predict`` sees it: inference → post-processing → decision, at each mask's
        stored size, updating one metric per row of the stage table (the last row is ``final``). Returns the
        final int64 H_i×W_i class maps it scored."""
        chain = postprocess or self.postprocess
        predictions, truths, sizes = self._at_truth_sizes(mask_logits, batch, logits, label_logits, chain)
        raw = None
        if not self.inference.is_plain:  # the raw row: the plain pass's own logits, resized back
            plain = self.two_channels(to_probabilities(logits))
            raw = [Prediction(self.inference.at_size(p, size)) for p, size in zip(plain, sizes, strict=True)]
        classes = self.score_predictions(predictions, truths, stage, final, chain, raw)
        if self.binary_head:
            self.count_foreground(predictions, truths, stage)
        if stage == "test":
            self.count_calibration(predictions, truths, stage)
            if self.boundary_iou:
                self.count_boundary(classes, truths, stage)
        return classes

    def count_boundary(self, classes: list[torch.Tensor], truths: list[torch.Tensor], stage: str) -> None:
        """Add the final int64 H_i×W_i class maps to ``stage``'s Boundary IoU sums (on the device)."""
        if stage not in self.boundary_sums:
            self.boundary_sums[stage] = BoundaryIoU(self.num_classes, self.ignore_index).to(truths[0].device)
        for predicted, truth in zip(classes, truths, strict=True):
            self.boundary_sums[stage].update(predicted, truth)

    def boundary_scores(self, stage: str) -> dict[str, torch.Tensor] | None:
        """``boundary_iou`` (K,) and ``boundary_mIoU`` of ``stage``, None when not counted; a collective."""
        if stage not in self.boundary_sums:
            return None
        return self.boundary_sums[stage].compute()

    # ------------------------------------------------------------------------------- calibration
    def count_calibration(
        self, predictions: list[Prediction], truths: list[torch.Tensor], stage: str
    ) -> None:
        """Add the probabilities the decision read (after a temperature, a CRF) to ``stage``'s reliability
        bins and NLL, at each truth's size, ``ignore_index`` left out (on the device, no host sync)."""
        if stage not in self.calibration_bins:
            self.calibration_bins[stage] = CalibrationBins(self.num_classes).to(truths[0].device)
        bins = self.calibration_bins[stage]
        for item, truth in zip(predictions, truths, strict=True):
            bins.update(item.probabilities, truth, truth != self.ignore_index)

    def calibration_scores(self, stage: str) -> dict[str, torch.Tensor] | None:
        """``ECE``, ``ECE_classwise``, ``NLL`` and the top-label ``reliability`` curve of ``stage`` (see
        :class:`~lightning_seg.metrics.calibration.CalibrationBins`), None when nothing was counted; synced
        across processes: a collective, call it on every rank."""
        if stage not in self.calibration_bins:
            return None
        return self.calibration_bins[stage].compute()

    # ------------------------------------------------------------------- the foreground's PR curve
    def count_foreground(self, predictions: list[Prediction], truths: list[torch.Tensor], stage: str) -> None:
        """Add a one-channel head's foreground probabilities to ``stage``'s binned counts (on the device,
        no host sync): what the decision read (after a CRF), at each truth's size, ``ignore_index`` left out.

        Args:
            predictions: float32 2×H_i×W_i probabilities [1 - p, p] each (see :meth:`two_channels`).
            truths: int64 H_i×W_i targets (0 background, 1 foreground, or ``ignore_index``).
        """
        if stage not in self.foreground_counts:
            self.foreground_counts[stage] = ThresholdHistogram(1, CURVE_STEPS).to(truths[0].device)
        counts = self.foreground_counts[stage]
        for item, truth in zip(predictions, truths, strict=True):
            foreground = item.probabilities[1:2][None]  # 1×1×H×W
            counts.update(foreground, (truth == 1)[None, None], (truth != self.ignore_index)[None])

    def foreground_threshold(self, postprocess: PostProcess | None = None) -> tuple[float, str]:
        """The foreground threshold in use and where it comes from: the chain's tuned threshold of class 1
        when ClassThresholds loaded one, else ``binary_threshold``."""
        thresholds = (postprocess or self.postprocess).thresholds
        tuned = thresholds.thresholds if thresholds is not None else None
        if tuned is not None and len(tuned) > 1 and not bool(tuned[1].isnan()):
            return float(tuned[1]), "tuned"
        return float(self.binary_threshold), "binary_threshold"

    def foreground_curve(self, stage: str) -> dict[str, Any] | None:
        """The precision-recall curve of ``stage``'s foreground pixels as plain data (None without counts:
        a net with K channels, or no batch). Summed across processes: a collective, call it on every rank.

        Returns:
            ``thresholds``, ``precision`` and ``recall`` (None where undefined), ``tp``, ``fp``, ``fn``: one
            entry per threshold of the grid, ascending; ``average_precision`` (None without a foreground
            pixel), ``positives`` and ``pixels`` (scored), ``threshold`` and ``threshold_source`` (see
            :meth:`foreground_threshold`).
        """
        if stage not in self.foreground_counts:
            return None
        counts = self.foreground_counts[stage].compute()  # synced across processes by torchmetrics
        tp, fp, fn = counts["tp"][0], counts["fp"][0], counts["fn"][0]
        curve = precision_recall_curve(tp, fp, fn)

        def plain(values: torch.Tensor) -> list[float | None]:
            return [None if v != v else v for v in values.tolist()]

        threshold, source = self.foreground_threshold()
        average_precision = float(curve["average_precision"])
        return {
            "thresholds": [round(j / (CURVE_STEPS - 1), 6) for j in range(CURVE_STEPS)],
            "precision": plain(curve["precision"]),
            "recall": plain(curve["recall"]),
            "tp": tp.tolist(),
            "fp": fp.tolist(),
            "fn": fn.tolist(),
            "average_precision": None if average_precision != average_precision else average_precision,
            "positives": int(tp[0] + fn[0]),
            "pixels": int(tp[0] + fp[0] + fn[0]),
            "threshold": threshold,
            "threshold_source": source,
        }

    def score_predictions(
        self,
        predictions: list[Prediction],
        truths: list[torch.Tensor],
        stage: str,
        final: SegMetrics,
        postprocess: PostProcess | None = None,
        raw: list[Prediction] | None = None,
    ) -> list[torch.Tensor]:
        """Score predictions made already (K×H_i×W_i probabilities at each int64 H_i×W_i truth's size) through
        the chain and the decision, one metric per row of the stage table (the last row is ``final``);
        ``raw``: the plain pass's predictions, a row of their own before the inference's. Returns the final
        int64 H_i×W_i class maps."""
        chain = postprocess or self.postprocess
        names = self.row_names.setdefault(stage, self.rows(chain, inference_row=raw is not None))
        rows = iter(range(len(names)))

        def report(_: str, items: list[Prediction]) -> None:
            row = self._row_metric(stage, next(rows), final, truths[0].device)
            for item, truth in zip(items, truths, strict=True):
                assert item.classes is not None
                row.update(item.classes[None], truth[None])

        if raw is not None:
            PostProcess.decide_all(raw, self.decide_plain)
            report("raw", raw)
        PostProcess.decide_all(predictions, self.decide_plain)
        report("inference", predictions)
        chain.run(predictions, self.decide_plain, report)
        return [item.classes for item in predictions if item.classes is not None]

    def table(self, stage: str, final: dict[str, torch.Tensor]) -> list[dict[str, Any]] | None:
        """One row per stage of the path (raw; + inference; + each post-processing step): the scores of
        :data:`TABLE_FIELDS` and the per-class IoU, the row metrics reset. Synced across processes by
        torchmetrics. The last row is ``final``, the stage's own scores; None before any batch was scored."""
        names = self.row_names.get(stage)
        if names is None:
            return None
        table = []
        for row, name in enumerate(names):
            key = f"{stage}_{row}"
            if row == len(names) - 1:
                scores = final
            elif key in self.row_metrics:
                scores = self.row_metrics[key].compute()
                self.row_metrics[key].reset()
            else:
                continue
            entry: dict[str, Any] = {"stage": name}
            for field in TABLE_FIELDS:
                if field in scores:
                    value = float(scores[field])
                    entry[field] = None if value != value else round(value, 6)
            entry["IoU"] = {
                class_name: None if value != value else round(value, 6)
                for class_name, value in zip(self.class_names, scores["iou"].tolist(), strict=True)
            }
            table.append(entry)
        return table
