"""``LabelTable``: image labels from a file, in predict's layout and the 0/1 layout, refused when they could be
misread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_seg.errors import ConfigError
from lightning_seg.labels.table import LabelTable

CLASSES = ["background", "cat", "dog", "car"]


def test_both_layouts_give_the_present_classes(tmp_path: Path) -> None:
    listed = tmp_path / "listed.csv"
    listed.write_text("name,labels,cat,dog,car\na,cat;car,0.9,0.1,0.8\nb,,0.1,0.2,0.3\n")
    columns = tmp_path / "columns.csv"
    columns.write_text("Id,car,dog,cat\na,1,0,1\nb,0,0,0\n")  # another column order: matched by name
    expected = torch.tensor([[True, True, False, True], [True, False, False, False]])
    for path in (listed, columns):
        table = LabelTable(path, CLASSES)
        assert torch.equal(table.present_classes(["a", "b"]), expected)
        assert table.decisions(["b", "a"], ["car", "cat"]).tolist() == [[False, False], [True, True]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,labels,cat,dog\na,cat,0.9,0.1\n", "no column for class 'car'"),
        ("name,cat,dog,car,cow\na,1,0,0,1\n", "label column 'cow' names no mask class"),
        ("name,cat,dog,car\na,0.9,0,1\n", "is not 0 or 1"),
        ("name,label,probability\na,cat,0.9\n", "single-label file"),
        ("file,cat,dog,car\na,1,0,0\n", "first column must be the image name"),
        ("name,labels,cat,dog,car\na,cow,0.9,0.1,0.1\n", "label 'cow' is not one of its columns"),
        ("name,cat,dog,car\na,1,0,0\na,0,0,0\n", "'a' is repeated"),
    ],
)
def test_refused_in_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        LabelTable(path, CLASSES)
    assert "labels.csv" in str(error.value) and "\n" not in str(error.value)


def test_an_image_without_a_row_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("name,cat,dog,car\na,1,0,0\n")
    with pytest.raises(ConfigError, match="no row for image .b."):
        LabelTable(path, CLASSES).present_classes(["a", "b"])
