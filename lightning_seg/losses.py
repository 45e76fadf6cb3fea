"""``CompoundLoss``: a weighted sum of segmentation loss terms, each named in YAML.

The terms are segmentation-models-pytorch's losses and torch's cross-entropy; this module only chooses the
mode from the logits (one channel → binary/sigmoid, K channels → multiclass/softmax), passes
``ignore_index`` and class weights to every term, and runs them in float32 (Dice/Jaccard sums overflow fp16).

YAML::

    loss:
      class_path: lightning_seg.losses.CompoundLoss
      init_args:
        weights: {ce: 1.0, dice: 1.0}
        class_weights: median_frequency   # or a list, or null
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import segmentation_models_pytorch as smp
import torch
from torch import nn
from torch.nn import functional as F

from lightning_seg.data.stats import WeightRule
from lightning_seg.errors import ConfigError
from lightning_seg.models.outputs import NetOutput

PIXEL_TERMS = ("ce", "bce", "dice", "jaccard", "focal", "lovasz", "tversky")


class _BinaryCrossEntropy(nn.Module):
    """BCE on a one-channel head, averaged over the non-ignored pixels only.

    Written here because SMP's ``SoftBCEWithLogitsLoss`` zeroes ignored pixels but still divides by all
    pixels, so its scale shrinks with the fraction of ignored pixels.
    """

    def __init__(self, ignore_index: int, smooth_factor: float, pos_weight: torch.Tensor | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth_factor = smooth_factor
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits float B×1×H×W; target int64 B×H×W in {0, 1, ignore_index} → scalar."""
        valid = (target != self.ignore_index).unsqueeze(1)
        soft = torch.where(valid, target.unsqueeze(1), 0).to(logits.dtype)
        if self.smooth_factor:
            soft = soft * (1 - self.smooth_factor) + (1 - soft) * self.smooth_factor
        per_pixel = F.binary_cross_entropy_with_logits(
            logits, soft, pos_weight=self.pos_weight, reduction="none"
        )
        return (per_pixel * valid).sum() / valid.sum().clamp_min(1)


