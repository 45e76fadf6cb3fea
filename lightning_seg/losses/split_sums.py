"""Evaluation losses over a whole split: each term from sums accumulated batch by batch, divided once.

A loss term's value on one batch is a ratio: cross-entropy divides by the batch's valid pixels (or the sum of
their class weights), soft Dice by the batch's soft cardinalities. Averaging those per-batch values over a
split depends on how the images fall into batches and processes. Here every term instead gives the sums its
ratio is made of; the sums are added over the split (and across processes) and the term is computed once
from them, with the same formula as on a batch. One batch holding the whole split gives exactly the
training-path value, and any batching or number of processes gives the same value.

Sums per term (float64 vectors):

* ``ce``: [Σ w_y·ℓ_i, Σ w_y] over valid pixels (torch's weighted mean, label smoothing included);
  ``bce``: [Σ ℓ_i, valid pixels].
* ``focal``: [Σ ℓ_ic for each class c..., valid pixels]: each class's mean, then the class mean/weights.
* ``dice``, ``jaccard``, ``tversky`` (SMP's soft scores): per class [Σp, Σy, Σ|p - y|] over valid pixels,
  from which SMP computes TP, FP and FN; a class without a target pixel in the split adds 0, as SMP does
  for a batch.
* ``lovasz``: the Lovász extension is a function of the whole split's sorted errors, which do not add up:
  [the batch value × the batch's images, images], an image-weighted mean of batch values (the exception).
* the image-label term: [Σ w·ℓ, Σ w] over images with a known label.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lightning_seg.losses.terms import BinaryCrossEntropy, FocalLoss, LovaszLoss, one_vs_rest_targets


def _soft_counts(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per class Σp, Σy and Σ|p - y| over the valid pixels, as SMP's Dice/Jaccard/Tversky read them:
    float64 (3K,) (K = 1 for a binary head)."""
    truth, valid = one_vs_rest_targets(logits, target, ignore_index)
    if logits.shape[1] == 1:
        probabilities = F.logsigmoid(logits).exp()
    else:
        probabilities = logits.log_softmax(1).exp()
    probabilities = probabilities * valid
    dims = (0, 2, 3)
    return torch.cat(
        [probabilities.sum(dims), truth.sum(dims), (probabilities - truth).abs().sum(dims)]
    ).double()


def term_sums(term: nn.Module, logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The sums a pixel term's split value is made of (see the module docstring), float64 1-D.

    Args:
        term: the term module that computes it on a batch.
        logits: float32 B×K×H×W (K = 1: a binary head).
        target: int64 B×H×W in [0, K) or ``ignore_index``.
    """
    valid = target != ignore_index
    if isinstance(term, nn.CrossEntropyLoss):
        total = F.cross_entropy(
            logits,
            target,
            weight=term.weight,
            ignore_index=ignore_index,
            label_smoothing=term.label_smoothing,
            reduction="sum",
        )
        safe = torch.where(valid, target, 0)
        weight = term.weight[safe] * valid if term.weight is not None else valid.to(logits.dtype)
        return torch.stack([total, weight.sum()]).double()
    if isinstance(term, BinaryCrossEntropy | FocalLoss):
        per_class, pixels = term.sums(logits, target)
        return torch.cat([per_class, pixels[None]]).double()
    if isinstance(term, LovaszLoss):
        images = valid.flatten(1).any(1).sum()
        return torch.stack([term(logits, target) * images, images.to(logits.dtype)]).double()
    return _soft_counts(logits, target, ignore_index)


def term_from_sums(term: nn.Module, sums: torch.Tensor) -> torch.Tensor:
    """A pixel term's value from its sums over a split (see :func:`term_sums`), float32 scalar."""
    if isinstance(term, nn.CrossEntropyLoss | LovaszLoss):
        return (sums[0] / sums[1].clamp_min(torch.finfo(torch.float64).tiny)).float()
    if isinstance(term, BinaryCrossEntropy | FocalLoss):
        return term.from_sums(sums[:-1], sums[-1]).float()
    predicted, truth, difference = sums.view(3, -1)
    # SMP's soft_tversky_score from the same three sums, then its aggregation
    intersection = (predicted + truth - difference) / 2
    false_positive, false_negative = predicted - intersection, truth - intersection
    alpha, beta = _tversky_weights(term)
    score = (intersection + term.smooth) / (
        intersection + alpha * false_positive + beta * false_negative + term.smooth
    ).clamp_min(term.eps)
    loss = (1.0 - score) * (truth > 0)
    weights = getattr(term, "class_weights", None)
    if weights is not None:
        loss = (loss * weights.to(loss)).sum() / weights.to(loss).sum()
    else:
        loss = loss.mean()
    return (loss ** getattr(term, "gamma", 1.0)).float()


def _tversky_weights(term: nn.Module) -> tuple[float, float]:
    """(α, β) of SMP's soft score: Dice 0.5/0.5, Jaccard 1/1, Tversky its own."""
    import segmentation_models_pytorch as smp

    if isinstance(term, smp.losses.TverskyLoss):
        return term.alpha, term.beta
    if isinstance(term, smp.losses.DiceLoss):
        return 0.5, 0.5
    if isinstance(term, smp.losses.JaccardLoss):
        return 1.0, 1.0
    raise TypeError(f"no split-level sums for the loss term {type(term).__name__}")
