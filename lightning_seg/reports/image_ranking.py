"""The best and worst images of an evaluation by a per-image score, kept on the host (k of each).

The score of an image is its mean IoU over the classes present in its target or its prediction (the
split's mIoU rule, applied to one image), from one K×K confusion matrix per image made on the device;
a wholly ignored image has no score. Only the B scores of a batch are copied to the host, then only the
images that enter the best or worst k, their class maps in the smallest integer type that holds them (uint8
for up to 255 classes), so that the lists gathered from every process under DDP stay small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightning_seg.data.base import mask_wire_dtype
from lightning_seg.metrics import class_iou, per_image_confusion
from lightning_seg.reports.figures import RankedImage


def image_miou(
    predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], num_classes: int, ignore_index: int
) -> torch.Tensor:
    """Per-image mean IoU over the classes in each image's target or prediction, on the device.

    Args:
        predictions: B int64 H_i×W_i class maps (sizes may differ between images).
        targets: B int64 H_i×W_i true classes, the same sizes (may hold ``ignore_index``).

    Returns:
        float64 (B,), NaN for an image whose every pixel is ignored.
    """
    if not predictions:
        return torch.zeros(0, dtype=torch.float64)
    if len({tuple(p.shape) for p in predictions}) == 1:  # one pass over the batch
        confusion = per_image_confusion(
            torch.stack(list(predictions)), torch.stack(list(targets)).long(), num_classes, ignore_index
        )
    else:  # sizes differ: one confusion matrix per image, still no loop over pixels
        confusion = torch.cat(
            [
                per_image_confusion(p[None], t[None].long(), num_classes, ignore_index)
                for p, t in zip(predictions, targets, strict=True)
            ]
        )
    return class_iou(confusion).nanmean(-1)  # the metrics' IoU rule, per image


def compact_class_map(classes: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Integer H×W classes in the masks' wire dtype (:func:`~lightning_seg.data.base.mask_wire_dtype`) (on their device): values outside 0..K-1 become
    ``ignore_index``, as the metrics ignore them, so that nothing wraps around in the cast."""
    valid = (classes >= 0) & (classes < num_classes)
    kept = torch.where(valid, classes, torch.full_like(classes, ignore_index))
    return kept.to(mask_wire_dtype(num_classes, ignore_index))


class ImageRanking:
    """The ``k`` best and ``k`` worst images seen, by score; ties broken by name, so the choice does not
    depend on the order of the batches or on the number of processes.

    Args:
        k: images kept at each end (0: none).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.best: list[RankedImage] = []
        self.worst: list[RankedImage] = []

    def reset(self) -> None:
        self.best, self.worst = [], []

    @staticmethod
    def _best_key(item: RankedImage | tuple[float, str]) -> tuple[float, str]:
        score, name = (item.score, item.name) if isinstance(item, RankedImage) else item
        return (-score, name)

    @staticmethod
    def _worst_key(item: RankedImage | tuple[float, str]) -> tuple[float, str]:
        score, name = (item.score, item.name) if isinstance(item, RankedImage) else item
        return (score, name)

    def _enters(
        self, kept: list[RankedImage], key: Callable[[Any], tuple[float, str]], candidate: tuple
    ) -> bool:
        return len(kept) < self.k or key(candidate) < key(kept[-1])

    def update(
        self,
        scores: Sequence[float],
        names: Sequence[str],
        fetch: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        num_classes: int,
        ignore_index: int,
    ) -> None:
        """Consider one batch.

        Args:
            scores: the B per-image scores on the host (NaN: no score, left out).
            names: the B image names.
            fetch: ``i`` → (uint8 3×H×W image, integer H×W target, integer H×W prediction) of image ``i``;
                called only for the images kept, whose tensors are then copied to the host, the class maps
                cast first (see :func:`compact_class_map`): 8× less to copy and to gather than int64.
            num_classes, ignore_index: what the class maps hold (K classes, ``ignore_index`` in targets).
        """
        if self.k <= 0:
            return
        for i, (score, name) in enumerate(zip(scores, names, strict=True)):
            if not math.isfinite(score):
                continue
            candidate = (score, name)
            enters_best = self._enters(self.best, self._best_key, candidate)
            enters_worst = self._enters(self.worst, self._worst_key, candidate)
            if not (enters_best or enters_worst):
                continue
            image, target, prediction = fetch(i)
            maps = [
                compact_class_map(t.detach(), num_classes, ignore_index).cpu() for t in (target, prediction)
            ]
            item = RankedImage(name, score, image.detach().cpu(), *maps)
            if enters_best:
                self.best = sorted([*self.best, item], key=self._best_key)[: self.k]
            if enters_worst:
                self.worst = sorted([*self.worst, item], key=self._worst_key)[: self.k]

    def merge(self, others: Sequence[tuple[list[RankedImage], list[RankedImage]]]) -> None:
        """Fold in the (best, worst) lists of other processes."""
        best = [*self.best, *(item for b, _ in others for item in b)]
        worst = [*self.worst, *(item for _, w in others for item in w)]
        self.best = sorted(best, key=self._best_key)[: self.k]
        self.worst = sorted(worst, key=self._worst_key)[: self.k]

    def gather(self) -> None:
        """Under DDP, every process's lists merged (a collective: call it on every rank). The test split is
        shared out between the processes, so each saw only its part."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self.best, self.worst))
        self.best, self.worst = [], []
        self.merge(parts)
