"""Removing small connected components from the class map, per class.

A decided class map often holds specks: a few pixels of a class inside another class's region, which no
annotator would draw. :class:`SmallComponents` removes every connected component of a foreground class
smaller than that class's minimum area. Connected components are labelled with ``scipy.ndimage.label`` on
the host (there is no connected-component labelling in torch), one call per class present in the image
rather than one per component; the component areas come from one ``np.bincount`` of the labels. The
filling is done on the device the prediction lives on.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from lightning_seg.errors import ConfigError, closest, truncate
from lightning_seg.postprocess.base import Prediction, Step
from lightning_seg.utils.class_argmax import class_argmax

STRUCTURES = {
    4: ndimage.generate_binary_structure(2, 1),  # edge neighbours only
    8: ndimage.generate_binary_structure(2, 2),  # edge and corner neighbours
}


class SmallComponents(Step):
    """Remove connected components smaller than a minimum area, per class, from ``prediction.classes``.

    Background (class 0) components are never removed. A single pass: a pixel given a new class is not
    looked at again, even if it joins a component of that class that is itself small.

    Args:
        min_area: components with fewer pixels than this are removed. One int for every foreground
            class; or per class, as ``{class name: area}`` (classes not named keep all components; the
            names need the class names, given here or by :meth:`for_classes`) or as a list of K ints indexed
            by class (the background's entry is not used). 0 or 1 removes nothing.
        connectivity: 4 (pixels touching by an edge are connected) or 8 (by an edge or a corner).
        fill: what removed pixels become: "background" (class 0) or "neighbours" (the most probable
            other class of ``prediction.probabilities`` at each pixel, the removed class excluded).
        class_names: the K class names, background first; a model gives them (:meth:`for_classes`) when
            ``min_area`` is given by name or as a list.
    """

    acts_on = "classes"
    name = "components"

    def __init__(
        self,
        min_area: int | dict[str, int] | list[int],
        connectivity: Literal[4, 8] = 8,
        fill: Literal["background", "neighbours"] = "background",
        class_names: list[str] | None = None,
    ) -> None:
        if isinstance(min_area, list | tuple):
            min_area = list(min_area)
        elif isinstance(min_area, dict):
            min_area = dict(min_area)
        values = (
            min_area
            if isinstance(min_area, list)
            else (list(min_area.values()) if isinstance(min_area, dict) else [min_area])
        )
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
            raise ConfigError(f"components.min_area must be whole numbers >= 0, got {min_area}")
        if connectivity not in STRUCTURES:
            raise ConfigError(f"components.connectivity must be 4 or 8, got {connectivity}")
        if fill not in ("background", "neighbours"):
            raise ConfigError(f"components.fill must be background or neighbours, got {fill}")
        self.min_area = min_area
        self.connectivity = connectivity
        self.fill = fill
        self.class_names: list[str] | None = None
        # minimum area of each class 0..K-1 (background 0) for a list or names; an int needs no K
        self._areas: list[int] | None = None
        if class_names is not None:
            self._resolve(class_names)
        elif isinstance(self.min_area, list):
            self._areas = self._from_list(len(self.min_area))

    # ---------------------------------------------------------------------------------- class names
    def for_classes(self, class_names: list[str]) -> SmallComponents:
        """This step with ``min_area`` resolved against a model's K class names (a new step)."""
        return SmallComponents(self.min_area, self.connectivity, self.fill, class_names=list(class_names))

    def _resolve(self, class_names: list[str]) -> None:
        """Resolve ``min_area`` against the K class names (background first).

        Raises:
            ConfigError: a name that is not a class (the valid ones listed), the background named, or a
                list whose length is not K.
        """
        self.class_names = list(class_names)
        num_classes = len(self.class_names)
        if isinstance(self.min_area, list):
            self._areas = self._from_list(num_classes)
        elif isinstance(self.min_area, dict):
            index = {name: i for i, name in enumerate(self.class_names)}
            for name in self.min_area:
                if name not in index:
                    best = closest(name, self.class_names[1:])
                    hint = f"did you mean {best}? " if best else ""
                    raise ConfigError(
                        truncate(
                            f"components.min_area: no class named {name!r}; {hint}"
                            f"classes: {', '.join(self.class_names[1:])}"
                        )
                    )
                if index[name] == 0:
                    raise ConfigError(
                        f"components.min_area names the background class {name!r}, whose components "
                        "are never removed"
                    )
            self._areas = [0] * num_classes
            for name, area in self.min_area.items():
                self._areas[index[name]] = area

    def _from_list(self, num_classes: int) -> list[int]:
        assert isinstance(self.min_area, list)
        if len(self.min_area) != num_classes:
            raise ConfigError(
                f"components.min_area has {len(self.min_area)} areas for {num_classes} classes "
                "(one per class, background first)"
            )
        return [0, *self.min_area[1:]]  # background components are never removed

    def _areas_for(self, num_classes: int) -> list[int]:
        if isinstance(self.min_area, int):
            return [0] + [self.min_area] * (num_classes - 1)
        if self._areas is None:
            raise ConfigError(
                "components.min_area is given by class name, but no class names were given "
                "(class_names, or for_classes() by the model)"
            )
        if len(self._areas) != num_classes:
            raise ConfigError(
                f"components.min_area is set for {len(self._areas)} classes, the prediction has {num_classes}"
            )
        return self._areas

    # ------------------------------------------------------------------------------------------ apply
    def removed(self, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Which pixels lie in a component that is too small.

        Args:
            classes: int64 H×W class map, on any device (labelled on the host).
            num_classes: K.

        Returns:
            bool H×W on the device of ``classes``.
        """
        areas = self._areas_for(num_classes)
        host = classes.cpu().numpy()
        removed = np.zeros(host.shape, dtype=bool)
        structure = STRUCTURES[self.connectivity]
        present = np.flatnonzero(np.bincount(host.ravel(), minlength=num_classes))
        for c in present:
            if c == 0 or areas[c] <= 1:  # background, or no component can be smaller
                continue
            labels, count = ndimage.label(host == c, structure=structure)
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            small = sizes < areas[c]
            small[0] = False  # label 0: the pixels of other classes
            removed |= small[labels]
        return torch.from_numpy(removed).to(classes.device)

    def apply(self, predictions: list[Prediction]) -> None:
        """Remove the small components of each prediction's ``classes`` (int64 H×W), in place."""
        for prediction in predictions:
            classes = prediction.classes
            if classes is None:
                raise RuntimeError("components runs on the class map: it must come after the decision")
            probabilities = prediction.probabilities
            removed = self.removed(classes, probabilities.shape[0])
            if self.fill == "background":
                prediction.classes = classes.masked_fill(removed, 0)
                continue
            # the removed class's own probability is pushed below every other on its removed pixels,
            # so the argmax is the most probable other class
            own = classes[None]
            masked = probabilities.scatter(
                0, own, torch.where(removed[None], -1.0, probabilities.gather(0, own))
            )
            if prediction.present_classes is not None:  # after LabelConsistency: not a class it ruled out
                allowed = prediction.present_classes.to(masked.device).clone()
                allowed[0] = True
                masked = torch.where(allowed.view(-1, 1, 1), masked, -2.0)
            prediction.classes = torch.where(removed, class_argmax(masked, 0), classes)

    def describe(self) -> str:
        """E.g. ``components (< 50 px)``, ``components (< road 20, car 50 px, 4-connected)``."""
        if isinstance(self.min_area, int):
            areas = f"{self.min_area}"
        elif isinstance(self.min_area, dict):
            areas = ", ".join(f"{name} {area}" for name, area in self.min_area.items())
        else:
            areas = "/".join(str(area) for area in self.min_area[1:])
        extras = [f"{self.connectivity}-connected"] if self.connectivity != 8 else []
        if self.fill != "background":
            extras.append(f"filled from {self.fill}")
        return f"{self.name} (< {', '.join([areas + ' px', *extras])})"
