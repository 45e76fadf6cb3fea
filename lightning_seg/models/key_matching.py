"""Which tensor of a weights file goes into which tensor of a net: by name (a prefix stripped) or by order.

Pure functions on ``{name: tensor}`` mappings; :mod:`lightning_seg.models.weight_files` reads the files and
loads the result. Written here because no library does both with one-line refusals: ``load_state_dict``
reports shape mismatches as a wall of text and has no notion of a prefix to strip (timm's
``clean_state_dict`` strips ``module.`` only) or of a port whose names differ (a TF port, another library's
naming) but whose tensors come in the same order and shapes.

``num_batches_tracked`` buffers are left out of both sides: BatchNorm only uses them without momentum, files
differ in whether they hold them, and a port by order would otherwise pair a counter with a weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from lightning_seg.errors import ConfigError, truncate

KeyMapping = Literal["names", "order"]
MAX_PREFIX_DEPTH = 4
"""Prefixes of up to four dotted parts are tried: ``net.model.encoder.model.`` (one of our own checkpoints,
SMP's timm encoder) is the deepest we know of."""
MOSTLY_RANDOM = 0.5
"""A net that would keep more than this share of its weight elements random refuses the file."""
MESSAGE = 300
"""Characters of a refusal line."""


@dataclass(frozen=True)
class KeyMatch:
    """The file's tensors each net tensor takes, and what stayed unpaired on either side.

    ``pairs`` maps a net key to a file key; ``unexpected`` lists the file keys no net key took (a classifier
    head, usually), ``missing`` the net keys left as they were built, ``prefix`` what was stripped from the
    file's names (empty for a match by order or by plain names).
    """

    pairs: dict[str, str]
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    prefix: str = ""

    def loaded_share(self, target: Mapping[str, torch.Tensor]) -> float:
        """The share of the net's weight elements (``num_batches_tracked`` aside) the file fills."""
        total = sum(tensor.numel() for key, tensor in target.items() if counts(key))
        loaded = sum(target[key].numel() for key in self.pairs if counts(key))
        return loaded / total if total else 1.0


def counts(key: str) -> bool:
    """Whether a tensor takes part in matching (every one but BatchNorm's ``num_batches_tracked``)."""
    return not key.endswith("num_batches_tracked")


def _shape(tensor: torch.Tensor) -> list[int]:
    return list(tensor.shape)


def _prefixes(keys: list[str]) -> list[str]:
    """Every dotted prefix (up to :data:`MAX_PREFIX_DEPTH` parts) the file's keys start with, plus none;
    shortest first, then by name (a stable order whatever the hash seed)."""
    found = {""}
    for key in keys:
        parts = key.split(".")[:-1]
        for depth in range(1, min(len(parts), MAX_PREFIX_DEPTH) + 1):
            found.add(".".join(parts[:depth]) + ".")
    return sorted(found, key=lambda prefix: (len(prefix), prefix))


def _best_prefix(keys: list[str], target: Mapping[str, torch.Tensor], label: str) -> str:
    """The prefix under which most of ``keys`` name a net key; two that tie hold two copies of the net."""
    hits = {
        prefix: sum(key.startswith(prefix) and key[len(prefix) :] in target for key in keys)
        for prefix in _prefixes(keys)
    }
    best = max(hits.values())
    tied = [prefix for prefix, count in hits.items() if count == best]
    if best and len(tied) > 1:
        # MoCo's encoder_q and encoder_k, a teacher and a student flattened into one dict
        raise ConfigError(
            truncate(
                f"{label}: holds the net's tensors under several prefixes ({', '.join(map(repr, tied))}): "
                "save the one you mean alone",
                MESSAGE,
            )
        )
    return tied[0]


def match_by_names(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    label: str,
    replaceable: frozenset[str] = frozenset(),
    ordered: bool = True,
) -> KeyMatch:
    """Pair net keys with file keys of the same name once a common prefix is stripped.

    The prefix chosen is the one (among the dotted prefixes of the file's keys, none included) under which
    most file keys name a net key; two prefixes that tie hold two copies of the net and are refused. So
    ``module.``, ``model.``, ``backbone.``, ``encoder.``, or ``net.model.encoder.`` of a whole segmentation
    checkpoint all resolve without a list to maintain.

    Args:
        source: the file's ``{name: tensor}``.
        target: the net's ``state_dict()``.
        label: the file, for messages (e.g. ``"encoder_weights file w.pth"``).
        replaceable: net keys whose shape may differ from the file's (a classifier with another number of
            classes): those stay as built and count as missing.
        ordered: whether ``source`` lists its tensors in module order (a pickled state dict does;
            safetensors sorts them), which the check for blocks left out between loaded ones needs.

    Raises ConfigError in one line at the first shared name whose shapes differ (not in ``replaceable``), and
    when unpaired tensors sit between paired ones (:func:`_refuse_interleaved`).
    """
    keys = [key for key in source if counts(key)]
    prefix = _best_prefix(keys, target, label)
    pairs: dict[str, str] = {}
    for key in source:  # num_batches_tracked included: loaded where the names agree
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name is None or name not in target:
            continue
        why = "weights of another configuration (in_channels, widths, depth)"
        if _fits(source[key], target[name], name in replaceable, f"{label}: {key}", why):
            pairs[name] = key
    if ordered:
        ours = [key for key in keys if key.startswith(prefix) and key[len(prefix) :] not in replaceable]
        _refuse_interleaved(ours, set(pairs.values()), "the file's", label)
    net_order = [key for key in target if counts(key) and key not in replaceable]
    _refuse_interleaved(net_order, set(pairs), "the net's", label)
    return KeyMatch(
        pairs=pairs,
        unexpected=[key for key in keys if key not in set(pairs.values())],
        missing=[key for key in target if counts(key) and key not in pairs],
        prefix=prefix,
    )


def _fits(theirs: torch.Tensor, mine: torch.Tensor, replaceable: bool, what: str, why: str) -> bool:
    """Whether a file tensor can fill a net tensor: the same shape. Another shape is refused in one line
    (``what`` names the pair, ``why`` says what it means) unless the net tensor is ``replaceable``."""
    if theirs.shape == mine.shape:
        return True
    if replaceable:
        return False
    raise ConfigError(
        truncate(f"{what} has shape {_shape(theirs)} in the file, {_shape(mine)} in the net: {why}", MESSAGE)
    )


def _refuse_interleaved(order: list[str], used: set[str], whose: str, label: str) -> None:
    """Refuse a file whose unpaired tensors sit between paired ones, on either side.

    Unpaired tensors at the end are a head one side has and the other lacks (a classifier, an aux head);
    unpaired ones in the middle mean another depth or layout: a ResNet-34 file in a ResNet-18 encoder pairs
    every tensor of the shallower net by name and leaves out blocks between them.
    """
    last = max((index for index, key in enumerate(order) if key in used), default=0)
    gap = next((key for key in order[:last] if key not in used), None)
    if gap is not None:
        raise ConfigError(
            truncate(
                f"{label}: {whose} {gap} has no counterpart while tensors after it do: weights of another "
                "depth or layout (a ResNet-34 file in a ResNet-18, say)",
                MESSAGE,
            )
        )


def match_by_order(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    label: str,
    replaceable: frozenset[str] = frozenset(),
) -> KeyMatch:
    """Pair the net's tensors with the file's in the order both list them (a port with other names).

    The file may hold more tensors after the last one the net takes (a classifier head the encoder lacks);
    those are ``unexpected``. A ``replaceable`` net tensor whose shape differs stays as built. Raises
    ConfigError in one line at the first other pair whose shapes differ, when a BatchNorm running variance
    would receive negative values (a port whose weight and variance are swapped has matching shapes), or
    when the file holds fewer tensors than the net: each means the file is not a port of this net.
    """
    ours = [key for key in target if counts(key)]
    theirs = [key for key in source if counts(key)]
    if len(theirs) < len(ours):
        raise ConfigError(
            f"{label}: keys: order needs at least the net's {len(ours)} tensors; the file has {len(theirs)}"
        )
    pairs: dict[str, str] = {}
    for index, (mine, other) in enumerate(zip(ours, theirs, strict=False)):
        what = f"{label}: keys: order pairs tensor {index} of the file, {other},"
        if not _fits(
            source[other], target[mine], mine in replaceable, what, "not a port of this net in this order"
        ):
            continue
        if mine.endswith("running_var") and bool((source[other] < 0).any()):
            raise ConfigError(
                truncate(
                    f"{label}: keys: order pairs the file's {other}, which has negative values, with the net's "
                    f"{mine}, a variance: not a port of this net in this order",
                    MESSAGE,
                )
            )
        pairs[mine] = other
    return KeyMatch(
        pairs=pairs, unexpected=theirs[len(ours) :], missing=[key for key in ours if key not in pairs]
    )


def match_keys(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    keys: KeyMapping,
    label: str,
    replaceable: frozenset[str] = frozenset(),
    ordered: bool = True,
) -> KeyMatch:
    """:func:`match_by_names` or :func:`match_by_order`, then the refusal of a net left mostly random.

    Raises ConfigError in one line when the file fills less than :data:`MOSTLY_RANDOM` of the net's weight
    elements, naming a file key and a net key so the two naming schemes can be compared.
    """
    if keys == "order":
        match = match_by_order(source, target, label, replaceable)
    else:
        match = match_by_names(source, target, label, replaceable, ordered)
    share = match.loaded_share(target)
    if share < MOSTLY_RANDOM:
        file_key = next((key for key in source if counts(key)), "none")
        net_key = next((key for key in target if counts(key)), "none")
        raise ConfigError(
            truncate(
                f"{label}: names fill {share:.0%} of the net (the file's look like {file_key!r}, the net's "
                f"like {net_key!r}); a port in the net's order loads with keys: order",
                MESSAGE,
            )
        )
    return match
