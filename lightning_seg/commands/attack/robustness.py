"""``attack``'s pass over a split: every batch clean and under every attack, scored through the model's whole
path (:class:`RobustnessPass`), fed by a module of the command's own that the test loop drives
(:class:`RobustnessTask`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.nn import functional as F
from torchmetrics import Metric

from lightning_seg.commands.model_pass import ModelPass
from lightning_seg.errors import ConfigError
from lightning_seg.metrics import SegMetrics
from lightning_seg.models.outputs import NetOutput

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule

from lightning_seg.commands.attack.options import AttackOptions, Group
from lightning_seg.commands.attack.perturbation import LabelObjective, MaskObjective, perturb


# ------------------------------------------------------------------------------------------------ scores
class Counts(Metric):
    """Pixels of the target region, and those of them predicted as the target (summed across processes)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hits", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, hits: torch.Tensor, total: torch.Tensor) -> None:
        self.hits += hits
        self.total += total

    def compute(self) -> torch.Tensor:
        return self.hits.double() / self.total.clamp_min(1).double()


class RowScores:
    """The scores of one row: mask metrics, target share, label metrics (a net with a head)."""

    def __init__(self, model: SegmentationModule, device: torch.device, with_labels: bool) -> None:
        self.mask = SegMetrics(model.num_classes, model.ignore_index).to(device)
        self.share = Counts().to(device)
        self.labels = model.label_task.new_metrics().to(device) if with_labels else None

    def compute(self) -> dict[str, float | None]:
        scores = self.mask.compute()
        label_acc = None
        if self.labels is not None and self.labels.update_count:
            label_acc = float(self.labels.compute()["acc"])
        return {
            "mIoU": _number(scores["mIoU"]),
            "acc": _number(scores["acc"]),
            "target_share": _number(self.share.compute()) if self.share.update_count else None,
            "label_acc": label_acc,
        }


def _number(value: torch.Tensor) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def _slice(out: NetOutput, part: slice) -> NetOutput:
    return NetOutput(
        mask=out.mask[part],
        aux=out.aux[part] if out.aux is not None else None,
        label=out.label[part] if out.label is not None else None,
    )


def adversarial_originals(originals: list[torch.Tensor], delta: torch.Tensor) -> list[torch.Tensor]:
    """uint8 3×h×w stored images + δ (float B×3×H×W, the batch's size) resized bilinearly to each, clamped,
    rounded: the adversarial image a step that reads the image (a CRF) sees."""
    out = []
    for original, d in zip(originals, delta, strict=True):
        if tuple(d.shape[-2:]) != tuple(original.shape[-2:]):
            d = F.interpolate(d[None], size=tuple(original.shape[-2:]), mode="bilinear", align_corners=False)[
                0
            ]
        pixels = (original.to(d.dtype) / 255 + d).clamp(0, 1)
        out.append((pixels * 255).round().to(torch.uint8))
    return out


CLEAN = "clean"


