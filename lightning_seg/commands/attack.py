"""``attack``: an adversarial-robustness report of a checkpoint, scored exactly as ``test`` scores.

``python -m lightning_seg attack --config X.yaml --ckpt_path <checkpoint>`` attacks every image of the test
split (``--split val``, or ``--split predict``: a folder of images without masks) with FGSM, PGD and SegPGD at
the L∞ radii 0, 1/255, 2/255, 4/255 and 8/255, and scores the adversarial images through the model's whole
path (inference, post-processing, decision at each mask's original size: :meth:`SegmentationModule.predict_path`),
against the masks ``test`` scores. The radius-0 row is ``test``'s own metrics, bit for bit.

Pixel space. The perturbation δ lives in [0, 1] pixel space of the image the net reads (the batch's size,
before normalisation): x = image·std + mean, ‖δ‖∞ ≤ ε, x + δ clamped to [0, 1] after every step; the net
sees (x + δ − mean)/std. A post-processing step that reads the image (a dense CRF) gets the adversarial
image at the original size (the stored image + δ resized bilinearly, clamped, rounded to uint8).

Attacks (untargeted: ascend the cross-entropy of the true classes; ignored pixels left out; a one-channel
sigmoid head as two classes):

* ``fgsm``: one signed-gradient step of size ε (Goodfellow et al., 2015).
* ``pgd``: ``steps`` signed-gradient steps of ``step_size`` (default 2.5·ε/steps), each projected back into
  the ε-ball and [0, 1], from a uniform random start in [−ε, ε] (Madry et al., 2018).
* ``segpgd``: PGD whose loss splits the pixels: (1 − λ_t)·CE on the pixels still classified correctly +
  λ_t·CE on those already wrong, both divided by all pixels, λ_t = t/(2T) for t = 0..T−1, so it starts by
  turning correct pixels and shifts weight to keeping the turned ones (Gu et al., ECCV 2022).

Targeted (``--target_class``, by name or index; ``--target_region`` a PNG whose non-zero pixels mark the
region, resized nearest to each image): descend the cross-entropy of the target class on the region's
pixels; the rows report ``target_share``, the share of the region's pixels (at the original size) predicted
as the target. Targeted SegPGD reweights the same way, the pixels "still to turn" being those not yet
predicted as the target. Untargeted rows run too.

The image-level head of a net that has one (MicroUNet with ``label_weight`` > 0): rows with ``head:
"label"`` ascend the head's loss (``model.loss``'s label term against the labels ``test`` scores) with FGSM
and PGD (SegPGD's pixel split has no meaning for one label per image) and report the label accuracy as well
as the mask metrics (the mask follows the head through LabelConsistency). ``label_acc`` is reported on
every row of such a net.

On ``--split predict`` the reference is the model's own clean prediction (standard for unlabelled images:
the radius-0 row then scores 1.0 and the others measure how much of the prediction an attack changes).

How it runs: ``test``'s loop, without ``torch.inference_mode`` (no gradient could be taken under it), over a
module of the command's own (:class:`RobustnessTask`, the segmentation module its child) whose ``test_step``
hands each batch to :class:`RobustnessPass`; the data module serves the split through
:meth:`~lightning_seg.data.base.SegDataModule.evaluate`. All radii of an
attack run together: the batch is repeated once per radius > 0 (B·E images, ε per image), so every step is
one forward and backward pass for all of them. Metrics stay on the device until the pass ends.

Outputs, in the command's record folder ``<run>/attack/<date-time>/``: ``robustness.json`` (a list of rows
``{attack, epsilon, targeted, head, steps, mIoU, acc, target_share, label_acc}``), ``robustness.md`` (the
same, as a Markdown table, printed at the end), ``robustness.png`` (mIoU against ε, one line per attack),
``panels/<attack>[_targeted|_label]_eps<k>-255.png`` at the largest radius (clean image | perturbation,
scaled from [−ε, ε] to [0, 1] | adversarial image | clean prediction | adversarial prediction) and
``summary.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.nn import functional as F
from torchmetrics import Metric

from lightning_seg.callbacks.base import CommandPass, attached
from lightning_seg.checkpoints.load import load_weights
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.errors import ConfigError, closest, short_path
from lightning_seg.metrics import SegMetrics
from lightning_seg.models.outputs import NetOutput
from lightning_seg.utils.atomic import atomic_write

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule

AttackName = Literal["fgsm", "pgd", "segpgd"]
HeadName = Literal["mask", "label"]
SplitName = Literal["test", "val", "predict"]
ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "segpgd")
HEADS: tuple[str, ...] = ("mask", "label")
SPLITS: tuple[str, ...] = ("test", "val", "predict")
DEFAULT_EPSILONS: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
TITLES = {"fgsm": "FGSM", "pgd": "PGD", "segpgd": "SegPGD"}

Forward = Callable[[torch.Tensor], NetOutput]
"""float B×3×H×W images in [0, 1] pixel space → the net's output (the normalisation inside)."""
Objective = Callable[[NetOutput, int, int], torch.Tensor]
"""(net output, step t, steps T) → the scalar an attack ascends (a sum over the images)."""


