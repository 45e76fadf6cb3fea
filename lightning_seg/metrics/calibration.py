"""Whether the probabilities mean what they say: expected calibration error (top-label and per class), the
reliability curve, and the pixels' negative log-likelihood, accumulated on the device without host syncs.

Top-label ECE (Guo et al. 2017): pixels binned by their highest probability (15 equal-width bins);
``ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|``. Per-class ECE (Kull et al. 2019's classwise ECE): for
each class c, pixels binned by p_c, ``|frequency of c − mean p_c|`` weighted the same way, averaged over the
classes that occur. Written here because torchmetrics' calibration error takes flat N×K inputs with
boolean indexing for ignored pixels (a host sync) and has no classwise variant.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

DEFAULT_BINS = 15
CHUNK = 1 << 22
"""Class × pixel values binned at once (4 Mi: 32 MiB of int64 indices)."""


class CalibrationBins(Metric):
    """Sums per confidence bin for the top-label and the per-class reliability curves, and the NLL.

    Args:
        num_classes: K.
        bins: equal-width bins over [0, 1].

    States (summed across processes): ``top`` bins×3 (pixels, Σ confidence, Σ correct), ``classwise``
    K×bins×3 (pixels, Σ p_c, Σ [target == c]), ``nll`` (Σ −log p_target, float64) and ``pixels``.
    """

    full_state_update = False

    def __init__(self, num_classes: int, bins: int = DEFAULT_BINS) -> None:
        super().__init__()
        self.num_classes, self.bins = num_classes, bins
        self.add_state("top", torch.zeros(bins, 3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "classwise", torch.zeros(num_classes, bins, 3, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("nll", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _bin(self, values: torch.Tensor) -> torch.Tensor:
        return (values * self.bins).long().clamp_(0, self.bins - 1)

    def update(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """One image (or batch): float K×(*) probabilities summing to 1 over K, int64 (*) targets, bool (*)
        pixels that count (not ``ignore_index``)."""
        k, bins = self.num_classes, self.bins
        p = probabilities.float().flatten(1)  # K×P
        y = target.flatten().clamp(0, k - 1)
        w = valid.flatten().float()
        # the decision's own argmax (on the K×H×W layout it takes: ties resolve as in the class maps)
        confidence, predicted = probabilities.float().max(0)
        confidence, predicted = confidence.flatten(), predicted.flatten()
        correct = (predicted == y).float()
        # float32 sums per image, added to the float64 states: scatter_add_ into fixed-size buffers (no
        # boolean indexing, no bincount: neither waits for the device)
        top = torch.zeros(3, bins, device=p.device)
        index = self._bin(confidence)
        for row, values in enumerate((w, confidence * w, correct * w)):
            top[row].scatter_add_(0, index, values)
        self.top += top.T.double()
        # per class: every class's probability of every pixel binned, offset by class, a few classes at a
        # time (at most CHUNK values: a 19-class 2048×1024 image would otherwise need K×P indices at once);
        # the pixels of class c are counted at the bin of their own p_c only (P entries, not K×P)
        classwise = torch.zeros(3, k * bins, device=p.device)
        step = max(1, CHUNK // max(p.shape[1], 1))
        for first in range(0, k, step):
            part = p[first : first + step]
            offset = torch.arange(first, first + len(part), device=p.device)[:, None] * bins
            class_index = (self._bin(part) + offset).flatten()
            classwise[0].scatter_add_(0, class_index, w.expand(len(part), -1).flatten())
            classwise[1].scatter_add_(0, class_index, (part * w).flatten())
        true_p = p.gather(0, y[None])[0]
        classwise[2].scatter_add_(0, self._bin(true_p) + y * bins, w)
        self.classwise += classwise.T.reshape(k, bins, 3).double()
        self.nll += (-true_p.double().clamp_min(1e-12).log() * w).sum()
        self.pixels += w.double().sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """float32 ``ECE`` (top-label), ``ECE_classwise`` (mean over the classes that occur), ``NLL`` (mean
        per pixel); float64 ``reliability`` bins×3 (pixels, mean confidence, accuracy; NaN for an empty bin)."""
        count, confidence, correct = self.top.unbind(1)
        total = count.sum().clamp_min(1)
        ece = ((confidence - correct).abs() / total).sum()
        c_count, c_prob, c_freq = self.classwise.unbind(-1)  # K×bins
        per_class_total = c_count.sum(1)
        per_class = (c_prob - c_freq).abs().sum(1) / per_class_total.clamp_min(1)
        occurs = c_freq.sum(1) > 0
        classwise = torch.where(occurs, per_class, 0).sum() / occurs.sum().clamp_min(1)
        safe = count.clamp_min(1)
        reliability = torch.stack(
            [
                count,
                torch.where(count > 0, confidence / safe, torch.nan),
                torch.where(count > 0, correct / safe, torch.nan),
            ],
            1,
        )
        return {
            "ECE": ece.float(),
            "ECE_classwise": classwise.float(),
            "NLL": (self.nll / self.pixels.clamp_min(1)).float(),
            "reliability": reliability,
        }


def fit_temperature(
    log_probabilities: torch.Tensor, target: torch.Tensor, per_class: bool = False, steps: int = 100
) -> torch.Tensor:
    """The temperature(s) T > 0 that minimise the NLL of ``softmax(log p / T)`` on held pixels.

    Args:
        log_probabilities: float N×K log-probabilities of N pixels (``log softmax`` of logits: dividing them
            by one T is temperature scaling of the logits, the normalising constant cancels; by one T per
            class, a vector scaling of the log-probabilities).
        target: int64 (N,) classes.
        per_class: one temperature per class (a vector scaling of the logits) instead of one.

    Returns:
        float32 (1,) or (K,) temperatures, fitted by L-BFGS on log T (so T stays positive), from T = 1.
    """
    z = log_probabilities.double()
    log_t = torch.zeros(z.shape[1] if per_class else 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().exp().float()
