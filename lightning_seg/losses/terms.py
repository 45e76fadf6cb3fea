"""Pixel loss terms written here because the library's versions wait for the device.

segmentation-models-pytorch's ``FocalLoss`` and ``LovaszLoss`` drop ``ignore_index`` pixels by boolean-mask
indexing (a ``nonzero`` whose output size the host must read), and ``LovaszLoss`` skips the classes absent
from the batch with a Python ``if fg.sum() == 0``: on a GPU each is a host sync, several per class and step.
These versions compute the same values (tests compare them with SMP's, gradients included) with masks
instead: ignored pixels are weighted 0, absent classes are averaged out with a mask, and nothing is read
back. SMP's own ``focal_loss_with_logits`` gives the focal formula.

Shapes: logits float32 B×K×H×W (K = 1 for a binary, sigmoid head), targets int64 B×H×W with values in
[0, K) (``{0, 1}`` for a binary head) or ``ignore_index``; every term returns a float32 scalar.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.losses._functional import focal_loss_with_logits
from torch import nn
from torch.nn import functional as F


def one_vs_rest_targets(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """float B×K×H×W one-vs-rest targets (the 0/1 mask itself for a binary head), 0 at ignored pixels, and
    the bool B×1×H×W mask of the pixels that are not ignored."""
    valid = (target != ignore_index).unsqueeze(1)
    safe = torch.where(valid[:, 0], target, 0)
    if logits.shape[1] == 1:
        return (safe.unsqueeze(1) * valid).to(logits.dtype), valid
    # one_hot over the last axis, moved to the class axis (a scatter: no host read on CUDA); an ignored
    # pixel belongs to no class
    return (F.one_hot(safe, logits.shape[1]).movedim(-1, 1) * valid).to(logits.dtype), valid


class BinaryCrossEntropy(nn.Module):
    """BCE on a one-channel head, averaged over the non-ignored pixels only.

    Written here because SMP's ``SoftBCEWithLogitsLoss`` zeroes ignored pixels but still divides by all
    pixels, so its scale shrinks with the fraction of ignored pixels.
    """

    def __init__(self, ignore_index: int, smooth_factor: float, pos_weight: torch.Tensor | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth_factor = smooth_factor
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def sums(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss summed over the valid pixels, (1,), and their number, a scalar."""
        soft, valid = one_vs_rest_targets(logits, target, self.ignore_index)
        if self.smooth_factor:
            soft = soft * (1 - self.smooth_factor) + (1 - soft) * self.smooth_factor
        per_pixel = F.binary_cross_entropy_with_logits(
            logits, soft, pos_weight=self.pos_weight, reduction="none"
        )
        return (per_pixel * valid).sum((0, 2, 3)), valid.sum()

    def from_sums(self, total: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        return total[0] / pixels.clamp_min(1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits float B×1×H×W; target int64 B×H×W in {0, 1, ignore_index} → scalar."""
        return self.from_sums(*self.sums(logits, target))


class FocalLoss(nn.Module):
    """SMP's focal loss (``smp.losses.FocalLoss``) without host syncs.

    Each class is a one-vs-rest sigmoid focal term on its own logits, averaged over the non-ignored pixels;
    the class terms are averaged, or weighted by ``class_weights`` (``sum w_c l_c / sum w_c``). A binary
    head has one term. ``alpha`` weighs a pixel of the class by α and the others by 1 - α (SMP's and
    RetinaNet's balance); None: unbalanced.
    """

    def __init__(
        self,
        ignore_index: int,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma
        self.alpha = alpha
        weights = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)

    def sums(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each class's term summed over the valid pixels, (K,), and their number, a scalar."""
        soft, valid = one_vs_rest_targets(logits, target, self.ignore_index)
        per_pixel = focal_loss_with_logits(logits, soft, gamma=self.gamma, alpha=self.alpha, reduction="none")
        return (per_pixel * valid).sum((0, 2, 3)), valid.sum()

    def from_sums(self, per_class: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        per_class = per_class / pixels.clamp_min(1)  # each class's mean over the valid pixels
        if self.class_weights is None:
            return per_class.mean()
        weights = self.class_weights.to(per_class)
        return (per_class * weights).sum() / weights.sum()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.from_sums(*self.sums(logits, target))


def _lovasz_gradient(truth_sorted: torch.Tensor) -> torch.Tensor:
    """The Lovász extension's gradient of the Jaccard loss (Berman et al., CVPR 2018, Alg. 1) along the
    last axis of float ...×P 0/1 truths sorted by decreasing error."""
    positives = truth_sorted.sum(-1, keepdim=True)
    intersection = positives - truth_sorted.cumsum(-1)
    union = positives + (1 - truth_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], -1)


class LovaszLoss(nn.Module):
    """SMP's Lovász loss (``smp.losses.LovaszLoss``, over the whole batch) without host syncs.

    K channels: the Lovász-softmax, averaged over the classes present in the batch's targets (0 when none
    is). One channel: the Lovász hinge. Ignored pixels get the lowest error, so they sort after every
    counted pixel and change no partial sum of the counted ones, and they are weighted 0.
    """

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        truth, valid = one_vs_rest_targets(logits, target, self.ignore_index)
        truth = truth.movedim(1, 0).flatten(1)  # K×P
        valid = valid.flatten().to(logits.dtype)  # (P,)
        if logits.shape[1] == 1:  # hinge on the logit, the margin 1 - s·y with s = ±1
            errors = 1.0 - logits.flatten() * (2.0 * truth[0] - 1.0)
            errors = torch.where(valid > 0, errors, -torch.inf)
            errors, order = errors.sort(descending=True)
            return (F.relu(errors) * _lovasz_gradient(truth[0][order])).sum()
        probabilities = logits.softmax(1).movedim(1, 0).flatten(1)  # K×P
        errors = torch.where(valid > 0, (truth - probabilities).abs(), -1.0)
        errors, order = errors.sort(-1, descending=True)
        per_class = (errors * valid[order] * _lovasz_gradient(truth.gather(1, order))).sum(-1)  # (K,)
        present = (truth * valid).sum(-1) > 0
        return torch.where(present, per_class, 0.0).sum() / present.sum().clamp_min(1)
