"""Boundary IoU (Cheng et al., CVPR 2021): IoU restricted to the bands within ``d`` pixels of each mask's
contour, so a metric that large interiors dominate (mIoU) is complemented by one that sees the edges.

For a binary mask M of an H×W image, its band is ``M − erode(M, d)`` with ``d = max(1, round(0.02 ·
√(H² + W²)))`` and the erosion of the reference implementation (``cv2.erode`` with a 3×3 kernel, ``d``
iterations, after a one-pixel zero border so a mask cut by the image border has a band there): a pixel stays
when every pixel within Chebyshev distance ``d`` is in M, outside the image counting as not in M. Here the
erosion counts the pixels outside M in each (2d+1)² window with an integral image on the device, in time
independent of ``d``; the reference code is NumPy/OpenCV on the host, per image and class.

Per class c, pooled over the evaluation: ``Σ |G_d ∩ P_d| / Σ |G_d ∪ P_d|`` with G = (target == c),
P = (prediction == c), both with the pixels whose target is ``ignore_index`` taken out of every class
before the bands are made (a hole in both), and counted in neither band. ``boundary_mIoU`` is the
mean over the classes whose bands are not both empty.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from torchmetrics import Metric

DILATION_RATIO = 0.02


def band_width(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """``d`` of an H×W image: ``max(1, round(ratio · diagonal))`` (the reference's rule)."""
    return max(1, int(round(ratio * math.sqrt(height**2 + width**2))))


def erode(masks: torch.Tensor, d: int) -> torch.Tensor:
    """bool K×H×W masks eroded by a (2d+1)² square, outside the image counting as background: a pixel
    stays when its window holds no pixel outside the mask, counted with an integral image (two cumulative
    sums and four gathers per class, whatever ``d``)."""
    k, h, w = masks.shape
    outside = F.pad((~masks).to(torch.int32), (d, d, d, d), value=1)  # K×(H+2d)×(W+2d)
    integral = F.pad(outside.cumsum(1).cumsum(2), (1, 0, 1, 0))  # a zero row and column first
    side = 2 * d + 1
    window = (
        integral[:, side : side + h, side : side + w]
        - integral[:, :h, side : side + w]
        - integral[:, side : side + h, :w]
        + integral[:, :h, :w]
    )
    return window == 0


def boundary_bands(classes: torch.Tensor, num_classes: int, d: int) -> torch.Tensor:
    """bool K×H×W: each class's band (its mask minus its erosion) of an int64 H×W class map."""
    masks = classes[None] == torch.arange(num_classes, device=classes.device).view(-1, 1, 1)
    return masks & ~erode(masks, d)


class BoundaryIoU(Metric):
    """Per-class sums of band intersections and unions over an evaluation (see the module docstring),
    summed across processes; updated one image at a time at its own size, without a host sync.

    Args:
        num_classes: K.
        ignore_index: the targets' ignore label.
        ratio: the band width as a share of the image diagonal.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int, ratio: float = DILATION_RATIO) -> None:
        super().__init__()
        self.num_classes, self.ignore_index, self.ratio = num_classes, ignore_index, ratio
        self.add_state("intersection", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """int64 H×W predicted classes against the int64 H×W target of one image."""
        h, w = target.shape[-2:]
        d = band_width(h, w, self.ratio)
        valid = target != self.ignore_index
        # ignored pixels are in no class on either side: a hole in the truth is a hole in the prediction too,
        # so a perfect prediction has the truth's bands (around the hole as well) and scores 1
        truth = boundary_bands(torch.where(valid, target, -1), self.num_classes, d) & valid
        predicted = boundary_bands(torch.where(valid, prediction, -1), self.num_classes, d) & valid
        self.intersection += (truth & predicted).flatten(1).sum(1).double()
        self.union += (truth | predicted).flatten(1).sum(1).double()

    def compute(self) -> dict[str, torch.Tensor]:
        """float32 ``boundary_iou`` (K,) (NaN for a class with both bands empty) and ``boundary_mIoU``."""
        iou = torch.where(self.union > 0, self.intersection / self.union.clamp_min(1), torch.nan)
        return {"boundary_iou": iou.float(), "boundary_mIoU": iou.nanmean().float()}
