"""Drawing class maps for people: overlays, picture cells and class legends, shared by the sample overlays,
the run plots and the robustness panels (colours from :func:`lightning_seg.reports.palette.default_palette`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_seg.reports.palette import default_palette

IGNORED_COLOUR = (255, 255, 255)
"""Ignored target pixels (``ignore_index``) are drawn white."""


def literal(text: object) -> str:
    """``text`` as matplotlib should print it, character for character: each ``$`` escaped, so a class or
    image name such as "$x" or "cost ($)" is not read as mathtext (which draws it wrongly or fails)."""
    return str(text).replace("$", r"\$")


def palette_with_ignored(num_classes: int) -> torch.Tensor:
    """uint8 (K+1)×3: the K class colours, then white for ignored pixels (index K)."""
    return torch.cat([default_palette(num_classes), torch.tensor([IGNORED_COLOUR], dtype=torch.uint8)])


def drawable_target(target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """int64 H×W true classes for drawing with :func:`palette_with_ignored`: ``ignore_index`` becomes K
    (white), anything else is clamped into 0..K-1."""
    target = target.long()
    return torch.where(target == ignore_index, num_classes, target.clamp(0, num_classes - 1))


def classes_shown(
    targets: Sequence[torch.Tensor], predictions: Sequence[torch.Tensor], num_classes: int
) -> tuple[list[int], bool]:
    """The classes in drawable targets (:func:`drawable_target`) and predictions, sorted, and whether any
    target pixel is ignored: what a legend of these pictures lists."""
    shown: set[int] = set()
    for target in targets:
        shown.update(target[target < num_classes].unique().tolist())
    for prediction in predictions:
        shown.update(prediction.unique().tolist())
    return sorted(shown), any(bool((target == num_classes).any()) for target in targets)


def clear_classes(class_names: Sequence[str]) -> tuple[int, ...]:
    """The classes an overlay leaves clear so the image shows through: class 0 when it is a background."""
    return (0,) if class_names and "background" in str(class_names[0]).lower() else ()


def overlay(
    image: torch.Tensor,
    classes: torch.Tensor,
    palette: torch.Tensor,
    alpha: float = 0.5,
    clear: Sequence[int] = (0,),
) -> torch.Tensor:
    """uint8 3×H×W ``image`` with int64 H×W ``classes`` alpha-blended over it in their ``palette`` colours
    (uint8 C×3, one per class value), by torchvision's ``draw_segmentation_masks``; the classes in
    ``clear`` (a background) are not drawn."""
    from torchvision.utils import draw_segmentation_masks

    image, classes = image.cpu(), classes.cpu()
    # only the classes in the map: a mask per palette entry would be K×H×W booleans (150 classes: 150×)
    drawn = [v for v in classes.unique().tolist() if 0 <= v < len(palette) and v not in clear]
    values = torch.tensor(drawn, dtype=classes.dtype)
    if not len(values):
        return image
    masks = classes[None] == values[:, None, None]  # one comparison for every class: no loop over pixels
    colours = [tuple(int(c) for c in palette[v].tolist()) for v in values.tolist()]
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=colours)


def show_picture(axis: Any, picture: torch.Tensor, title: str | None = None) -> None:
    """A 3×H×W picture (uint8, or float in [0, 1]) in a matplotlib axis, without ticks, pixels unsmoothed."""
    axis.imshow(picture.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title is not None:
        axis.set_title(title, fontsize="small")


def class_legend(
    class_names: Sequence[str], classes: Sequence[int] | None = None, ignored: bool = False
) -> list[Any]:
    """matplotlib legend handles: a coloured patch per class (``classes``: only those), then "ignored"."""
    from matplotlib.patches import Patch

    palette = default_palette(len(class_names))
    shown = range(len(class_names)) if classes is None else sorted(classes)
    handles = [
        Patch(color=tuple(c / 255 for c in palette[k].tolist()), label=literal(class_names[k])) for k in shown
    ]
    if ignored:
        handles.append(Patch(facecolor="white", edgecolor="0.5", label="ignored"))
    return handles
