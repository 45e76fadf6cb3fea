"""The mask classes a model is built for, checked once for every LightningModule of the project."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_seg.errors import ConfigError


def model_class_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    """The K class names (``class_<i>`` when the data names none). Refuses in one line fewer than two
    classes (background and one) and a name list of another length."""
    if num_classes < 2:
        raise ConfigError(f"model.num_classes must be >= 2 (background + one class), got {num_classes}")
    names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"model.class_names has {len(names)} names for {num_classes} classes")
    return names