# ------------------------------------------------------------------------------------------ the attacks
def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """B×K×H×W mask logits → float32 B×K×H×W log-probabilities; a one-channel (sigmoid) head as the two
    classes [log(1 − p), log p]."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], 1)
    return logits.log_softmax(1)


class MaskObjective:
    """The loss an attack on the mask head ascends, summed over the images of a batch.

    Untargeted: the per-pixel cross-entropy of ``labels`` (the true classes) on the ``valid`` pixels.
    Targeted: minus the cross-entropy of the target (``labels`` holds it) on the region (``valid``), so that
    ascending it descends towards the target. Each image's loss is its sum over the pixels divided by its
    pixels (SegPGD's mean over all pixels, times H·W: the same signs); images do not weigh on each other's
    gradients.

    With ``reweight`` (SegPGD) the pixels still to turn (untargeted: classified correctly; targeted: not yet
    the target) weigh 1 − λ_t at step t of T, the others λ_t, λ_t = t/(2T).

    Args:
        labels: int64 B×H×W classes (any value where not ``valid``).
        valid: bool B×H×W, the pixels that count.
        targeted: descend towards ``labels`` instead of ascending away from them.
        reweight: SegPGD's split of the pixels.
    """

    def __init__(self, labels: torch.Tensor, valid: torch.Tensor, targeted: bool, reweight: bool) -> None:
        self.labels = torch.where(valid, labels, 0)[:, None]  # gather needs a class index everywhere
        self.valid = valid.float()
        self.targeted = targeted
        self.reweight = reweight

    def __call__(self, out: NetOutput, step: int, steps: int) -> torch.Tensor:
        log_p = log_probabilities(out.mask)
        ce = -log_p.gather(1, self.labels)[:, 0]
        weight = self.valid
        if self.reweight:
            lam = step / (2 * steps)
            hit = (log_p.argmax(1, keepdim=True) == self.labels)[:, 0]  # correct, or already the target
            to_turn = ~hit if self.targeted else hit
            weight = weight * torch.where(to_turn, 1.0 - lam, lam)
        # a sum, not a mean: the update reads only the gradient's sign, and dividing by H·W makes the
        # input gradients underflow in float16 (16-mixed: a third of them exactly 0, measured); SegPGD's
        # weights are relative, so its split is unchanged
        loss = (ce * weight).sum()
        return -loss if self.targeted else loss


class LabelObjective:
    """The loss an attack on the image-level head ascends: ``loss(label logits, targets)`` (the model's
    label term: CE for a single-label head, BCE for a multi-label one, with its label weights).

    Args:
        loss: (float B×L logits, targets) → float32 scalar.
        targets: int64 (B,) or float B×L (see :meth:`LabelTask.targets`).
    """

    def __init__(
        self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], targets: torch.Tensor
    ) -> None:
        self.loss = loss
        self.targets = targets

    def __call__(self, out: NetOutput, step: int, steps: int) -> torch.Tensor:
        if out.label is None:
            raise ConfigError("attack --heads label: the net returned no image-level logits")
        return self.loss(out.label.float(), self.targets)


def perturb(
    forward: Forward,
    image: torch.Tensor,
    epsilon: torch.Tensor,
    objective: Objective,
    attack: AttackName,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """An adversarial version of each image, within its own L∞ radius.

    Args:
        forward: the net on [0, 1] pixel-space images (normalising inside).
        image: float B×3×H×W clean images in [0, 1].
        epsilon: float (B,), each image's radius (a batch may hold several radii).
        objective: what the attack ascends (see :class:`MaskObjective`, :class:`LabelObjective`).
        attack: "fgsm" (one step of ε, no random start), "pgd" or "segpgd" (``steps`` steps).
        steps: PGD/SegPGD iterations.
        step_size: each step's size in pixel units; None: 2.5·ε/steps per image.
        random_start: PGD/SegPGD start at a uniform draw from [−ε, ε] (clamped to [0, 1]).
        generator: the random start's generator (on ``image``'s device).

    Returns:
        float B×3×H×W adversarial images x' with ``|x' − x| ≤ ε`` and ``0 ≤ x' ≤ 1``, detached. The gradient
        is taken with respect to the images only (the weights' gradients are neither computed nor kept).
    """
    eps = epsilon.to(image.dtype).view(-1, 1, 1, 1)
    if attack == "fgsm":
        steps, alpha, start = 1, eps, False
    elif attack in ("pgd", "segpgd"):
        alpha = eps * (2.5 / steps) if step_size is None else torch.full_like(eps, step_size)
        start = random_start
    else:
        raise ConfigError(f"attack --attacks: unknown attack {attack!r}; choose from {', '.join(ATTACKS)}")
    lower, upper = (image - eps).clamp_min(0), (image + eps).clamp_max(1)
    adversarial = image.detach()
    if start:
        noise = torch.rand(image.shape, generator=generator, device=image.device, dtype=image.dtype)
        adversarial = torch.min(torch.max(image + (2 * noise - 1) * eps, lower), upper)
    for t in range(steps):
        adversarial = adversarial.detach().requires_grad_(True)
        loss = objective(forward(adversarial), t, steps)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        # the ε-ball and [0, 1] at once: the bounds are the ball's corners clamped to [0, 1]
        adversarial = torch.min(torch.max(adversarial.detach() + alpha * gradient.sign(), lower), upper)
    return adversarial.detach()


# ------------------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class Group:
    """One curve of the report: an attack on a head, targeted or not, over every radius."""

    head: str
    attack: str
    targeted: bool

    def title(self, steps: int, target: str | None = None) -> str:
        name = TITLES[self.attack] + ("" if self.attack == "fgsm" else f"-{steps}")
        if self.targeted:
            name += f" → {target}" if target else " targeted"
        return name + (" (label head)" if self.head == "label" else "")

    @property
    def file_stem(self) -> str:
        return (
            self.attack + ("_targeted" if self.targeted else "") + ("_label" if self.head == "label" else "")
        )


def parse_epsilon(value: float | int | str) -> float:
    """A radius as a number or a fraction string ("8/255"); refused outside [0, 1]."""
    try:
        number = float(Fraction(value.strip())) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError) as error:
        raise ConfigError(
            f"attack --epsilons: {value!r} is not a number or a fraction such as 8/255"
        ) from error
    if not 0.0 <= number <= 1.0 or math.isnan(number):
        raise ConfigError(
            f"attack --epsilons: {value} is outside [0, 1] (radii are in [0, 1] pixel units, e.g. 8/255)"
        )
    return number


def format_epsilon(epsilon: float) -> str:
    """8/255 for a multiple of 1/255, else the number."""
    steps = epsilon * 255
    if epsilon == 0:
        return "0"
    if abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{epsilon:.4g}"


def _class_index(target: str, class_names: Sequence[str]) -> int:
    names = list(class_names)
    if target in names:
        return names.index(target)
    if target.strip().lstrip("-").isdigit():
        index = int(target)
        if 0 <= index < len(names):
            return index
        raise ConfigError(f"attack --target_class {index}: the model has classes 0..{len(names) - 1}")
    suggestion = closest(target, names)
    hint = f"; did you mean {suggestion}?" if suggestion else f" (classes: {', '.join(names[:12])})"
    raise ConfigError(f"attack --target_class {target!r} is not a class of the model{hint}")


def read_region(path: str) -> torch.Tensor:
    """bool H×W: the non-zero pixels of an image file (any channel)."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    if not Path(path).is_file():
        raise ConfigError(f"attack --target_region {short_path(path)}: no such file")
    try:
        image = decode_image(read_file(path), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"attack --target_region {short_path(path)}: not a readable image ({str(error).splitlines()[0][:80]})"
        ) from error
    region = (image != 0).any(0)
    if not bool(region.any()):
        raise ConfigError(f"attack --target_region {short_path(path)}: no non-zero pixel marks a region")
    return region


@dataclass
class AttackOptions:
    """The checked options of one ``attack`` run."""

    groups: list[Group]
    epsilons: list[float]
    steps: int
    step_size: float | None
    random_start: bool
    target: int | None
    region: torch.Tensor | None
    region_path: str | None
    split: str
    panels: int
    seed: int


def check_options(
    model: Any,
    attacks: Sequence[str] | None,
    epsilons: Sequence[float | str] | None,
    steps: int,
    step_size: float | None,
    random_start: bool,
    target_class: str | int | None,
    target_region: str | None,
    heads: Sequence[str] | None,
    split: str,
    panels: int,
    seed: int,
) -> AttackOptions:
    """Every option checked before any pass over the data; a bad one is a one-line ConfigError naming it."""
    if not hasattr(model, "predict_path"):
        raise ConfigError("attack needs lightning_seg's SegmentationModule as the model")
    chosen = list(dict.fromkeys(attacks if attacks is not None else ATTACKS))
    unknown = [a for a in chosen if a not in ATTACKS]
    if unknown or not chosen:
        raise ConfigError(f"attack --attacks: {unknown or 'none given'}; choose from {', '.join(ATTACKS)}")
    radii = sorted({parse_epsilon(e) for e in (epsilons if epsilons is not None else DEFAULT_EPSILONS)})
    if not radii:
        raise ConfigError("attack --epsilons: give at least one radius, e.g. [0, 8/255]")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"attack --steps must be an integer >= 1, got {steps}")
    if step_size is not None and not 0.0 < step_size <= 1.0:
        raise ConfigError(f"attack --step_size must lie in (0, 1] (pixel units), got {step_size}")
    if split not in SPLITS:
        raise ConfigError(f"attack --split {split}: choose from {', '.join(SPLITS)}")
    if panels < 0:
        raise ConfigError(f"attack --panels must be >= 0, got {panels}")
    has_head = getattr(model.net, "label_head", None) is not None
    wanted = list(dict.fromkeys(heads if heads is not None else ["mask", *(["label"] if has_head else [])]))
    if not wanted or any(h not in HEADS for h in wanted):
        raise ConfigError(f"attack --heads {wanted}: choose from mask, label")
    if "label" in wanted and not has_head:
        raise ConfigError(
            f"attack --heads label: the net ({type(model.net).__name__}) has no image-level head; use --heads "
            "[mask], or a net with one (MicroUNet) trained with model.loss label_weight > 0"
        )
    target = None if target_class is None else _class_index(str(target_class), model.class_names)
    if target_region is not None and target is None:
        raise ConfigError("attack --target_region marks where a target class goes; give --target_class too")
    region = read_region(target_region) if target_region is not None else None
    groups = []
    for head in wanted:
        for attack in chosen:
            if head == "label" and attack == "segpgd":
                continue  # SegPGD splits pixels; one label per image has nothing to split
            groups.append(Group(head, attack, False))
            if target is not None and head == "mask":
                groups.append(Group(head, attack, True))
    if not groups:
        raise ConfigError("attack --heads [label] --attacks [segpgd]: SegPGD attacks pixels; add fgsm or pgd")
    return AttackOptions(
        groups, radii, steps, step_size, random_start, target, region, target_region, split, panels, seed
    )


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


