"""The messages a new user found least clear (issue 28's campaign of bad inputs): each now says what
happened and the way forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_trees import folder_tree, write_index_pair, write_png

from lightning_seg.data import FolderDataModule, SyntheticDataModule
from lightning_seg.errors import ConfigError

CLASSES = ["a", "b", "c"]


def test_the_same_list_for_val_and_test_says_so_and_how_to_score_val(tmp_path: Path) -> None:
    data = folder_tree(tmp_path / "data", count=6)
    (data / "train.txt").write_text("s0\ns1\ns2\ns3\n")
    (data / "val.txt").write_text("s4\ns5\n")
    module = FolderDataModule(
        root=str(data), class_names=CLASSES, train_list="train.txt", val_list="val.txt", test_list="val.txt"
    )
    with pytest.raises(ConfigError, match="data.val_list and data.test_list are the same file") as raised:
        module.split_samples("test")
    assert "--data.score_at_original_size [val]" in str(raised.value)


def test_scoring_val_at_the_original_size_is_accepted_alone() -> None:
    assert SyntheticDataModule(score_at_original_size=["val"]).score_at_original_size == ("val", "test")
    with pytest.raises(ConfigError, match="test always scores at the original size"):
        SyntheticDataModule(score_at_original_size=[])


def _three_class_pairs(data: Path, count: int = 4) -> torch.Tensor:
    """``count`` 16×16 image/mask pairs ``s{i}`` under ``data`` holding classes 0, 1 and 2; the mask."""
    mask = torch.zeros(16, 16, dtype=torch.int64)
    mask[:8] = 1
    mask[8:, :8] = 2
    for i in range(count):
        write_index_pair(data, f"s{i}", mask)
    return mask


def test_sixteen_bit_masks_of_class_times_257_are_recognised(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mask = _three_class_pairs(data)
    for i in range(4):
        write_png(data / "masks" / f"s{i}.png", (mask * 257).to(torch.uint16))  # the exporter's scaling
    module = FolderDataModule(root=str(data), class_names=CLASSES, val_fraction=0.25)
    with pytest.raises(ConfigError, match="every value is a class × 257 \\(257 = 1 × 257, 514 = 2 × 257\\)"):
        module.setup("fit")


def test_a_folder_of_one_image_says_it_is_one_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_index_pair(data, "only", torch.arange(3).repeat_interleave(3)[:8].expand(8, 8).clone())
    with pytest.raises(ConfigError, match="the folder holds 1 image: too few to split"):
        FolderDataModule(root=str(data), class_names=CLASSES).setup("fit")


def test_a_folder_where_a_file_belongs_and_a_file_where_a_folder_belongs_say_so(tmp_path: Path) -> None:
    from lightning_seg.data.files import find_files
    from lightning_seg.data.io import image_header

    (tmp_path / "mask.png").mkdir()
    with pytest.raises(ConfigError, match="mask.png: a folder, where an image or mask file was expected"):
        image_header(tmp_path / "mask.png")
    (tmp_path / "images").write_text("not a folder")
    with pytest.raises(ConfigError, match="images: a file, where a folder of images was expected"):
        find_files(tmp_path / "images", (".png",))


def test_a_decompression_bomb_says_its_size_the_limit_and_how_to_raise_it(
    tmp_path: Path, monkeypatch
) -> None:
    from PIL import Image

    from lightning_seg.data.io import image_header

    path = write_png(tmp_path / "big.png", torch.zeros(3, 16, 16, dtype=torch.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 256 pixels > 2 x 100: PIL refuses
    with pytest.raises(
        ConfigError, match="256 pixels, over PIL's decompression-bomb limit of 200 pixels"
    ) as raised:
        image_header(path)
    assert "MAX_IMAGE_PIXELS = None" in str(raised.value)


def test_a_truncated_jpeg_is_refused_at_setup_by_the_header_check(tmp_path: Path) -> None:
    """An interrupted copy: found when setup checks the headers (before a run folder exists), not at the
    first batch that loads it."""
    from torchvision.io import encode_jpeg

    from lightning_seg.data.io import image_header

    data = tmp_path / "data"
    _three_class_pairs(data)
    for i in range(4):
        (data / "images" / f"s{i}.png").unlink()
        image = (torch.rand(3, 16, 16) * 255).to(torch.uint8)
        (data / "images" / f"s{i}.jpg").write_bytes(encode_jpeg(image).numpy().tobytes())
    image_header(data / "images" / "s0.jpg")  # a whole JPEG passes
    whole = (data / "images" / "s1.jpg").read_bytes()
    (data / "images" / "s1.jpg").write_bytes(whole[:-8])  # the end of the scan and the marker lost
    module = FolderDataModule(root=str(data), class_names=CLASSES, val_fraction=0.25)
    with pytest.raises(
        ConfigError, match="s1.jpg: truncated JPEG \\(no end-of-image marker\\): the file was cut"
    ):
        module.setup("fit")
    # cut shorter: PIL cannot read the header, and says truncated too
    (data / "images" / "s1.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match="s1.jpg: the file was cut short"):
        image_header(data / "images" / "s1.jpg")
