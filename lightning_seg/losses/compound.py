"""``CompoundLoss``: a weighted sum of segmentation loss terms, each named in YAML.

The terms are segmentation-models-pytorch's losses (dice, jaccard, tversky), torch's cross-entropy, and
SMP's focal and Lovász formulas without their host syncs (:mod:`lightning_seg.losses.terms`); this module only
chooses the mode from the logits (one channel → binary/sigmoid, K channels → multiclass/softmax), passes
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
from typing import Literal

import segmentation_models_pytorch as smp
import torch
from torch import nn
from torch.nn import functional as F

from lightning_seg.data.stats import DEFAULT_BETA, WeightRule
from lightning_seg.errors import ConfigError
from lightning_seg.labels import NO_LABEL
from lightning_seg.losses.split_sums import term_from_sums, term_sums
from lightning_seg.losses.terms import BinaryCrossEntropy, FocalLoss, LovaszLoss
from lightning_seg.models.outputs import NetOutput

PIXEL_TERMS = ("ce", "bce", "dice", "jaccard", "focal", "lovasz", "tversky")
LABEL_LOSSES = {"single": ("ce", "focal"), "multi": ("bce", "focal")}
"""The image-label losses each label mode takes (softmax ones for single, sigmoid ones for multi)."""


WeightSource = Callable[[str, float], Sequence[float] | torch.Tensor]
"""Computes weights from a rule name and the ``effective_number`` rule's β (the data module's class or label
statistics)."""


class RuleOrListWeights:
    """Loss weights as configured: a list, a rule resolved from the data's statistics on first use (or
    restored from a checkpoint with :meth:`set`), or None. One of these for pixel classes, one for labels.

    Args:
        given: the configured value (a list, a rule name, or None).
        key: the config key, for messages ("loss.class_weights").
        owner: what the values must match, for messages ("the data has {n} classes").
        statistics: what a rule is computed from, for messages ("class statistics").
        size: the number of weights (None: not made for a task yet).
        source: what resolves a rule.
        beta: the ``effective_number`` rule's β.
        background_factor: multiplies entry 0's weight (the background class) of a list or a resolved rule;
            with no weights at all, weights of 1 with entry 0 this factor. Restored weights already hold it.
    """

    def __init__(
        self,
        given: Sequence[float] | str | None,
        key: str,
        owner: str,
        statistics: str,
        size: int | None = None,
        source: WeightSource | None = None,
        beta: float = DEFAULT_BETA,
        background_factor: float = 1.0,
    ) -> None:
        self.given, self.key, self.owner, self.statistics = given, key, owner, statistics
        self.size, self.source = size, source
        self.beta, self.background_factor = beta, background_factor
        self.tensor: torch.Tensor | None = None  # resolved, on the CPU
        self._on_device: torch.Tensor | None = None  # its copy on the device last asked for
        if size is not None:  # made for a task: a list is checked now, a rule waits for its first use
            self.set(None if isinstance(given, str) else given)
            if not isinstance(given, str):
                self.tensor = self._with_background(self.tensor)

    def _with_background(self, weights: torch.Tensor | None) -> torch.Tensor | None:
        """``weights`` with entry 0 times :attr:`background_factor` (weights of 1 where there are none)."""
        if self.background_factor == 1.0 or self.size is None:
            return weights
        scaled = weights.clone() if weights is not None else torch.ones(self.size, dtype=torch.float32)
        scaled[0] *= self.background_factor
        return scaled

    @property
    def pending(self) -> bool:
        """A rule that is not resolved (nor restored from a checkpoint) yet."""
        return isinstance(self.given, str) and self.tensor is None

    def set(self, weights: Sequence[float] | torch.Tensor | None) -> None:
        """Use these weights (given, resolved from a rule, or restored from a checkpoint)."""
        if weights is not None and len(weights) != self.size:
            raise ConfigError(f"{self.key} has {len(weights)} values, {self.owner.format(n=self.size)}")
        self.tensor = torch.as_tensor(weights, dtype=torch.float32).cpu() if weights is not None else None
        self._on_device = None

    def resolved(self) -> torch.Tensor | None:
        """float32 (size,) weights on the CPU, resolving a rule now if needed; None without weights."""
        if self.pending:
            if self.source is None:
                raise ConfigError(f"{self.key}={self.given!r} needs a data module with {self.statistics}")
            self.set(self.source(str(self.given), self.beta))
            self.tensor = self._with_background(self.tensor)
        return self.tensor

    def on(self, device: torch.device) -> torch.Tensor | None:
        """:meth:`resolved` on ``device``, copied once rather than every step."""
        tensor = self.resolved()
        if tensor is None:
            return None
        if self._on_device is None or self._on_device.device != device:
            self._on_device = tensor.to(device)
        return self._on_device


class CompoundLoss(nn.Module):
    """Weighted sum of pixel loss terms plus optional auxiliary-head and image-label terms.

    Args:
        weights: term name → weight. Names: ce (cross-entropy; BCE on a one-channel head), bce (one-channel
            heads only), dice, jaccard, focal, lovasz, tversky.
        class_weights: per-class weights (a list of ``num_classes`` floats), a rule computed from the data
            module's training-mask statistics (inverse_frequency, median_frequency, enet, effective_number),
            or None. Used by ce, dice, jaccard, focal and tversky.
        class_weight_beta: β of the effective_number rule (Cui et al. 2019), for class and label weights.
        background_weight: multiplies the background's (class 0) weight after any rule or list; with no
            class_weights, the weights are 1 with the background's this (one notebook used 10).
        label_smoothing: cross-entropy label smoothing.
        focal_gamma: focusing parameter of the focal term.
        focal_alpha: the focal term's positive-vs-negative balance (``α`` for a pixel of the class, ``1 - α``
            for the others, one-vs-rest; RetinaNet's 0.25); None: unbalanced. Also the multi-label focal
            image term's.
        dice_smooth: the Dice term's additive smoothing, ``(2 I + s) / (|P| + |Y| + s)`` per class.
        tversky_alpha: false-positive weight of the Tversky term.
        tversky_beta: false-negative weight of the Tversky term.
        tversky_gamma: the focal-Tversky exponent: the term is ``(1 - Tversky index)^gamma`` per class (1:
            plain Tversky; 0.75 in one notebook, Abraham & Khan 2019 use 4/3).
        aux_weight: weight of the same pixel terms on an auxiliary head's logits (torchvision aux classifier);
            0: SegmentationModule builds the net without that head.
        label_weight: weight of the image-level term for nets with a class head; 0: SegmentationModule
            builds the net without it.
        label_loss: the image-level term: "ce" (single-label softmax cross-entropy), "bce" (multi-label
            sigmoid BCE) or "focal" (softmax focal for single, sigmoid focal for multi; ``focal_gamma``);
            None: "ce" for single-label heads, "bce" for multi-label ones.
        label_class_weights: per-label weights (CE ``weight`` for single, BCE/focal ``pos_weight`` for
            multi): a list of L floats, or a rule (inverse_frequency, median_frequency, enet) computed from
            the training split's label frequencies as ``class_weights`` is from pixel frequencies.

    The object YAML builds is the loss as configured; a model makes the loss of its task from it with
    :meth:`for_task` (number of classes, ignore label, label head, where weight rules read statistics), a
    new object complete when returned.
    """

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        class_weights: list[float] | WeightRule | None = None,
        class_weight_beta: float = DEFAULT_BETA,
        background_weight: float = 1.0,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        dice_smooth: float = 0.0,
        tversky_alpha: float = 0.5,
        tversky_beta: float = 0.5,
        tversky_gamma: float = 1.0,
        aux_weight: float = 0.4,
        label_weight: float = 0.5,
        label_loss: Literal["ce", "bce", "focal"] | None = None,
        label_class_weights: list[float] | WeightRule | None = None,
    ) -> None:
        super().__init__()
        # as given, for for_task's copy
        self.options = {
            "weights": weights,
            "class_weights": class_weights,
            "class_weight_beta": class_weight_beta,
            "background_weight": background_weight,
            "label_smoothing": label_smoothing,
            "focal_gamma": focal_gamma,
            "focal_alpha": focal_alpha,
            "dice_smooth": dice_smooth,
            "tversky_alpha": tversky_alpha,
            "tversky_beta": tversky_beta,
            "tversky_gamma": tversky_gamma,
            "aux_weight": aux_weight,
            "label_weight": label_weight,
            "label_loss": label_loss,
            "label_class_weights": label_class_weights,
        }
        self.weights = dict(weights) if weights is not None else {"ce": 1.0, "dice": 1.0}
        unknown = sorted(set(self.weights) - set(PIXEL_TERMS))
        if unknown:
            raise ConfigError(f"loss.weights: unknown term(s) {unknown}; valid terms are {list(PIXEL_TERMS)}")
        checks = (
            ("class_weight_beta", class_weight_beta, 0 <= class_weight_beta < 1, "in [0, 1)"),
            ("focal_alpha", focal_alpha, focal_alpha is None or 0 <= focal_alpha <= 1, "in [0, 1] or null"),
            ("background_weight", background_weight, background_weight > 0, "> 0"),
            ("dice_smooth", dice_smooth, dice_smooth >= 0, ">= 0"),
            ("tversky_gamma", tversky_gamma, tversky_gamma > 0, "> 0"),
        )
        for name, value, valid, expected in checks:
            if not valid:
                raise ConfigError(f"loss.{name} must be {expected}, got {value}")
        self.class_weights = class_weights
        self.class_weight_beta = class_weight_beta
        self.background_weight = background_weight
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.dice_smooth = dice_smooth
        self.tversky = (tversky_alpha, tversky_beta)
        self.tversky_gamma = tversky_gamma
        self.aux_weight = aux_weight
        self.label_weight = label_weight
        self.num_classes = 0
        self.ignore_index = -100
        self.pixel_weights = RuleOrListWeights(
            class_weights, "loss.class_weights", "the data has {n} classes", "class statistics"
        )
        # The terms are rebuilt for the head's mode and device, and kept out of the module tree: their
        # class-weight buffers would otherwise enter checkpoints only after the first step, and a checkpoint
        # would then fail to load into a fresh module (the resolved weights are saved by the module instead).
        self._terms: dict[str, nn.Module] = {}
        self._terms_key: tuple[bool, torch.device] | None = None
        self.label_loss = label_loss
        self.label_class_weights = label_class_weights
        self.label_mode = "single"
        self.num_labels = 0
        self.label_weights = RuleOrListWeights(
            label_class_weights, "loss.label_class_weights", "the class head has {n} labels", "label counts"
        )

    def for_task(
        self,
        num_classes: int,
        ignore_index: int,
        label_mode: Literal["single", "multi"] = "single",
        num_labels: int = 0,
        class_weight_source: WeightSource | None = None,
        label_weight_source: WeightSource | None = None,
    ) -> CompoundLoss:
        """This configured loss made for a task: ``num_classes`` (background included), the ignore label, the
        image-level head's mode and number of labels, and where a ``class_weights`` (``label_class_weights``)
        rule reads its statistics. A rule is resolved on first use (or restored from a checkpoint with
        :meth:`set_class_weights`), so evaluating a checkpoint never needs the training data.

        Raises:
            ConfigError: a weight list of another length, or a ``label_loss`` that does not fit ``label_mode``.
        """
        kind = self.label_loss or LABEL_LOSSES[label_mode][0]
        if kind not in LABEL_LOSSES[label_mode]:
            raise ConfigError(
                f"loss.label_loss={kind!r} does not fit {label_mode}-label heads; use one of "
                f"{list(LABEL_LOSSES[label_mode])}"
            )
        loss = type(self)(**self.options)
        loss.num_classes, loss.ignore_index = num_classes, ignore_index
        loss.label_mode, loss.num_labels = label_mode, num_labels
        loss.pixel_weights = RuleOrListWeights(
            self.class_weights,
            "loss.class_weights",
            "the data has {n} classes",
            "class statistics",
            num_classes,
            class_weight_source,
            self.class_weight_beta,
            self.background_weight,
        )
        loss.label_weights = RuleOrListWeights(
            self.label_class_weights,
            "loss.label_class_weights",
            "the class head has {n} labels",
            "label counts",
            num_labels,
            label_weight_source,
            self.class_weight_beta,
        )
        return loss

    @property
    def weight_tensor(self) -> torch.Tensor | None:
        """The resolved per-class weights (float32 (K,), CPU), or None."""
        return self.pixel_weights.tensor

    @property
    def weights_pending(self) -> bool:
        """A class-weight rule that is not resolved (nor restored from a checkpoint) yet."""
        return self.pixel_weights.pending

    def set_class_weights(self, weights: Sequence[float] | torch.Tensor | None) -> None:
        """Use these per-class weights (e.g. resolved from a rule, or restored from a checkpoint)."""
        self.pixel_weights.set(weights)
        self._terms_key = None  # rebuilt lazily for the head's mode and device

    @property
    def label_weight_tensor(self) -> torch.Tensor | None:
        """The resolved per-label weights (float32 (L,), CPU), or None."""
        return self.label_weights.tensor

    @property
    def label_weights_pending(self) -> bool:
        """A label-weight rule that is not resolved (nor restored from a checkpoint) yet."""
        return self.label_weights.pending

    def set_label_class_weights(self, weights: Sequence[float] | torch.Tensor | None) -> None:
        """Use these per-label weights (resolved from a rule, or restored from a checkpoint)."""
        self.label_weights.set(weights)

    def label_term(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The image-level loss, float32 scalar; 0 with a zero gradient when no target is known.

        Args:
            logits: float B×L.
            target: int64 (B,) label indices (single) or float B×L 0/1 (multi); :data:`NO_LABEL` (-100)
                where unknown (counted nowhere).

        Single: ``sum_i w[y_i] · l_i / sum_i w[y_i]`` (torch's weighted CE mean), with
        ``l_i = -log p_{y_i}`` for "ce" and ``(1 - p_{y_i})^gamma · -log p_{y_i}`` for "focal". Multi: the
        mean over known entries of BCE with ``pos_weight`` = the label weights, times ``(1 - p_t)^gamma``
        for "focal" (torchvision's ``sigmoid_focal_loss`` without alpha when unweighted).
        """
        total, weight = self.label_sums(logits, target)
        # a sum over a clamped denominator, not torch's mean: 0 (not NaN) when nothing is known
        return total / weight.clamp_min(torch.finfo(torch.float32).tiny)

    def label_sums(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The image-level loss's numerator and denominator (see :meth:`label_term`), float32 (2,):
        ``[sum_i w[y_i] · l_i, sum_i w[y_i]]`` (single) or ``[the sum over known entries, their number]``
        (multi)."""
        logits = logits.float()
        weights = self.label_weights.on(logits.device)
        focal = (self.label_loss or LABEL_LOSSES[self.label_mode][0]) == "focal"
        if self.label_mode == "single":
            known = target != NO_LABEL
            safe = torch.where(known, target, 0)
            nll = -logits.log_softmax(1).gather(1, safe[:, None])[:, 0]
            if focal:
                nll = (1 - (-nll).exp()).pow(self.focal_gamma) * nll
            weight = weights[safe] if weights is not None else torch.ones_like(nll)
            weight = weight * known
            return torch.stack([(weight * nll).sum(), weight.sum()])
        known = target >= 0
        soft = torch.where(known, target.float(), 0.0)
        per_entry = F.binary_cross_entropy_with_logits(logits, soft, pos_weight=weights, reduction="none")
        if focal:
            p = logits.sigmoid()
            p_t = p * soft + (1 - p) * (1 - soft)
            per_entry = (1 - p_t).pow(self.focal_gamma) * per_entry
            if self.focal_alpha is not None:  # torchvision's sigmoid_focal_loss balance
                per_entry = (self.focal_alpha * soft + (1 - self.focal_alpha) * (1 - soft)) * per_entry
        return torch.stack([(per_entry * known).sum(), known.sum().float()])

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
                terms[name] = BinaryCrossEntropy(ii, self.label_smoothing, pos_weight)
            elif name == "dice":
                # SMP adds smooth in the Tversky form, (I + s) / (I + FP/2 + FN/2 + s): half of it is
                # the usual Dice form's (2I + s) / (|P| + |Y| + s)
                terms[name] = smp.losses.DiceLoss(
                    mode, ignore_index=ii, class_weights=cw, smooth=self.dice_smooth / 2
                )
            elif name == "jaccard":
                terms[name] = smp.losses.JaccardLoss(mode, ignore_index=ii, class_weights=cw)
            elif name == "focal":  # SMP's formulas, without its host syncs (see loss_terms)
                terms[name] = FocalLoss(ii, gamma=self.focal_gamma, alpha=self.focal_alpha, class_weights=cw)
            elif name == "lovasz":
                terms[name] = LovaszLoss(ii)
            elif name == "tversky":
                alpha, beta = self.tversky
                terms[name] = smp.losses.TverskyLoss(
                    mode, ignore_index=ii, alpha=alpha, beta=beta, gamma=self.tversky_gamma, class_weights=cw
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
        terms = self._terms_for(logits)
        logits = logits.float()
        # a batch without a labelled pixel has nothing to learn: every term is 0 with a zero gradient, never
        # NaN (torch's CE and SMP's Dice divide 0 by 0 there)
        has_labels = (mask != self.ignore_index).any()
        return {name: torch.where(has_labels, term(logits, mask), 0.0).sum() for name, term in terms.items()}

    def _terms_for(self, logits: torch.Tensor) -> dict[str, nn.Module]:
        """The term modules for this head (one channel: binary) and device, built on first use."""
        if self.weights_pending:
            self.pixel_weights.resolved()
            self._terms_key = None  # built again with the weights
        key = (logits.shape[1] == 1, logits.device)
        if self._terms_key != key:
            self._terms = self._build_terms(*key)
            self._terms_key = key
        return self._terms

    # ------------------------------------------------------------------- evaluation over a whole split
    def split_sums(
        self, output: NetOutput, mask: torch.Tensor, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One batch's share of every term's split value (:mod:`lightning_seg.losses.split_sums`): float64 sums
        by name (each pixel term, ``aux/<term>``, ``label``), to be added over the split and read with
        :meth:`from_split_sums`. Arguments as :meth:`forward`."""
        with torch.no_grad(), torch.autocast(device_type=output.mask.device.type, enabled=False):
            heads = {"": output.mask}
            if output.aux is not None and self.aux_weight > 0:
                heads["aux/"] = output.aux
            sums = {}
            for prefix, logits in heads.items():
                terms = self._terms_for(logits)
                for name, term in terms.items():
                    sums[prefix + name] = term_sums(term, logits.float(), mask, self.ignore_index)
            if output.label is not None and self.label_weight > 0:
                # always present with a label head, zeros for a batch without labels: every DDP process
                # then accumulates the same names (their sums are synced name by name)
                sums["label"] = (
                    self.label_sums(output.label, label).double()
                    if label is not None
                    else torch.zeros(2, dtype=torch.float64, device=output.label.device)
                )
        return sums

    def from_split_sums(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The terms and the total over a split from the added :meth:`split_sums`: the keys of
        :meth:`forward`, float32 scalars."""
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=torch.float32, device=next(iter(sums.values())).device)
        for prefix, weight in (("", 1.0), ("aux/", self.aux_weight)):
            named = {name: sums[prefix + name] for name in self._terms if prefix + name in sums}
            if not named:
                continue
            values = {name: term_from_sums(self._terms[name], value) for name, value in named.items()}
            head = sum(self.weights[name] * value for name, value in values.items())
            if prefix:
                parts["aux"] = head
            else:
                parts.update(values)
            total = total + weight * head
        if "label" in sums and sums["label"][1] > 0:  # (the epoch's end: a host read is fine)
            numerator, denominator = sums["label"]
            parts["label"] = (numerator / denominator.clamp_min(torch.finfo(torch.float64).tiny)).float()
            total = total + self.label_weight * parts["label"]
        parts["loss"] = total
        return parts

    def forward(
        self, output: NetOutput, mask: torch.Tensor, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Total and per-term losses.

        Args:
            output: the net's mask logits (B×K×H×W), optional aux logits and image-label logits (B×L).
            mask: int64 B×H×W target.
            label: image-level target (needed when ``output.label`` is given): int64 (B,) for a single-label
                head, float B×L for a multi-label one (see :meth:`label_term`).

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
                parts["label"] = self.label_term(output.label, label)
                total = total + self.label_weight * parts["label"]
        parts["loss"] = total
        return parts