# ------------------------------------------------------------------------------------------- the command
class RobustnessTask(L.LightningModule):
    """``attack``'s pass as a module of its own, which the test loop drives: each batch goes to the
    :class:`RobustnessPass` (the segmentation module, its child with its weights loaded, clean and under
    every attack). The segmentation module is run, never reprogrammed.

    Args:
        model: the segmentation module, its checkpoint's weights loaded.
        report: the pass that scores the batches.
        ckpt_path: the checkpoint (its tuned thresholds are read for the post-processing chain).
    """

    def __init__(self, model: SegmentationModule, report: RobustnessPass, ckpt_path: str | None) -> None:
        super().__init__()
        self.model = model  # a child: Lightning moves it to the device and attaches the trainer to it
        self.report = report
        self.ckpt_path = ckpt_path

    def setup(self, stage: str) -> None:
        self.model.setup(stage)  # e.g. loss weights from the data, which the label head's attack ascends

    def on_test_start(self) -> None:
        self.model.load_postprocess(self.ckpt_path)
        steps = " → ".join(self.model.postprocess.describe()) or "none"
        rank_zero_info(f"attack: inference {self.model.inference.describe()}; post-processing: {steps}")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.report.step(batch, batch_idx, rank=self.global_rank)

    def on_test_end(self) -> None:
        self.model.postprocess.close()


