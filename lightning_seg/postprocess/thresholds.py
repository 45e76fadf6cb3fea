"""Per-class probability thresholds: the decision rule, the one-pass search that tunes them, their file.

The decision rule (with thresholds ``t``, one per class):

* a pixel's candidates are the classes whose probability is at least their threshold, ``p_c >= t_c``;
* the winner is the most probable candidate (``rule: margin``: the candidate with the largest
  ``p_c - t_c``);
* a pixel without a candidate gets the background, class 0 (``fallback: background``), or its most probable
  class (``fallback: argmax``). The default, ``auto``, is ``background`` when class 0 is named as a
  background (:data:`BACKGROUND_NAMES`) and ``argmax`` otherwise: in CamVid class 0 is Sky, and a fallback
  to class 0 labelled every undecided pixel Sky (test IoU of Sky 0.893 → 0.793 with thresholds tuned out of
  fold, BENCHMARKS.md).

Without thresholds the class map is the argmax (for a one-channel head: ``p > binary_threshold``).
A class that ``tune`` could not tune (no pixel of it in the calibration split) has no threshold (null in
the file): it is a candidate where it is the most probable class, as without thresholds.

Search (``tune``): for each class c and each threshold ``t_j`` of a grid (0.00 to 1.00 by 0.01), the
one-vs-rest counts TP, FP, FN of the decision ``p_c >= t_j`` over the calibration split. One pass: each
pixel's probability is binned once per class, and the counts for every threshold follow from cumulative
sums of the bins (a pixel with ``p >= t_j`` is one in bin j or above), so 101 thresholds cost one histogram,
not 101 passes. Then each class takes the threshold that maximises its Dice (or IoU); ties go to the
threshold closest to 0.5.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torchmetrics import Metric

from lightning_seg.errors import ConfigError, short_path
from lightning_seg.postprocess.base import Prediction, Step
from lightning_seg.utils.class_argmax import class_argmax

THRESHOLDS_FORMAT = "lightning_seg.thresholds/1"
THRESHOLDS_SUFFIX = ".thresholds.json"

Rule = Literal["probability", "margin"]
Fallback = Literal["auto", "background", "argmax"]
BACKGROUND_NAMES = ("background", "bg", "_background_", "__background__", "backgrounds", "back")
"""Class-0 names that mean "none of the other classes": ``fallback: auto`` then falls back to class 0."""


def resolve_fallback(fallback: Fallback, class_names: Sequence[str]) -> Fallback:
    """``auto`` → "background" when class 0 is named as a background, else "argmax"; others as given."""
    if fallback != "auto":
        return fallback
    first = str(class_names[0]).strip().lower() if class_names else ""
    return "background" if first in BACKGROUND_NAMES else "argmax"


def decide(
    probabilities: torch.Tensor,
    thresholds: torch.Tensor | None = None,
    rule: Rule = "probability",
    fallback: Fallback = "background",
) -> torch.Tensor:
    """The class map from probabilities (see the module's docstring for the rule).

    Args:
        probabilities: float32 K×H×W (or B×K×H×W) probabilities, K ≥ 2.
        thresholds: float32 (K,) or None (argmax); NaN for a class without a threshold (a candidate
            where it is the argmax).

    Returns:
        int64 H×W (or B×H×W).
    """
    if thresholds is None:
        return class_argmax(probabilities, -3)
    shape = (-1, 1, 1)
    t = thresholds.to(probabilities.device, probabilities.dtype).view(shape)
    argmax = class_argmax(probabilities, -3, keepdim=True)
    classes = torch.arange(probabilities.shape[-3], device=probabilities.device).view(shape)
    untuned = t.isnan()
    candidate = torch.where(untuned, argmax == classes, probabilities >= t)
    score = probabilities - t.nan_to_num(0.0) if rule == "margin" else probabilities
    # non-candidates score below every candidate (probabilities and margins are >= -1)
    winner = class_argmax(torch.where(candidate, score, -2.0), -3)
    none = ~candidate.any(-3)
    otherwise = argmax[..., 0, :, :] if fallback == "argmax" else torch.zeros_like(winner)
    return torch.where(none, otherwise, winner)


def grid(steps: int) -> torch.Tensor:
    """float64 (steps,) thresholds 0 .. 1 evenly spaced (101 steps: 0.00, 0.01, ..., 1.00)."""
    return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)


class ThresholdHistogram(Metric):
    """Counts of (probability bin, class) for positive and negative samples, summed across processes.

    A sample is a pixel (or an image, for image-level labels). ``positive[c, j]`` counts the samples of
    class c (one-vs-rest truth) whose probability of c falls in bin j, where bin j holds ``[t_j, t_{j+1})``
    and the last bin holds exactly 1.0. Counting ``p >= t_j`` is then a reversed cumulative sum.

    Args:
        num_classes: C, the classes (or labels) tuned.
        steps: thresholds in the grid (101: 0.00 .. 1.00 by 0.01).
    """

    full_state_update = False

    def __init__(self, num_classes: int, steps: int = 101) -> None:
        super().__init__()
        if steps < 2:
            raise ConfigError(f"tune: the threshold grid needs at least 2 steps, got {steps}")
        self.num_classes, self.steps = num_classes, steps
        shape = (num_classes, steps)
        self.add_state("positive", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("negative", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probabilities: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor) -> None:
        """Count one batch.

        Args:
            probabilities: float N×C×(*) probabilities (pixels: N×C×H×W; image labels: N×C).
            positive: bool N×C×(*) one-vs-rest truth, the same shape.
            valid: bool N×(*) samples that count (not ``ignore_index``).
        """
        c, steps = self.num_classes, self.steps
        # p ≥ t_j ⇔ bin ≥ j for t_j = j/(steps-1); the float32 product can land a hair below an exact
        # grid point (0.29*100 = 28.999998), so round to 1e-4 of a step first
        scaled = probabilities.float() * (steps - 1)
        bins = (scaled + 1e-4).floor().clamp_(0, steps - 1).long()
        classes = torch.arange(c, device=bins.device).view(1, c, *([1] * (bins.dim() - 2)))
        index = classes * steps + bins + torch.where(positive, 0, c * steps)
        index = torch.where(valid.unsqueeze(1), index, 2 * c * steps)  # excluded samples: one extra bin
        counts = torch.zeros(2 * c * steps + 1, dtype=torch.long, device=index.device)
        counts.index_add_(
            0, index.flatten(), torch.ones(index.numel(), dtype=torch.long, device=index.device)
        )
        self.positive += counts[: c * steps].view(c, steps)
        self.negative += counts[c * steps : 2 * c * steps].view(c, steps)

    def counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """int64 C×steps TP, FP, FN of the decision ``p_c >= t_j`` for every class and threshold, from
        this process's counts (:meth:`compute` gives them summed across processes)."""
        tp = self.positive.flip(1).cumsum(1).flip(1)
        fp = self.negative.flip(1).cumsum(1).flip(1)
        fn = self.positive.sum(1, keepdim=True) - tp
        return tp, fp, fn

    def compute(self) -> dict[str, torch.Tensor]:
        """``tp``, ``fp``, ``fn`` (int64 C×steps) summed across processes."""
        tp, fp, fn = self.counts()
        return {"tp": tp, "fp": fp, "fn": fn}


def scores(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 Dice (F1) or IoU from counts (any shape); NaN where the class is absent and never predicted."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    if metric == "iou":
        numerator, denominator = tp, tp + fp + fn
    else:
        numerator, denominator = 2 * tp, 2 * tp + fp + fn
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.nan)


def precision_recall_curve(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall and the average precision of the decision ``p >= t_j`` on an ascending grid.

    Args:
        tp: int64 (..., steps) true positives at each threshold (:meth:`ThresholdHistogram.compute`).
        fp: int64 (..., steps) false positives, the same shape.
        fn: int64 (..., steps) false negatives, the same shape.

    Returns:
        ``precision`` float64 (..., steps), NaN where nothing is predicted positive; ``recall`` float64
        (..., steps), NaN without a positive sample; ``average_precision`` float64 (...): the step sum
        ``Σ_j (R_j - R_{j+1}) · P_j`` from the highest threshold down, closed at recall 0 (as
        scikit-learn's ``average_precision_score`` and torchmetrics' binned AP), NaN without a positive.
        Samples that tie within a bin share one point, so the AP differs from the exact one by at most
        the spread inside a bin.
    """
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    predicted, positives = tp + fp, tp + fn
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.nan)
    recall = torch.where(positives > 0, tp / positives.clamp_min(1), torch.nan)
    # a threshold above every sample predicts nothing: recall 0 there, so its undefined precision adds 0
    closed_precision = precision.nan_to_num(1.0)
    closed_recall = torch.cat([recall.nan_to_num(0.0), torch.zeros_like(recall[..., :1])], -1)
    gained = closed_recall[..., :-1] - closed_recall[..., 1:]  # recall added going down to t_j
    average_precision = (gained * closed_precision).sum(-1)
    average_precision = torch.where(positives[..., 0] > 0, average_precision, torch.nan)
    return {"precision": precision, "recall": recall, "average_precision": average_precision}


def best_thresholds(histogram: ThresholdHistogram, metric: str) -> dict[str, Any]:
    """The threshold of each class that maximises its one-vs-rest score, from a filled histogram.

    Returns a dict of lists, one entry per class: ``thresholds`` (float; None for a class with no positive
    sample in the calibration data, see :func:`decide`), ``score`` (the score there), ``positives``
    (calibration samples of the class); and ``untuned`` (the indices without a threshold).
    """
    counts = histogram.compute()  # summed across processes
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    score = scores(tp, fp, fn, metric).nan_to_num(-1.0)
    values = grid(histogram.steps)
    # ties go to the threshold closest to 0.5 (a plateau of equal scores has no better point)
    closeness = -(values - 0.5).abs().to(score.device).expand_as(score)
    at_best = score == score.max(1, keepdim=True).values
    index = torch.where(at_best, closeness, -torch.inf).argmax(1)
    positives = tp[:, 0] + fn[:, 0]  # p ≥ 0 holds for every sample
    untuned = positives == 0
    chosen = values.to(score.device)[index]
    best_score = score.gather(1, index[:, None])[:, 0]
    return {
        "thresholds": [
            None if u else round(float(v), 6) for v, u in zip(chosen.tolist(), untuned.tolist(), strict=True)
        ],
        "score": [
            None if u else float(s) for s, u in zip(best_score.tolist(), untuned.tolist(), strict=True)
        ],
        "positives": positives.tolist(),
        "untuned": [i for i, u in enumerate(untuned.tolist()) if u],
    }


# ------------------------------------------------------------------------------------------- the file
def thresholds_path(checkpoint: str | Path) -> Path:
    """Where ``tune`` writes the thresholds of a checkpoint: beside it, ``<name>.thresholds.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + THRESHOLDS_SUFFIX)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (a checkpoint), to tell whether thresholds were tuned for this very file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_thresholds(
    path: str | Path, class_names: Sequence[str], checkpoint: str | Path | None
) -> dict[str, Any]:
    """Load and check a thresholds file: its format, its classes against the model's, and that the
    checkpoint it was tuned for is the one evaluated (same content). Raises ConfigError in one line."""
    path = Path(path)
    where = short_path(str(path))
    if not path.is_file():
        raise ConfigError(
            f"{where}: no thresholds file; run `python -m lightning_seg tune` with this config and "
            "checkpoint first, or remove ClassThresholds from model.postprocess"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where}: not a readable thresholds file ({error})") from error
    data = check_thresholds(data, class_names, where)
    tuned_for = data.get("checkpoint_sha256")
    if checkpoint is not None and tuned_for and Path(checkpoint).is_file():
        if file_digest(checkpoint) != tuned_for:
            raise ConfigError(
                f"{where}: tuned for another version of {short_path(str(checkpoint))} (it changed since); "
                "run tune again"
            )
    return data


def check_thresholds(data: Any, class_names: Sequence[str], where: str) -> dict[str, Any]:
    """Check thresholds (a file's content): its format and its classes against the model's."""
    if not isinstance(data, dict) or data.get("format") != THRESHOLDS_FORMAT:
        raise ConfigError(f"{where}: not a lightning_seg thresholds file (format {THRESHOLDS_FORMAT})")
    names = list(data.get("class_names") or [])
    thresholds = (data.get("classes") or {}).get("thresholds") or []
    if len(thresholds) != len(class_names) or len(names) != len(class_names):
        raise ConfigError(
            f"{where}: thresholds for {len(thresholds)} classes, the model has {len(class_names)}; "
            "tune again for this model"
        )
    if names != list(class_names):
        raise ConfigError(f"{where}: tuned for classes {names}, the model's are {list(class_names)}")
    return data


class ClassThresholds(Step):
    """The decision by per-class thresholds tuned with ``tune`` (see the module's docstring for the rule).

    Args:
        path: the thresholds file; None: the one ``tune`` wrote beside the evaluated checkpoint
            (``<checkpoint>.thresholds.json``).
        rule: "probability" (the most probable candidate wins) or "margin" (the largest ``p - t``).
        fallback: a pixel without a candidate gets "background" (class 0) or its "argmax"; "auto":
            "background" when class 0 is named as a background (:data:`BACKGROUND_NAMES`), else "argmax"
            (resolved when the model gives its class names).
        label_thresholds: also decide an image-level head's multi-label output with the tuned label
            thresholds of the file (else 0.5).
    """

    acts_on = "decision"
    name = "thresholds"

    def __init__(
        self,
        path: str | None = None,
        rule: Rule = "probability",
        fallback: Fallback = "auto",
        label_thresholds: bool = True,
    ) -> None:
        self.path = path
        self.rule: Rule = rule
        self.fallback: Fallback = fallback
        self.label_thresholds = label_thresholds
        self.thresholds: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.source: Path | None = None
        # the loaded file's content, as plain data (``export`` embeds it into its bundle)
        self.data: dict[str, Any] | None = None

    def for_classes(self, class_names: list[str]) -> ClassThresholds:
        """This step with ``fallback: auto`` resolved for the model's classes (see :func:`resolve_fallback`)."""
        step = copy.copy(self)
        step.fallback = resolve_fallback(self.fallback, class_names)
        return step

    def load(
        self,
        class_names: Sequence[str],
        checkpoint: str | None,
        inference: str | None = None,
        tuned_after: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        embedded: dict[str, Any] | None = None,
    ) -> None:
        """Read the thresholds for this model and checkpoint (called when test or predict starts), and
        refuse a file tuned on other probabilities: another inference setting (``inference``, e.g.
        ``slide ... + hflip``) or other steps before the decision (``tuned_after``, e.g. a CRF), or for
        other image labels (``label_names``).

        Where from: ``path`` when given; else the file ``tune`` wrote beside the checkpoint; else the
        thresholds the checkpoint itself carries (``embedded``: ``export``'s bundle holds them).
        """
        if self.path is None and checkpoint is None and embedded is None:
            raise ConfigError(
                "model.postprocess ClassThresholds: no path and no --ckpt_path to find the tuned "
                "thresholds beside; give ClassThresholds.path"
            )
        beside = thresholds_path(str(checkpoint)) if checkpoint is not None else None
        if self.path is None and embedded is not None and (beside is None or not beside.is_file()):
            source = Path(str(checkpoint) if checkpoint is not None else "checkpoint")
            where = f"{short_path(str(source))} (embedded thresholds)"
            data = check_thresholds(embedded, class_names, where)
        else:
            source = Path(self.path) if self.path is not None else beside
            data = read_thresholds(source, class_names, checkpoint)
            where = short_path(str(source))
        for key, current in (("inference", inference), ("tuned_after", tuned_after)):
            tuned = data.get(key)
            if (
                current is not None
                and tuned is not None
                and tuned != (list(current) if key == "tuned_after" else current)
            ):
                what = "inference" if key == "inference" else "post-processing before the decision"
                raise ConfigError(
                    f"{where}: tuned with {what} {tuned!r}, this run uses {current!r}; run tune with this "
                    "config (thresholds fit the probabilities they were tuned on)"
                )
        nan = float("nan")
        self.thresholds = torch.tensor(
            [nan if t is None else t for t in data["classes"]["thresholds"]], dtype=torch.float32
        )
        labels = data.get("labels")
        self.labels = None
        if labels and self.label_thresholds:
            names = labels.get("names") or []
            if label_names is not None and list(names) != list(label_names):
                raise ConfigError(
                    f"{where}: label thresholds for {list(names)}, the model's labels are {list(label_names)}; "
                    "tune again for this model"
                )
            # a label without a threshold (no positive image in the calibration split) keeps 0.5
            self.labels = torch.tensor(
                [0.5 if t is None else t for t in labels["thresholds"]], dtype=torch.float32
            )
        self.source = source
        self.data = data

    def apply(self, predictions: list[Prediction]) -> None:
        if self.thresholds is None:
            raise ConfigError(
                "model.postprocess ClassThresholds: thresholds not loaded (internal order error)"
            )
        for prediction in predictions:
            prediction.classes = decide(prediction.probabilities, self.thresholds, self.rule, self.fallback)

    def describe(self) -> str:
        return "thresholds" + (" (margin)" if self.rule == "margin" else "")