class RobustnessPass:
    """The attack's pass over a split, fed batch by batch from :class:`RobustnessTask`'s ``test_step``.

    Each batch: the clean images through the model's whole path (the radius-0 rows), then per group (an
    attack on a head, targeted or not) one attack of the batch repeated for every radius > 0, each radius's
    adversarial images through the whole path. One :class:`RowScores` per (group, radius); the radius-0 rows
    share the clean scores.

    Args:
        model: the segmentation module.
        options: the checked options.
    """

    def __init__(self, model: SegmentationModule, options: AttackOptions) -> None:
        self.model = model
        self.options = options
        self.with_labels = getattr(model.net, "label_head", None) is not None
        self.scores: dict[Any, RowScores] = {}
        self.generator: torch.Generator | None = None
        self.images = 0
        self.reference = "clean predictions" if options.split == "predict" else "masks"
        self.label_reference: str | None = None
        self.panels: dict[Group, list[dict[str, torch.Tensor]]] = {g: [] for g in options.groups}
        self._regions: dict[tuple[tuple[int, int], torch.device], torch.Tensor | None] = {}

    # -------------------------------------------------------------------------------------- helpers
    def _row(self, key: Any, device: torch.device) -> RowScores:
        if key not in self.scores:
            self.scores[key] = RowScores(self.model, device, self.with_labels)
        return self.scores[key]

    def _region(self, size: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        """bool H×W: the target region resized (nearest) to ``size``; None: the whole image."""
        region = self.options.region
        if region is None:
            return None
        key = (tuple(size), device)
        if key not in self._regions:
            resized = F.interpolate(region[None, None].float(), size=tuple(size), mode="nearest")[0, 0]
            self._regions[key] = resized.to(device) > 0.5
        return self._regions[key]

    def _mean_std(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        mean = torch.tensor(model.mean, device=image.device, dtype=image.dtype).view(1, -1, 1, 1)
        std = torch.tensor(model.std, device=image.device, dtype=image.dtype).view(1, -1, 1, 1)
        return mean, std

    def _label_targets(self, batch: dict[str, Any], clean: NetOutput) -> torch.Tensor | None:
        """What the head's metrics and attack compare with: the labels ``test`` scores, or (no masks, or a
        batch without the data's labels) the head's own clean decisions."""
        model = self.model
        if clean.label is None:
            return None
        targets = model.label_targets(batch) if "mask" in batch else None
        if targets is not None:
            self.label_reference = self.label_reference or "labels"
            return targets
        self.label_reference = "clean predictions"
        decisions = model.label_decisions(
            model.label_probabilities(clean.label), model.tuned_label_thresholds()
        )
        return decisions.long().argmax(1) if model.label_mode == "single" else decisions.float()

    def _score(
        self,
        key: Any,
        classes: list[torch.Tensor],
        truths: list[torch.Tensor],
        label_logits: torch.Tensor | None,
        label_targets: torch.Tensor | None,
        share: bool,
    ) -> None:
        model = self.model
        device = classes[0].device
        row = self._row(key, device)
        for predicted, truth in zip(classes, truths, strict=True):
            row.mask.update(predicted[None], truth[None])
        if share and self.options.target is not None:
            hits = torch.zeros((), dtype=torch.long, device=device)
            total = torch.zeros((), dtype=torch.long, device=device)
            for predicted in classes:
                region = self._region(tuple(predicted.shape[-2:]), device)
                turned = predicted == self.options.target
                if region is None:
                    hits += turned.sum()
                    total += predicted.numel()
                else:
                    hits += (turned & region).sum()
                    total += region.sum()
            row.share.update(hits, total)
        if row.labels is not None and label_logits is not None and label_targets is not None:
            probabilities = model.label_probabilities(label_logits)
            decisions = model.label_decisions(probabilities, model.tuned_label_thresholds())
            row.labels.update(probabilities, decisions, label_targets)

    def _objective(
        self,
        group: Group,
        labels: torch.Tensor,
        valid: torch.Tensor,
        label_targets: torch.Tensor | None,
        repeats: int,
    ) -> Callable[[NetOutput, int, int], torch.Tensor]:
        if group.head == "label":
            if label_targets is None:
                raise ConfigError("attack --heads label: the batch has no image-level reference")
            targets = label_targets.repeat(repeats, *([1] * (label_targets.dim() - 1)))
            return LabelObjective(self.model.loss.label_term, targets)
        if group.targeted:
            assert self.options.target is not None
            region = self._region(tuple(labels.shape[-2:]), labels.device)
            valid = torch.ones_like(labels, dtype=torch.bool) if region is None else region.expand_as(labels)
            labels = torch.full_like(labels, self.options.target)
        return MaskObjective(
            labels.repeat(repeats, 1, 1),
            valid.repeat(repeats, 1, 1),
            targeted=group.targeted,
            reweight=group.attack == "segpgd",
        )

    # ------------------------------------------------------------------------------------ the batch
    def step(self, batch: dict[str, Any], batch_idx: int = 0, rank: int = 0) -> None:
        """Score one prepared batch (normalised float B×3×H×W ``image``) clean and under every attack;
        ``rank``: this process's (each seeds its random starts apart)."""
        model, options = self.model, self.options
        image = batch["image"]
        device = image.device
        if self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(options.seed + rank)
        originals = batch.get("orig_mask")
        if options.split == "predict" or "mask" not in batch:
            truths = None
            if "orig_size" in batch:
                sizes = [tuple(s) for s in batch["orig_size"].tolist()]
            else:
                sizes = [tuple(image.shape[-2:])] * len(image)
        else:
            truths = [o.long() for o in originals] if originals is not None else list(batch["mask"])
            sizes = [tuple(t.shape[-2:]) for t in truths]
        # scored at the truths' sizes, as test scores (a CPU tensor: predict_path reads it on the host)
        scored = {**batch, "orig_size": torch.tensor(sizes, dtype=torch.long)}
        with torch.no_grad():
            clean = model(image)
            clean_classes = [p.classes for p in model.predict_path(scored, clean, truths)]
        reference = truths if truths is not None else clean_classes
        if truths is not None:
            labels, valid = batch["mask"], batch["mask"] != model.ignore_index
        else:
            labels = model.classes_from_logits(clean.mask)
            valid = torch.ones_like(labels, dtype=torch.bool)
        label_targets = self._label_targets(batch, clean)
        self._score(CLEAN, clean_classes, reference, clean.label, label_targets, share=True)
        self.images += len(image)

        radii = [e for e in options.epsilons if e > 0]
        if not radii:
            return
        # pixels, radii and steps in float32 whatever the batch's dtype (bf16-true, 16-true): in bf16 a
        # step of 0.25/255 vanishes and the bound 1/255 rounds outward; the net gets the batch's dtype
        mean, std = self._mean_std(image.float())
        pixels = (image.float() * std + mean).clamp(0, 1)
        repeats, size = len(radii), len(image)
        epsilon = torch.tensor(radii, device=device, dtype=torch.float32).repeat_interleave(size)
        clean_pixels = pixels.repeat(repeats, 1, 1, 1)

        def forward(x: torch.Tensor) -> NetOutput:
            return model(((x - mean) / std).to(image.dtype))

        for group in options.groups:
            objective = self._objective(group, labels, valid, label_targets, repeats)
            with torch.enable_grad():
                adversarial = perturb(
                    forward,
                    clean_pixels,
                    epsilon,
                    objective,
                    group.attack,  # type: ignore[arg-type]
                    steps=options.steps,
                    step_size=options.step_size,
                    random_start=options.random_start,
                    generator=self.generator,
                )
            with torch.no_grad():
                normalised = ((adversarial - mean) / std).to(image.dtype)
                out = model(normalised)
                for k, radius in enumerate(radii):
                    part = slice(k * size, (k + 1) * size)
                    attacked = {**scored, "image": normalised[part]}
                    if "orig_image" in batch:
                        attacked["orig_image"] = adversarial_originals(
                            batch["orig_image"], adversarial[part] - pixels
                        )
                    piece = _slice(out, part)
                    classes = [p.classes for p in model.predict_path(attacked, piece, truths)]
                    self._score(
                        (group, radius), classes, reference, piece.label, label_targets, group.targeted
                    )
                    if radius == radii[-1]:
                        self._keep_panels(group, pixels, adversarial[part], clean_classes, classes)

    def _keep_panels(
        self,
        group: Group,
        pixels: torch.Tensor,
        adversarial: torch.Tensor,
        clean: list[torch.Tensor],
        attacked: list[torch.Tensor],
    ) -> None:
        kept = self.panels[group]
        # copies, not views: a view would keep the whole repeated batch alive until the pass ends
        for i in range(min(self.options.panels - len(kept), len(pixels))):
            kept.append(
                {
                    "clean": pixels[i].clone(),
                    "adversarial": adversarial[i].clone(),
                    "clean_prediction": clean[i],
                    "adversarial_prediction": attacked[i],
                }
            )

    # ---------------------------------------------------------------------------------- the table
    def rows(self) -> list[dict[str, Any]]:
        """One row per (group, radius), after the pass (one host copy per row; synced across processes)."""
        computed: dict[Any, dict[str, float | None]] = {}
        rows = []
        for group in self.options.groups:
            for radius in self.options.epsilons:
                key = CLEAN if radius == 0 else (group, radius)
                if key not in self.scores:
                    continue
                if key not in computed:
                    computed[key] = self.scores[key].compute()
                scores = computed[key]
                rows.append(
                    {
                        "attack": group.attack,
                        "epsilon": radius,
                        "targeted": group.targeted,
                        "head": group.head,
                        "steps": 1 if group.attack == "fgsm" else self.options.steps,
                        "mIoU": scores["mIoU"],
                        "acc": scores["acc"],
                        "target_share": scores["target_share"] if group.targeted else None,
                        "label_acc": scores["label_acc"],
                    }
                )
        return rows


class RobustnessTask(ModelPass):
    """``attack``'s pass as a module of its own, which the test loop drives: each batch goes to the
    :class:`RobustnessPass` (the segmentation module, its child with its weights loaded, clean and under
    every attack). The segmentation module is run, never reprogrammed.

    Args:
        model: the segmentation module, its checkpoint's weights loaded.
        report: the pass that scores the batches.
        ckpt_path: the checkpoint (its tuned thresholds are read for the post-processing chain).
    """

    def __init__(self, model: SegmentationModule, report: RobustnessPass, ckpt_path: str | None) -> None:
        super().__init__(model)
        self.report = report
        self.ckpt_path = ckpt_path
        self.images = 0  # the images attacked by every process, after the pass

    def on_test_start(self) -> None:
        self.model.load_postprocess(self.ckpt_path)
        rank_zero_info(f"attack: {self.model.evaluation.describe()}")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.report.step(batch, batch_idx, rank=self.global_rank)

    def on_test_epoch_end(self) -> None:
        # summed while the module is still on its device (after test, Lightning moves it back to the CPU,
        # where NCCL cannot reduce): each process attacked its share of the split
        total = torch.tensor(self.report.images, device=self.device)
        self.images = int(self.trainer.strategy.reduce(total, reduce_op="sum"))

    def on_test_end(self) -> None:
        self.model.postprocess.close()