def run_attack(
    trainer: L.Trainer,
    model: SegmentationModule,
    datamodule: Any,
    ckpt_path: str | None,
    options: AttackOptions,
    weights_only: bool | None = None,
) -> list[dict[str, Any]]:
    """Run the attack pass through ``test``'s loop, write the report; returns its rows. ``options``: from
    :func:`check_options`, checked before any pass."""
    split = options.split
    if datamodule is None:
        raise ConfigError(f"attack needs a data module (data: in the config) with a {split} split")
    model.check_label_consistency()  # before the pass, not at its first batch
    if ckpt_path is not None:
        load_weights(model, read_checkpoint(ckpt_path, weights_only), ckpt_path)
    report = RobustnessPass(model, options)
    inference_mode = trainer.test_loop.inference_mode
    trainer.test_loop.inference_mode = False  # gradients with respect to the images
    try:
        with attached(trainer, CommandPass("attack")), datamodule.evaluate(split):
            trainer.test(RobustnessTask(model, report, ckpt_path), datamodule=datamodule, verbose=False)
        rows = report.rows()
        # each process attacked its share of the split
        images = int(
            trainer.strategy.reduce(torch.tensor(report.images, device=model.device), reduce_op="sum")
        )
    finally:
        trainer.test_loop.inference_mode = inference_mode
    if trainer.is_global_zero:
        folder = Path(trainer.default_root_dir)
        meta = {
            "checkpoint": str(ckpt_path) if ckpt_path else None,
            "split": split,
            "images": images,
            "reference": report.reference,
            "label_reference": report.label_reference,
            "target_class": model.class_names[options.target] if options.target is not None else None,
            "target_region": options.region_path,
            "steps": options.steps,
            "step_size": options.step_size,
            "random_start": options.random_start,
            "seed": options.seed,
            "inference": model.inference.describe(),
            "postprocess": model.postprocess.describe(),
        }
        text = markdown_table(rows, meta)
        write_report(folder, rows, meta, text, report, model)
        print(text)
        print(
            f"report: {folder / 'robustness.json'}, {folder / 'robustness.md'}, {folder / 'robustness.png'}"
        )
    trainer.strategy.barrier()
    return rows


