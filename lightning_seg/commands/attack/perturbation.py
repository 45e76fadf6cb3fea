"""The attacks: FGSM, PGD and SegPGD steps in [0, 1] pixel space, and the objectives they ascend (see
:mod:`lightning_seg.commands.attack`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch.nn import functional as F

from lightning_seg.errors import ConfigError
from lightning_seg.models.outputs import NetOutput

if TYPE_CHECKING:
    pass


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
