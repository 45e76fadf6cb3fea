"""Image-level labels from a file: a CSV that another model's ``predict`` (the image classifier's, or a
segmentation net's with a class head: ``labels.csv`` beside the masks, see
:class:`~lightning_seg.callbacks.MaskWriter`) or a person wrote, read once and looked up by image name.

Two layouts, one row per image, the image's name first (headed ``name`` or ``Id``):

* ``predict``'s multi-label file: ``name,labels,<label 1>,...,<label L>``, the labels decided present joined
  by ``;`` (the probability columns name every label the model knows)::

      name,labels,aeroplane,bicycle,...
      2009_000012,bicycle;person,0.02,0.91,...

* one 0/1 column per label (the Kaggle competition's ``train_set.csv`` layout)::

      Id,aeroplane,bicycle,...
      2009_000012,0,1,...

The labels are matched to the mask classes by name (a label names the class it says is present); every
foreground class must have a column, so a class the file says nothing about is never removed silently.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch

from lightning_seg.errors import ConfigError, short_path

NAME_COLUMNS = ("name", "Id", "id")
"""Headers accepted for the first column (ours; the Kaggle competitions')."""


def _zero_one(text: str) -> bool | None:
    value = text.strip()
    if value in ("0", "1", "0.0", "1.0"):
        return value.startswith("1")
    return None


class LabelTable:
    """The 0/1 image labels of a CSV (see the module docstring), by image name.

    Args:
        path: the CSV.
        class_names: the K mask classes (background first); every foreground class must be a column.

    Refuses in one line naming the file: a missing or empty file, a first column other than
    :data:`NAME_COLUMNS`, a single-label file (one label per image would remove every other class), a
    column naming no class, a foreground class without a column, a repeated or empty name, a short or long
    row, a decided label that is not a column, and in the 0/1 layout a value other than 0 or 1.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str]) -> None:
        self.path = Path(path)
        where = short_path(str(self.path))
        if not self.path.is_file():
            kind = "a folder" if self.path.is_dir() else "not found"
            raise ConfigError(
                f"{where}: {kind}; expected a CSV of image labels (name,labels,... or name,<label>,...)"
            )
        with self.path.open(newline="", encoding="utf-8-sig") as handle:
            lines = [row for row in csv.reader(handle) if any(field.strip() for field in row)]
        if not lines:
            raise ConfigError(f"{where}: empty; expected a header and one row per image")
        header = [field.strip() for field in lines[0]]
        if header[0] not in NAME_COLUMNS:
            raise ConfigError(
                f"{where}: the first column must be the image name, headed 'name' or 'Id'; got {header[0]!r}"
            )
        if header[1:3] == ["label", "probability"]:
            raise ConfigError(
                f"{where}: a single-label file (one label per image) would remove every other class of each "
                "image; use the labels of a multi-label model (label_mode: multi)"
            )
        listed = len(header) > 1 and header[1] == "labels"  # predict's layout: decided names joined by ';'
        columns = header[2:] if listed else header[1:]
        classes = list(class_names)
        unknown = [name for name in columns if name not in classes]
        if unknown:
            raise ConfigError(
                f"{where}: label column {unknown[0]!r} names no mask class of this model {classes[:6]}...; "
                "a labels file names the classes it says are present"
            )
        missing = [name for name in classes[1:] if name not in columns]
        if missing:
            raise ConfigError(
                f"{where}: no column for class {missing[0]!r} ({len(missing)} of {len(classes) - 1} foreground "
                "classes missing); a labels file must say, for every foreground class, whether it is present"
            )
        self.class_names = classes
        self.rows: dict[str, torch.Tensor] = {}
        for line_number, fields in enumerate(lines[1:], start=2):
            if len(fields) != len(header):
                raise ConfigError(
                    f"{where}: line {line_number} has {len(fields)} fields, the header {len(header)}"
                )
            name = fields[0].strip()
            if not name or name in self.rows:
                raise ConfigError(
                    f"{where}: line {line_number}: name {name!r} is {'repeated' if name else 'empty'}"
                )
            decided = self._listed(fields[1]) if listed else self._zero_one_columns(fields[1:], columns)
            if decided is None:
                raise ConfigError(f"{where}: line {line_number} ({name}): a label value is not 0 or 1")
            odd = [label for label in decided if label not in columns]
            if odd:
                raise ConfigError(
                    f"{where}: line {line_number} ({name}): label {odd[0]!r} is not one of its columns"
                )
            present = torch.zeros(len(classes), dtype=torch.bool)
            present[[classes.index(label) for label in decided]] = True
            present[0] = True  # the background is always possible
            self.rows[name] = present

    @staticmethod
    def _listed(field: str) -> list[str]:
        return [label.strip() for label in field.split(";") if label.strip()]

    @staticmethod
    def _zero_one_columns(fields: Sequence[str], columns: Sequence[str]) -> list[str] | None:
        values = [_zero_one(field) for field in fields]
        if any(value is None for value in values):
            return None
        return [label for label, value in zip(columns, values, strict=True) if value]

    def __len__(self) -> int:
        return len(self.rows)

    def present_classes(self, names: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """bool B×K: the classes the file says each named image holds (background always True).

        Refuses an image the file has no row for (never a guess: naming it and the file)."""
        missing = [str(name) for name in names if str(name) not in self.rows]
        if missing:
            raise ConfigError(
                f"{short_path(str(self.path))}: no row for image {missing[0]!r} ({len(missing)} of this batch's "
                f"{len(names)}); it must list every image this command reads (predict and submit: the predict "
                "split; test: the test split, e.g. train_set.csv for the true labels of training images)"
            )
        return torch.stack([self.rows[str(name)] for name in names]).to(device)

    def decisions(self, names: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
        """bool B×L: the file's 0/1 values of ``labels`` (class names) for each named image."""
        present = self.present_classes(names)
        return present[:, [self.class_names.index(label) for label in labels]]
