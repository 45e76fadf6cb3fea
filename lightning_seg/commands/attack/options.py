"""``attack``'s options, checked once before any pass: attacks, radii, the target class and region, heads, split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_seg.errors import ConfigError, closest, short_path

if TYPE_CHECKING:
    pass

from lightning_seg.commands.attack.perturbation import ATTACKS, DEFAULT_EPSILONS, HEADS, SPLITS, TITLES


# ------------------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class Group:
    """One curve of the report: an attack on a head, targeted or not, over every radius."""

    head: str
    attack: str
    targeted: bool

    def title(self, steps: int, target: str | None = None) -> str:
        name = TITLES[self.attack] + ("" if self.attack == "fgsm" else f"-{steps}")
        if self.targeted:
            name += f" → {target}" if target else " targeted"
        return name + (" (label head)" if self.head == "label" else "")

    @property
    def file_stem(self) -> str:
        return (
            self.attack + ("_targeted" if self.targeted else "") + ("_label" if self.head == "label" else "")
        )


def parse_epsilon(value: float | int | str) -> float:
    """A radius as a number or a fraction string ("8/255"); refused outside [0, 1]."""
    try:
        number = float(Fraction(value.strip())) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError) as error:
        raise ConfigError(
            f"attack --epsilons: {value!r} is not a number or a fraction such as 8/255"
        ) from error
    if not 0.0 <= number <= 1.0 or math.isnan(number):
        raise ConfigError(
            f"attack --epsilons: {value} is outside [0, 1] (radii are in [0, 1] pixel units, e.g. 8/255)"
        )
    return number


def format_epsilon(epsilon: float) -> str:
    """8/255 for a multiple of 1/255, else the number."""
    steps = epsilon * 255
    if epsilon == 0:
        return "0"
    if abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{epsilon:.4g}"


def _class_index(target: str, class_names: Sequence[str]) -> int:
    names = list(class_names)
    if target in names:
        return names.index(target)
    if target.strip().lstrip("-").isdigit():
        index = int(target)
        if 0 <= index < len(names):
            return index
        raise ConfigError(f"attack --target_class {index}: the model has classes 0..{len(names) - 1}")
    suggestion = closest(target, names)
    hint = f"; did you mean {suggestion}?" if suggestion else f" (classes: {', '.join(names[:12])})"
    raise ConfigError(f"attack --target_class {target!r} is not a class of the model{hint}")


def read_region(path: str) -> torch.Tensor:
    """bool H×W: the non-zero pixels of an image file (any channel)."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    if not Path(path).is_file():
        raise ConfigError(f"attack --target_region {short_path(path)}: no such file")
    try:
        image = decode_image(read_file(path), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"attack --target_region {short_path(path)}: not a readable image ({str(error).splitlines()[0][:80]})"
        ) from error
    region = (image != 0).any(0)
    if not bool(region.any()):
        raise ConfigError(f"attack --target_region {short_path(path)}: no non-zero pixel marks a region")
    return region


@dataclass
class AttackOptions:
    """The checked options of one ``attack`` run."""

    groups: list[Group]
    epsilons: list[float]
    steps: int
    step_size: float | None
    random_start: bool
    target: int | None
    region: torch.Tensor | None
    region_path: str | None
    split: str
    panels: int
    seed: int


def check_options(
    model: Any,
    attacks: Sequence[str] | None,
    epsilons: Sequence[float | str] | None,
    steps: int,
    step_size: float | None,
    random_start: bool,
    target_class: str | int | None,
    target_region: str | None,
    heads: Sequence[str] | None,
    split: str,
    panels: int,
    seed: int,
) -> AttackOptions:
    """Every option checked before any pass over the data; a bad one is a one-line ConfigError naming it."""
    if not hasattr(model, "predict_path"):
        raise ConfigError("attack needs lightning_seg's SegmentationModule as the model")
    chosen = list(dict.fromkeys(attacks if attacks is not None else ATTACKS))
    unknown = [a for a in chosen if a not in ATTACKS]
    if unknown or not chosen:
        raise ConfigError(f"attack --attacks: {unknown or 'none given'}; choose from {', '.join(ATTACKS)}")
    radii = sorted({parse_epsilon(e) for e in (epsilons if epsilons is not None else DEFAULT_EPSILONS)})
    if not radii:
        raise ConfigError("attack --epsilons: give at least one radius, e.g. [0, 8/255]")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"attack --steps must be an integer >= 1, got {steps}")
    if step_size is not None and not 0.0 < step_size <= 1.0:
        raise ConfigError(f"attack --step_size must lie in (0, 1] (pixel units), got {step_size}")
    if split not in SPLITS:
        raise ConfigError(f"attack --split {split}: choose from {', '.join(SPLITS)}")
    if panels < 0:
        raise ConfigError(f"attack --panels must be >= 0, got {panels}")
    has_head = getattr(model.net, "label_head", None) is not None
    wanted = list(dict.fromkeys(heads if heads is not None else ["mask", *(["label"] if has_head else [])]))
    if not wanted or any(h not in HEADS for h in wanted):
        raise ConfigError(f"attack --heads {wanted}: choose from mask, label")
    if "label" in wanted and not has_head:
        raise ConfigError(
            f"attack --heads label: the net ({type(model.net).__name__}) has no image-level head; use --heads "
            "[mask], or a net with one (MicroUNet) trained with model.loss label_weight > 0"
        )
    target = None if target_class is None else _class_index(str(target_class), model.class_names)
    if target_region is not None and target is None:
        raise ConfigError("attack --target_region marks where a target class goes; give --target_class too")
    region = read_region(target_region) if target_region is not None else None
    groups = []
    for head in wanted:
        for attack in chosen:
            if head == "label" and attack == "segpgd":
                continue  # SegPGD splits pixels; one label per image has nothing to split
            groups.append(Group(head, attack, False))
            if target is not None and head == "mask":
                groups.append(Group(head, attack, True))
    if not groups:
        raise ConfigError("attack --heads [label] --attacks [segpgd]: SegPGD attacks pixels; add fgsm or pgd")
    return AttackOptions(
        groups, radii, steps, step_size, random_start, target, region, target_region, split, panels, seed
    )