# ------------------------------------------------------------------------------------------- the report
def markdown_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The rows as a Markdown table, with a line saying what was attacked and scored against what."""
    target = meta.get("target_class")
    show_share = any(r["targeted"] for r in rows)
    show_labels = any(r["label_acc"] is not None for r in rows)
    header = ["attack", "head", "ε", "mIoU", "acc"]
    header += ["target share"] if show_share else []
    header += ["label acc"] if show_labels else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for row in rows:
        group = Group(row["head"], row["attack"], row["targeted"])
        cells = [group.title(row["steps"], target).removesuffix(" (label head)"), row["head"]]
        cells += [format_epsilon(row["epsilon"]), cell(row["mIoU"]), cell(row["acc"])]
        cells += [cell(row["target_share"]) if row["targeted"] else "–"] if show_share else []
        cells += [cell(row["label_acc"])] if show_labels else []
        lines.append("| " + " | ".join(cells) + " |")
    reference = (
        "the model's own clean predictions (the predict split has no masks)"
        if meta["split"] == "predict"
        else f"the {meta['split']} masks, at each mask's original size, as test scores"
    )
    note = (
        f"{meta['images']} {meta['split']} images; L∞ radius ε in [0, 1] pixel units; scored against {reference}"
        f"; inference {meta['inference']}; post-processing: {' → '.join(meta['postprocess']) or 'none'}"
    )
    if meta.get("random_start") is not None and any(r["attack"] != "fgsm" for r in rows):
        size = "2.5·ε/steps" if meta["step_size"] is None else f"{meta['step_size']:g}"
        note += f"; PGD/SegPGD step {size}, random start {'on' if meta['random_start'] else 'off'}"
    if show_share:
        where = f"the region of {meta['target_region']}" if meta.get("target_region") else "the whole image"
        note += f"; target share: pixels of {where} predicted as {target}"
    if show_labels:
        note += f"; label acc against {meta.get('label_reference') or 'labels'}"
    return "\n".join([*lines, "", note + "."]) + "\n"


def write_report(
    folder: Path,
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    table: str,
    report: RobustnessPass,
    model: SegmentationModule,
) -> None:
    """robustness.json, .md, .png, the panels and summary.json in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "robustness.json", json.dumps(rows, indent=2))
    atomic_write(folder / "robustness.md", table)
    plot_curves(folder / "robustness.png", rows, meta)
    panel_files = []
    largest = max(report.options.epsilons)
    if largest > 0:
        (folder / "panels").mkdir(exist_ok=True)
        for group, items in report.panels.items():
            if not items:
                continue
            path = folder / "panels" / f"{group.file_stem}_eps{format_epsilon(largest).replace('/', '-')}.png"
            title = group.title(report.options.steps, meta.get("target_class"))
            plot_panels(path, items, largest, title, model.class_names)
            panel_files.append(str(path))
    summary = {
        "stage": "attack",
        "status": "completed",
        **meta,
        "rows": rows,
        "files": {
            "json": str(folder / "robustness.json"),
            "markdown": str(folder / "robustness.md"),
            "plot": str(folder / "robustness.png"),
            "panels": panel_files,
        },
    }
    atomic_write(folder / "summary.json", json.dumps(summary, indent=2))


