"""The binary threshold is decided once per dataset from the values its masks hold; a third value is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_seg.data import FolderDataModule
from lightning_seg.data.binary import decide_binary_threshold
from lightning_seg.errors import ConfigError
from tests.data_trees import block_mask, image_for, write_jpeg, write_png


def masks(root: Path, values: list[torch.Tensor], ext: str = ".png") -> list[Path]:
    write = write_jpeg if ext == ".jpg" else write_png
    return [write(root / f"m{i}{ext}", v.to(torch.uint8)) for i, v in enumerate(values)]


def two_value(seed: int, high: int, size: int = 32) -> torch.Tensor:
    return block_mask(size, size, 2, seed=seed) * high


def test_zero_one_and_zero_255_masks(tmp_path: Path):
    assert decide_binary_threshold(masks(tmp_path / "a", [two_value(i, 1) for i in range(4)])) == 1
    assert decide_binary_threshold(masks(tmp_path / "b", [two_value(i, 255) for i in range(4)])) == 128


def test_jpeg_noise_and_antialiased_edges_are_not_a_third_value(tmp_path: Path):
    jpegs = masks(tmp_path / "j", [two_value(i, 255) for i in range(4)], ext=".jpg")
    assert decide_binary_threshold(jpegs) == 128
    smooth = []
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    for i in range(4):
        disc = (((yy - 60 - i) ** 2 + (xx - 64) ** 2) < 40**2).float() * 255
        blurred = torch.nn.functional.avg_pool2d(disc[None, None], 3, stride=1, padding=1)[0, 0]
        smooth.append(blurred.round())  # antialiased edges: several rare levels between 0 and 255
    assert decide_binary_threshold(masks(tmp_path / "s", smooth)) == 128


def test_a_stray_255_in_zero_one_masks_is_refused_naming_its_file(tmp_path: Path):
    values = [two_value(i, 1) for i in range(4)]
    values[2][0, 0] = 255
    paths = masks(tmp_path, values)
    with pytest.raises(
        ConfigError,
        match=r"m2\.png: value 255 in binary masks whose values are otherwise 0 and 1 \(\[0, 1, 255\]\); fix that file",
    ):
        decide_binary_threshold(paths)


def test_index_masks_read_as_binary_are_refused(tmp_path: Path):
    paths = masks(tmp_path, [block_mask(32, 32, 3, seed=i) for i in range(4)])
    with pytest.raises(ConfigError, match=r"binary masks .*\[0, 1, 2\].* use data.mask_mode: index"):
        decide_binary_threshold(paths)
    # three well-separated labels: the middle one is too common to be edges
    paths = masks(tmp_path / "b", [block_mask(32, 32, 3, seed=i) * 120 for i in range(4)])
    with pytest.raises(ConfigError, match=r"third value 120 between 0 and 240 \(\[0, 120, 240\]\)"):
        decide_binary_threshold(paths)


def test_jpeg_zero_one_masks_are_refused(tmp_path: Path):
    paths = masks(tmp_path, [two_value(i, 1) for i in range(4)], ext=".jpg")
    with pytest.raises(ConfigError, match=r"JPEG masks hold only values 0\.\.\d+, too close to tell"):
        decide_binary_threshold(paths)


def binary_tree(root: Path, high: int, count: int = 8) -> Path:
    for i in range(count):
        mask = two_value(i, 1)
        write_png(root / "images" / f"s{i}.png", image_for(mask))
        write_png(root / "masks" / f"s{i}.png", (mask * high).to(torch.uint8))
    return root


@pytest.mark.parametrize("high", [1, 255])
def test_folder_module_decides_once_and_trains_on_the_foreground(tmp_path: Path, high: int):
    root = binary_tree(tmp_path / "data", high)
    dm = FolderDataModule(str(root), mask_mode="binary", size=(32, 32), batch_size=2, val_fraction=0.25)
    dm.setup("fit")
    assert dm.mask_encoder().threshold == (1 if high == 1 else 128)
    stats = dm.class_statistics("train")
    assert int(stats.pixel_counts[1]) > 0 and int(stats.pixel_counts[0]) > 0


def test_folder_module_refuses_a_stray_value_in_any_split(tmp_path: Path):
    root = binary_tree(tmp_path / "data", 1)
    mask = two_value(5, 1).to(torch.uint8)
    mask[3, 3] = 255
    write_png(root / "masks" / "s5.png", mask)
    dm = FolderDataModule(str(root), mask_mode="binary", size=(32, 32), batch_size=2, val_fraction=0.25)
    with pytest.raises(ConfigError, match=r"s5\.png: value 255"):
        dm.setup("fit")
    # an explicit threshold is the user's decision: used as given
    dm = FolderDataModule(
        str(root), mask_mode="binary", binary_threshold=1, size=(32, 32), batch_size=2, val_fraction=0.25
    )
    dm.setup("fit")
    assert dm.mask_encoder().threshold == 1


# ------------------------------------------------------------------ found by a review, as a new user would
def disc(size: int, radius: float, centre: float, blur: bool = True) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    mask = (((yy - centre) ** 2 + (xx - centre) ** 2) < radius**2).float() * 255
    if blur:
        mask = torch.nn.functional.avg_pool2d(mask[None, None], 3, stride=1, padding=1)[0, 0]
    return mask.round()


def test_a_rare_third_label_between_close_values_is_refused(tmp_path: Path):
    values = [two_value(i, 2) for i in range(4)]
    values[1][:2, :4] = 1  # 8 pixels of a third label: no smoothing makes a 1 between 0 and 2
    with pytest.raises(ConfigError, match=r"m1\.png: binary masks hold a third value 1 between 0 and 2"):
        decide_binary_threshold(masks(tmp_path, values))


def test_jpeg_masks_below_255_and_their_overshoot(tmp_path: Path):
    jpegs = [write_jpeg(tmp_path / f"j{i}.jpg", (block_mask(32, 32, 2, seed=i) * 128).to(torch.uint8), quality=75)
             for i in range(4)]  # fmt: skip
    assert 50 <= decide_binary_threshold(jpegs) <= 80


def test_small_antialiased_objects_and_thin_lines(tmp_path: Path):
    circles = [disc(64, 10 + i, 30) for i in range(4)]  # about 8 % edge pixels
    assert decide_binary_threshold(masks(tmp_path / "c", circles)) == 128
    lines = []
    for i in range(4):
        line = torch.zeros(256, 256)
        line[:, 60 + i : 63 + i] = 255
        lines.append(torch.nn.functional.avg_pool2d(line[None, None], 3, stride=1, padding=1)[0, 0].round())
    assert decide_binary_threshold(masks(tmp_path / "l", lines)) == 128


def test_colour_masks_read_as_binary_are_refused(tmp_path: Path):
    coloured = []
    for i in range(4):
        labels = block_mask(32, 32, 3, seed=i)
        rgb = torch.zeros(3, 32, 32, dtype=torch.uint8)
        rgb[0][labels == 1] = 255  # red objects
        rgb[1][labels == 2] = 255  # green objects
        coloured.append(rgb)
    with pytest.raises(ConfigError, match=r"masks of 2 colours read as binary; .*data\.mask_mode: rgb"):
        decide_binary_threshold(masks(tmp_path, coloured))


def test_a_given_threshold_in_the_jpeg_noise_is_refused(tmp_path: Path):
    jpegs = masks(tmp_path, [two_value(i, 255) for i in range(4)], ext=".jpg")
    with pytest.raises(
        ConfigError, match=r"data\.binary_threshold 1 lies in the JPEG noise of the mask value 0"
    ):
        decide_binary_threshold(jpegs, given=1)
    assert decide_binary_threshold(jpegs, given=100) == 100
