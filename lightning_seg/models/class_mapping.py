"""Predicting the data's classes with a model trained on another label set (a zero-shot baseline).

A mapping table (YAML) names, for categories of the model's label set, the data class each one counts as; every
other category goes to the table's ``unmapped`` class (usually background)::

    unmapped: background
    map:
      airplane: aeroplane
      dining table: diningtable

Names are compared without case, spaces, ``_`` or ``-``. ``class_maps/`` beside this file holds the shipped
tables, used by name (``coco_to_voc``); any other value is a path to a table of the same form.

:class:`ClassMapping` adds up the probability of every category mapped to a class: P(class) = Σ P(category).
That is one matrix product with a categories×classes 0/1 matrix (deterministic on GPUs, where an index_add
would add with atomics in a varying order), vectorised over every pixel or query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from lightning.fabric.utilities.rank_zero import rank_zero_info
from torch import nn

from lightning_seg.errors import ConfigError, short_path

SHIPPED_TABLES = Path(__file__).with_name("class_maps")
_PLACEHOLDER = re.compile(r"^(n/?a|label_?\d+|unused.*|\s*)$", re.IGNORECASE)
"""Label names of unused ids in a model's label set (DETR's COCO-id gaps): never listed as unmapped."""


def name_key(name: str) -> str:
    """The form names are compared in: lowercase, without spaces, ``_`` or ``-``."""
    return re.sub(r"[\s_\-]+", "", name.lower())


def classes_differ(
    categories: Sequence[str], class_names: Sequence[str] | None, num_classes: int, source: str
) -> str | None:
    """Why a pretrained head's output classes (``categories``, named by ``source``, e.g. "the 21 categories of
    DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1") are not the data's, or None when they are: the same
    number and, when the data's ``class_names`` are known, the same names in the same order (by
    :func:`name_key`)."""
    if len(categories) != num_classes:
        return f"{source} vs the data's {num_classes} classes"
    for ours, theirs in zip(class_names or (), categories, strict=False):
        if name_key(ours) != name_key(theirs):
            return f"the data's class names differ from {source} ({ours!r} vs {theirs!r})"
    return None


def read_table(table: str) -> tuple[dict[str, str], str]:
    """A mapping table by shipped name or path → (category → class, the ``unmapped`` class)."""
    shipped = SHIPPED_TABLES / f"{table}.yaml"
    path = shipped if shipped.is_file() else Path(table)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in SHIPPED_TABLES.glob("*.yaml")))
        raise ConfigError(f"class_mapping {table!r}: no such table (shipped: {names}) or file")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(
            f"class_mapping {short_path(path)}: not valid YAML ({error})".split("\n")[0]
        ) from error
    if (
        not isinstance(content, dict)
        or not isinstance(content.get("map"), dict)
        or not isinstance(content.get("unmapped"), str)
    ):
        raise ConfigError(
            f"class_mapping {short_path(path)}: expected 'unmapped: <class>' and 'map: {{category: class}}'"
        )
    return {str(k): str(v) for k, v in content["map"].items()}, content["unmapped"]


class ClassMapping(nn.Module):
    """Scores over a model's categories → scores over the data's classes, by summing each class's categories.

    Args:
        categories: the model's label names, in output order (S of them).
        class_names: the data's class names (K of them).
        table: a shipped table name (``"coco_to_voc"``) or a path to one.
        who: the net, for messages (e.g. ``"TransformersNet facebook/detr-resnet-50-panoptic"``).

    Shapes: non-negative float ...×S, categories last (probabilities, or any scores to add up) → float ...×K.
    ``unmapped`` lists the categories sent to the ``unmapped`` class for want of an entry (logged once when
    built, placeholders of unused ids left out).
    """

    def __init__(self, categories: Sequence[str], class_names: Sequence[str], table: str, who: str) -> None:
        super().__init__()
        table_entries, unmapped_class = read_table(table)
        class_index = {name_key(name): i for i, name in enumerate(class_names)}
        entries = {name_key(k): v for k, v in table_entries.items()}
        unknown = sorted({v for v in [*entries.values(), unmapped_class] if name_key(v) not in class_index})
        if unknown:
            raise ConfigError(
                f"class_mapping {table!r} names classes the data does not have: {', '.join(unknown)} "
                f"(the data's: {', '.join(class_names)})"
            )
        fallback = class_index[name_key(unmapped_class)]
        targets = [
            class_index[name_key(entries[name_key(c)])] if name_key(c) in entries else fallback
            for c in categories
        ]
        # registered as a buffer (moves with the net) but not saved: it derives from the config alone
        matrix = torch.zeros(len(categories), len(class_names))
        matrix[torch.arange(len(categories)), torch.tensor(targets)] = 1.0
        self.register_buffer("category_to_class", matrix, persistent=False)
        self.unmapped = [c for c in categories if name_key(c) not in entries and not _PLACEHOLDER.match(c)]
        own = {name_key(c) for c in categories}
        missing = sorted(k for k in table_entries if name_key(k) not in own)
        starved = sorted(
            {name for name in class_names if name_key(name) != name_key(unmapped_class)}
            - {class_names[t] for t in targets}
        )
        rank_zero_info(
            f"{who}: class_mapping {table}: categories without an entry count as {unmapped_class} "
            f"({len(self.unmapped)} of {len(categories)}): {', '.join(self.unmapped) or 'none'}"
        )
        if missing or starved:
            rank_zero_info(
                f"{who}: class_mapping {table}: entries the model lacks: {', '.join(missing) or 'none'}; "
                f"classes never predicted: {', '.join(starved) or 'none'}"
            )

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores @ self.category_to_class.to(scores.dtype)