class CompoundLoss(nn.Module):
    """Weighted sum of pixel loss terms plus optional auxiliary-head and image-label terms.

    Args:
        weights: term name → weight. Names: ce (cross-entropy; BCE on a one-channel head), bce (one-channel
            heads only), dice, jaccard, focal, lovasz, tversky.
        class_weights: per-class weights (a list of ``num_classes`` floats), a rule computed from the data
            module's training-mask statistics (inverse_frequency, median_frequency, enet), or None.
            Used by ce, dice, jaccard, focal and tversky.
        label_smoothing: cross-entropy label smoothing.
        focal_gamma: focusing parameter of the focal term.
        tversky_alpha: false-positive weight of the Tversky term.
        tversky_beta: false-negative weight of the Tversky term.
        aux_weight: weight of the same pixel terms on an auxiliary head's logits (torchvision aux classifier).
        label_weight: weight of the image-level cross-entropy for nets with a class head.
    """

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        class_weights: list[float] | WeightRule | None = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        tversky_alpha: float = 0.5,
        tversky_beta: float = 0.5,
        aux_weight: float = 0.4,
        label_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.weights = dict(weights) if weights is not None else {"ce": 1.0, "dice": 1.0}
        unknown = sorted(set(self.weights) - set(PIXEL_TERMS))
        if unknown:
            raise ConfigError(f"loss.weights: unknown term(s) {unknown}; valid terms are {list(PIXEL_TERMS)}")
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.tversky = (tversky_alpha, tversky_beta)
        self.aux_weight = aux_weight
        self.label_weight = label_weight
        self.num_classes = 0
        self.ignore_index = -100
        self._weight_source: Callable[[str], Sequence[float] | torch.Tensor] | None = None
        # The terms are rebuilt for the head's mode and device, and kept out of the module tree: their
        # class-weight buffers would otherwise enter checkpoints only after the first step, and a checkpoint
        # would then fail to load into a fresh module (the resolved weights are saved by the module instead).
        self._terms: dict[str, nn.Module] = {}
        self._terms_key: tuple[bool, torch.device] | None = None
        self.weight_tensor: torch.Tensor | None = None

    def bind(
        self,
        num_classes: int,
        ignore_index: int,
        class_weight_source: Callable[[str], Sequence[float] | torch.Tensor] | None = None,
    ) -> None:
        """Learn the task from the data module: number of classes, ignore label, and where a class-weight
        rule gets its statistics. A rule is resolved on first use (or restored from a checkpoint with
        :meth:`set_class_weights`), so evaluating a checkpoint never needs the training data."""
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._weight_source = class_weight_source
        self.set_class_weights(None if isinstance(self.class_weights, str) else self.class_weights)

    @property
    def weights_pending(self) -> bool:
        """A class-weight rule that is not resolved (nor restored from a checkpoint) yet."""
        return isinstance(self.class_weights, str) and self.weight_tensor is None

    def set_class_weights(self, weights: Sequence[float] | torch.Tensor | None) -> None:
        """Use these per-class weights (e.g. resolved from a rule, or restored from a checkpoint)."""
        if weights is not None and len(weights) != self.num_classes:
            raise ConfigError(
                f"loss.class_weights has {len(weights)} values, the data has {self.num_classes} classes"
            )
        self.weight_tensor = (
            torch.as_tensor(weights, dtype=torch.float32).cpu() if weights is not None else None
        )
        self._terms_key = None  # rebuilt lazily for the head's mode and device

    def _resolve_rule(self) -> None:
        if self._weight_source is None:
            raise ConfigError(
                f"loss.class_weights={self.class_weights!r} needs a data module with class statistics"
            )
        self.set_class_weights(self._weight_source(self.class_weights))

    def _build_terms(self, binary: bool, device: torch.device) -> dict[str, nn.Module]:
        mode = "binary" if binary else "multiclass"
        weight = self.weight_tensor.to(device) if self.weight_tensor is not None else None
        cw = None if binary or weight is None else self.weight_tensor.tolist()
        # for a binary (one-channel) head, the positive-class weight is the ratio of the two class weights
        pos_weight = (weight[1] / weight[0]).reshape(1, 1, 1) if binary and weight is not None else None
        ii = self.ignore_index
        terms: dict[str, nn.Module] = {}
        for name in self.weights:
            if name == "ce" and not binary:
                terms[name] = nn.CrossEntropyLoss(
                    weight=weight, ignore_index=ii, label_smoothing=self.label_smoothing
                )
            elif name in ("ce", "bce"):
                if not binary:
                    raise ConfigError(
                        "loss.weights.bce needs a one-channel (binary) head; use ce for K classes"
                    )
                terms[name] = _BinaryCrossEntropy(ii, self.label_smoothing, pos_weight)
            elif name == "dice":
                terms[name] = smp.losses.DiceLoss(mode, ignore_index=ii, class_weights=cw)
            elif name == "jaccard":
                terms[name] = smp.losses.JaccardLoss(mode, ignore_index=ii, class_weights=cw)
            elif name == "focal":
                terms[name] = smp.losses.FocalLoss(
                    mode, gamma=self.focal_gamma, ignore_index=ii, class_weights=cw
                )
            elif name == "lovasz":
                terms[name] = smp.losses.LovaszLoss(mode, ignore_index=ii)
            elif name == "tversky":
                alpha, beta = self.tversky
                terms[name] = smp.losses.TverskyLoss(
                    mode, ignore_index=ii, alpha=alpha, beta=beta, class_weights=cw
                )
        for term in terms.values():
            term.to(device)
            # SMP keeps class weights as a plain tensor attribute and copies it to the device every call
            if isinstance(getattr(term, "class_weights", None), torch.Tensor):
                term.class_weights = term.class_weights.to(device)
        return terms

    def pixel_terms(self, logits: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted pixel term (unweighted values), float32.

        Args:
            logits: float B×K×H×W (K = 1 for a binary head).
            mask: int64 B×H×W with values in [0, K) or ``ignore_index``.
        """
        if self.weights_pending:
            self._resolve_rule()
        key = (logits.shape[1] == 1, logits.device)
        if self._terms_key != key:
            self._terms = self._build_terms(*key)
            self._terms_key = key
        logits = logits.float()
        # a batch without a labelled pixel has nothing to learn: every term is 0 with a zero gradient, never
        # NaN (torch's CE and SMP's focal divide 0 by 0 there; SMP's lovasz returns an empty tensor)
        has_labels = (mask != self.ignore_index).any()
        return {
            name: torch.where(has_labels, term(logits, mask), 0.0).sum() for name, term in self._terms.items()
        }

    def forward(
        self, output: NetOutput, mask: torch.Tensor, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Total and per-term losses.

        Args:
            output: the net's mask logits (B×K×H×W), optional aux logits and image-label logits (B×L).
            mask: int64 B×H×W target.
            label: int64 B image-level target (needed when ``output.label`` is given).

        Returns:
            ``{"loss": total, "<term>": value, "aux": ..., "label": ...}``, float32 scalars.
        """
        with torch.autocast(device_type=output.mask.device.type, enabled=False):
            parts = self.pixel_terms(output.mask, mask)
            total = sum(self.weights[name] * value for name, value in parts.items())
            if output.aux is not None and self.aux_weight > 0:
                aux_parts = self.pixel_terms(output.aux, mask)
                parts["aux"] = sum(self.weights[name] * value for name, value in aux_parts.items())
                total = total + self.aux_weight * parts["aux"]
            if output.label is not None and label is not None and self.label_weight > 0:
                # images whose target is unknown (-100: a derived label of a wholly ignored mask) count
                # nowhere; a batch of only those gives 0, not NaN
                known = (label != -100).any()
                parts["label"] = torch.where(known, F.cross_entropy(output.label.float(), label), 0.0)
                total = total + self.label_weight * parts["label"]
        parts["loss"] = total
        return parts
