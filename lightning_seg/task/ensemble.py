"""``EnsembleNet``: several trained models as one net, so every command after training takes an ensemble as it
takes one model (``test``, ``predict``, ``submit``, ``attack``, ``export``, ``lightning_seg.load``).

Each member is a whole :class:`~lightning_seg.task.module.SegmentationModule` rebuilt from its checkpoint's
record (:mod:`lightning_seg.checkpoints.record`): its own net, its own normalisation and its own inference
(windows, TTA). On a batch normalised as the ensemble's data normalises it, each member

1. re-normalises the images to its own mean/std (exact: one affine map per channel),
2. runs its own inference path to float32 B×K×H×W probabilities (softmax, or sigmoid for a one-channel head),

and the net averages the probabilities with the members' weights. It returns their logarithm as logits
(the logit of the mean for a one-channel head): the softmax of ``log p̄`` is ``p̄`` again, so the ensemble
module's inference, post-processing chain, decision, loss (the ensemble's own negative log-likelihood) and
metrics run once on the averaged probabilities, unchanged. An image-level head is averaged likewise
(softmax probabilities → their log; sigmoid → the logit of the mean).

Members must agree on what they predict: the same classes (names and order), ignore index and image-level
labels; anything else is refused in one line by :func:`check_members`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_seg.errors import ConfigError

TINY = 1e-30
"""Probabilities are clamped to this before their logarithm: a member's exact 0 would give -inf logits
(and NaN gradients for ``attack``); exp(log 1e-30) is far below anything a decision reads."""

AGREED = (
    "num_classes",
    "ignore_index",
    "class_names",
    "label_names",
    "label_classes",
    "label_mode",
    "binary_threshold",
    "label_thresholds",
)
"""The model arguments every member must share: what it predicts (the values the data linked, as its record
holds them) and how its heads decide (the ensemble's decision is made once, with the first member's)."""
INPUT_AGREED = ("size", "image_value_range", "eval_augmentations")
"""How the data makes an image batchable: the ensemble has one data path for all its members."""


def check_weights(weights: Sequence[float] | None, members: int) -> list[float]:
    """Each member's weight, normalised to sum 1 (None: equal); ConfigError in one line for a wrong count, a
    negative or non-finite weight, or all 0."""
    if weights is None:
        return [1 / members] * members
    values = [float(w) for w in weights]
    if len(values) != members or not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
        raise ConfigError(
            f"ensemble weights: one finite, non-negative weight per member ({members}), not all 0; got {values}"
        )
    total = sum(values)
    return [w / total for w in values]


def member_arguments(record: dict[str, Any]) -> dict[str, Any]:
    """The model init args of a checkpoint record (plain data)."""
    return ((record.get("model") or {}).get("init_args")) or {}


def check_members(records: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> None:
    """Refuse members that do not predict the same thing or do not batch images alike, in one line naming
    the first member that differs.

    Args:
        records: each member's checkpoint record (:mod:`lightning_seg.checkpoints.record`).
        names: how to call each member in the message (its checkpoint path); default ``member i``.
    """
    if not records:
        raise ConfigError("ensemble: no members (give at least one checkpoint)")
    shown = list(names) if names is not None else [f"member {i}" for i in range(len(records))]
    first = member_arguments(records[0])
    for name, record in zip(shown[1:], records[1:], strict=True):
        arguments = member_arguments(record)
        for key in AGREED:
            if arguments.get(key) != first.get(key):
                raise ConfigError(
                    f"ensemble: {name} has {key} {arguments.get(key)!r}, {shown[0]} has {first.get(key)!r}; "
                    "members must predict the same classes (train them on the same data)"
                )
        for key in INPUT_AGREED:
            own, theirs = (record.get("input") or {}).get(key), (records[0].get("input") or {}).get(key)
            if own != theirs:
                raise ConfigError(
                    f"ensemble: {name} prepares images with data.{key} {own!r}, {shown[0]} with {theirs!r}; "
                    "members share one data path: train them with the same data.size, image_value_range and "
                    "eval_augmentations"
                )


class EnsembleNet(nn.Module):
    """Several trained models as one net (see the module's docstring).

    Args:
        num_classes: K, as every member's.
        members: the member models (each a ``SegmentationModule`` config: ``class_path`` + ``init_args``,
            as its checkpoint's record holds it); their weights come from the ensemble's checkpoint
            (``lightning-seg ensemble`` writes both).
        weights: each member's weight in the average (normalised to sum 1); None: equal.
        input_mean: the normalisation mean of the images the ensemble is given; null in a config: the data's
            (the module passes it, see :func:`~lightning_seg.task.net_builder.build_net`).
        input_std: their normalisation std, likewise.
    """

    def __init__(
        self,
        num_classes: int,
        members: list[nn.Module],
        weights: list[float] | None = None,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise ConfigError("model.net EnsembleNet: no members")
        for index, member in enumerate(members):
            if not hasattr(member, "evaluation"):
                raise ConfigError(
                    f"model.net EnsembleNet members[{index}]: {type(member).__name__} is not a "
                    "lightning_seg SegmentationModule"
                )
            if member.num_classes != num_classes or member.class_names != members[0].class_names:
                raise ConfigError(
                    f"model.net EnsembleNet members[{index}] predicts {member.class_names}, the data has "
                    f"{num_classes} classes {members[0].class_names if index else ''}; members must predict the "
                    "data's classes"
                )
        if input_mean is None or input_std is None:
            raise ConfigError(
                "model.net EnsembleNet: input_mean and input_std are the data's normalisation (the module gives "
                "them when null); build it through SegmentationModule or give them"
            )
        self.weights = check_weights(weights, len(members))
        self.members = nn.ModuleList(members)
        for member in self.members:
            member.eval()  # never trained here
        mean = torch.tensor(list(input_mean), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(list(input_std), dtype=torch.float32).view(1, -1, 1, 1)
        # each member's affine map from the ensemble's normalisation to its own: x_m = x * scale + shift
        scales, shifts = [], []
        for member in self.members:
            own_mean = torch.tensor(member.mean, dtype=torch.float32).view(1, -1, 1, 1)
            own_std = torch.tensor(member.std, dtype=torch.float32).view(1, -1, 1, 1)
            scales.append(std / own_std)
            shifts.append((mean - own_mean) / own_std)
        # not persistent: derived from the members' configs, so the checkpoint holds their weights only
        self.register_buffer("scales", torch.stack(scales), persistent=False)
        self.register_buffer("shifts", torch.stack(shifts), persistent=False)

    @property
    def label_head(self) -> nn.Module | None:
        """The first member's image-level head when every member has one (a LabelConsistency step then reads
        the members' averaged label probabilities); None otherwise."""
        heads = [getattr(member.net, "label_head", None) for member in self.members]
        return heads[0] if all(head is not None for head in heads) else None

    def train(self, mode: bool = True) -> EnsembleNet:
        """The members stay in eval mode (their batch norm statistics and dropout are trained already)."""
        super().train(mode)
        for member in self.members:
            member.eval()
        return self

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """float32 B×3×H×W images (the ensemble's normalisation) → ``{"mask": B×K×H×W logits}`` (B×1×H×W
        for members with a one-channel head) and ``"label"``: B×L logits when the members have an
        image-level head; logits whose softmax (sigmoid) is the members' weighted mean probability."""
        total: torch.Tensor | None = None
        labels: torch.Tensor | None = None
        binary, with_labels = [], []
        for index, member in enumerate(self.members):
            own = image * self.scales[index] + self.shifts[index]
            out = member(own)
            # the member's own inference (windows, TTA) from its plain pass; K ≥ 2 channels
            probabilities = member.evaluation.probabilities(member.mask_logits, own, out.mask)
            binary.append(member.evaluation.binary_head)
            weighted = probabilities * self.weights[index]
            total = weighted if total is None else total + weighted
            with_labels.append(out.label is not None)
            if out.label is not None:
                label = member.label_probabilities(out.label.float()) * self.weights[index]
                labels = label if labels is None else labels + label
        assert total is not None
        if any(binary) and not all(binary):
            raise ConfigError("ensemble: members mix one-channel (sigmoid) and K-channel heads; use one kind")
        if any(with_labels) and not all(with_labels):
            raise ConfigError(
                "ensemble: some members have an image-level head and some do not; use members of one kind"
            )
        # a one-channel head's members: the foreground channel of [1 - p, p]
        out = {"mask": _logit(total[:, 1:]) if binary[0] else total.clamp_min(TINY).log()}
        if labels is not None:
            multi = self.members[0].label_task.mode == "multi"
            out["label"] = _logit(labels) if multi else labels.clamp_min(TINY).log()
        return out


def _logit(probabilities: torch.Tensor) -> torch.Tensor:
    """Logits whose sigmoid is ``probabilities`` (clamped away from 0 and 1)."""
    p = probabilities.clamp(TINY, 1 - 1e-7)
    return p.log() - (1 - p).log()