def plot_curves(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """mIoU against ε, one line per attack (and the target share of targeted attacks beside it)."""
    from matplotlib.figure import Figure

    targeted = any(r["targeted"] for r in rows)
    figure = Figure(figsize=(10.5 if targeted else 6, 4), layout="constrained")
    axes = figure.subplots(1, 2 if targeted else 1, squeeze=False)[0]
    curves: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for row in rows:
        curves.setdefault((row["head"], row["attack"], row["targeted"]), []).append(row)
    for (head, attack, is_targeted), points in curves.items():
        title = Group(head, attack, is_targeted).title(points[0]["steps"], meta.get("target_class"))
        x = [p["epsilon"] * 255 for p in points]
        style = "--" if is_targeted else "-"
        axes[0].plot(x, [p["mIoU"] for p in points], style, marker="o", label=title)
        if is_targeted:
            axes[1].plot(x, [p["target_share"] for p in points], style, marker="o", label=title)
    axes[0].set_ylabel("mIoU")
    axes[0].set_title(f"{meta['split']} mIoU under attack")
    if targeted:
        axes[1].set_ylabel("target share")
        axes[1].set_title(f"pixels turned to {meta.get('target_class')}")
    for ax in axes:
        ax.set_xlabel("L∞ radius ε (×1/255)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110))


def plot_panels(
    path: Path, items: list[dict[str, torch.Tensor]], epsilon: float, title: str, class_names: Sequence[str]
) -> None:
    """clean image | perturbation (scaled from [−ε, ε] to [0, 1]) | adversarial image | clean prediction |
    adversarial prediction, one row per image, class colours as ``predict`` writes them."""
    from matplotlib.figure import Figure

    from lightning_seg.reports.drawing import class_legend, show_picture
    from lightning_seg.reports.palette import colourize, default_palette

    palette = default_palette(len(class_names))
    columns = [
        "clean",
        f"perturbation (±{format_epsilon(epsilon)} → 0..1)",
        f"adversarial (ε {format_epsilon(epsilon)})",
        "clean prediction",
        "adversarial prediction",
    ]
    figure = Figure(figsize=(2.2 * len(columns), 2.2 * len(items) + 0.9), layout="constrained")
    axes = figure.subplots(len(items), len(columns), squeeze=False)
    for r, item in enumerate(items):
        clean, adversarial = item["clean"].float().cpu(), item["adversarial"].float().cpu()
        delta = ((adversarial - clean) / (2 * epsilon) + 0.5).clamp(0, 1)
        pictures = [
            clean,
            delta,
            adversarial,
            colourize(item["clean_prediction"].cpu(), palette).float() / 255,
            colourize(item["adversarial_prediction"].cpu(), palette).float() / 255,
        ]
        for c, picture in enumerate(pictures):
            show_picture(axes[r, c], picture, columns[c] if r == 0 else None)
    handles = class_legend(class_names)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize="small")
    figure.suptitle(title)
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
