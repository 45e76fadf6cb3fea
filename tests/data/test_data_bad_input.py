"""Bad files: each gives one ConfigError line naming the file, or is counted and skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lightning_seg.data import FolderDataModule
from lightning_seg.data.io import read_image
from lightning_seg.errors import ConfigError
from tests.data_trees import block_mask, folder_tree, image_for, write_png

CLASSES = ["a", "b", "c"]


def module(root: Path, **kwargs) -> FolderDataModule:
    kwargs.setdefault("class_names", CLASSES)
    kwargs.setdefault("size", (32, 32))
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("val_fraction", 0.25)
    return FolderDataModule(str(root), **kwargs)


def one_line_error(match: str, call) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return folder_tree(tmp_path / "data", count=8, sizes=((32, 32),))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_unreadable_image(tree: Path):
    (tree / "images" / "s3.png").write_bytes(b"this is not an image")
    one_line_error(r"s3\.png: cannot read image header", lambda: module(tree).setup("fit"))
    one_line_error(r"s3\.png: cannot decode image", lambda: read_image(tree / "images" / "s3.png"))


def test_empty_and_truncated_images(tree: Path):
    intact = (tree / "images" / "s2.png").read_bytes()
    truncate(tree / "images" / "s2.png")
    # the header check at setup reads the EXIF block too, which finds a truncated PNG
    one_line_error(r"s2\.png: the file was cut short", lambda: module(tree).setup("fit"))
    # loading the sample names the file too
    dm = module(tree, val_fraction=0.5, check_files="none")
    dm.setup("fit")
    dataset = next(d for d in dm.datasets.values() if "s2" in [s.name for s in d.samples])
    index = [s.name for s in dataset.samples].index("s2")
    one_line_error(r"s2\.png: cannot decode image", lambda: dataset[index])
    # a full check finds it at setup
    one_line_error(r"s2\.png: cannot decode image", lambda: module(tree, check_files="full").setup("fit"))
    (tree / "images" / "s2.png").write_bytes(intact)
    (tree / "images" / "s5.png").write_bytes(b"")
    one_line_error(r"s5\.png: empty file", lambda: module(tree, check_files="full").setup("fit"))


def test_truncated_jpeg(tmp_path: Path):
    from tests.data_trees import write_jpeg

    path = write_jpeg(tmp_path / "x.jpg", torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8))
    truncate(path)
    one_line_error(r"x\.jpg: cannot decode image", lambda: read_image(path))


def test_mask_missing(tree: Path):
    (tree / "masks" / "s4.png").unlink()
    message = one_line_error(r"s4\.png: mask missing", lambda: module(tree).setup("fit"))
    assert "masks" in message


def test_image_mask_size_mismatch(tree: Path):
    write_png(tree / "masks" / "s1.png", torch.zeros(30, 32, dtype=torch.uint8))
    one_line_error(
        r"masks/s1\.png: mask is 30x32 but its image .*s1\.png is 32x32", lambda: module(tree).setup("fit")
    )


def test_mask_value_out_of_range(tree: Path):
    mask = block_mask(32, 32, 3, seed=0)
    mask[5, 5] = 7
    write_png(tree / "masks" / "s0.png", mask.to(torch.uint8))
    dm = module(tree, check_files="full")
    one_line_error(
        r"s0\.png: mask values \[7\] are >= num_classes 3 and not ignore_index 255", lambda: dm.setup("fit")
    )


def test_colour_mask_read_as_index_mask(tree: Path):
    write_png(tree / "masks" / "s6.png", torch.randint(0, 3, (3, 32, 32), dtype=torch.uint8))
    one_line_error(r"s6\.png: mask has colours", lambda: module(tree, check_files="full").setup("fit"))


def test_skip_counts_bad_samples_and_trains_on_the_rest(tree: Path):
    truncate(tree / "images" / "s1.png")
    (tree / "masks" / "s2.png").unlink()
    write_png(tree / "masks" / "s3.png", torch.full((32, 32), 9, dtype=torch.uint8))
    (tree / "images" / "s4.png").write_bytes(b"junk")
    dm = module(tree, on_bad_sample="skip", val_fraction=0.5)
    with pytest.warns(
        UserWarning, match=r"FolderDataModule: skipped \d of \d (train|val) samples with bad files"
    ):
        dm.setup("fit")
    assert sum(dm.skipped.values()) == 4
    kept = {s.name for d in dm.datasets.values() for s in d.samples}
    assert kept == {"s0", "s5", "s6", "s7"}
    for split in ("train", "val"):
        batch = next(iter(dm._loader(split, shuffle=False)))
        assert batch["mask"].dtype == torch.uint8  # on the wire; widened to int64 on the device


def test_skip_with_everything_bad(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=4, sizes=((32, 32),))
    for path in (root / "masks").iterdir():
        path.unlink()
    with pytest.warns(UserWarning):
        one_line_error(
            r"every (train|val) sample has a bad file",
            lambda: module(root, on_bad_sample="skip").setup("fit"),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_names": None}, r"data.class_names is required with mask_mode index"),
        ({"mask_mode": "rgb", "class_names": None}, r"data.colors is required with mask_mode rgb"),
        (
            {"mask_mode": "rgb", "colors": [[0, 0, 0]], "class_names": ["a", "b"]},
            r"has 2 names but data.colors 1",
        ),
        ({"mask_mode": "rgb", "colors": [[0, 0, 0], [0, 0, 0]], "class_names": None}, r"must be distinct"),
        ({"mask_mode": "rgb", "colors": [[0, 0, 300], [1, 1, 1]], "class_names": None}, r"values 0..255"),
        (
            {"mask_mode": "binary", "binary_threshold": 0, "class_names": None},
            r"binary_threshold must be in 1..255",
        ),
        ({"mask_mode": "binary", "class_names": ["x"]}, r"must have 2 names"),
        ({"size": (0, 32)}, r"data.size must be \[height, width\]"),
        ({"ignore_index": 1}, r"ignore_index 1 collides with a class index"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"val_fraction and data.test_fraction"),
    ],
)
def test_config_errors(tree: Path, kwargs: dict, match: str):
    one_line_error(match, lambda: module(tree, **kwargs).setup("fit"))


def test_layout_errors(tmp_path: Path, tree: Path):
    one_line_error(r"nowhere/images: folder not found", lambda: module(tmp_path / "nowhere").setup("fit"))
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    one_line_error(r"empty/images: no images found", lambda: module(tmp_path / "empty").setup("fit"))
    write_png(tree / "images" / "s0.jpg", torch.zeros(3, 8, 8, dtype=torch.uint8))
    one_line_error(r"two files with the stem 's0'", lambda: module(tree).setup("fit"))
    (tree / "images" / "s0.jpg").unlink()
    (tree / "val.txt").write_text("s1\nnot_there\n")
    one_line_error(
        r"val\.txt: 'not_there' matches 0 images", lambda: module(tree, val_list="val.txt").setup("fit")
    )
    one_line_error(
        r"missing\.txt: split list not found", lambda: module(tree, val_list="missing.txt").setup("fit")
    )
    one_line_error(
        r"the test split is empty; set data.test_list or data.test_fraction",
        lambda: module(tree).setup("test"),
    )


def test_error_messages_name_the_file_first(tree: Path):
    (tree / "masks" / "s4.png").unlink()
    message = one_line_error("mask missing", lambda: module(tree).setup("fit"))
    assert re.match(r"^/.*s4\.png: ", message)


# ------------------------------------------------------------------- decoded as a viewer shows the file
def test_exif_orientation_is_applied_to_images_masks_and_headers(tmp_path: Path):
    from data_trees import write_exif_jpeg

    from lightning_seg.data.io import image_size

    # a square photo stored unrotated with "rotate 90° clockwise" (6) in its EXIF block
    stored = torch.zeros(3, 32, 32, dtype=torch.uint8)
    stored[:, :8, :] = 255  # a bright band along the stored top edge
    path = write_exif_jpeg(tmp_path / "square.jpg", stored, orientation=6)
    shown = read_image(path)
    assert shown[:, :, -8:].float().mean() > 200 and shown[:, :, :8].float().mean() < 50  # top → right
    # a landscape one is portrait once shown, in the header check too
    landscape = write_exif_jpeg(
        tmp_path / "wide.jpg", torch.zeros(3, 32, 48, dtype=torch.uint8), orientation=6
    )
    assert tuple(read_image(landscape).shape) == (3, 48, 32) and image_size(landscape) == (48, 32)


def test_animated_gif_gives_its_first_frame(tmp_path: Path):
    import numpy as np
    from PIL import Image

    frames = [Image.fromarray(np.full((8, 10), 40 * i, dtype=np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    image = read_image(tmp_path / "a.gif")
    assert tuple(image.shape) == (3, 8, 10) and int(image.max()) == 0


def test_deep_images_are_scaled_by_the_given_range(tmp_path: Path):
    import numpy as np
    from PIL import Image

    twelve_bit = np.array([[0, 1024, 4095]], dtype=np.uint16)
    Image.fromarray(twelve_bit).save(tmp_path / "d.png")
    Image.fromarray(twelve_bit.astype(np.float32) / 4095).save(tmp_path / "f.tif")
    one_line_error(r"d\.png: 16-bit image \(values 0\.\.4095\)", lambda: read_image(tmp_path / "d.png"))
    assert read_image(tmp_path / "d.png", (0, 4095))[0].tolist() == [[0, 64, 255]]  # not the high byte
    assert read_image(tmp_path / "f.tif", (0, 1))[0].tolist() == [[0, 64, 255]]  # not all zeros


def test_a_deep_image_is_refused_at_setup_and_loads_with_its_range(tree: Path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((32, 32), 4000, dtype=np.uint16)).save(tree / "images" / "s3.png")
    one_line_error(r"s3\.png: 16-bit image", lambda: module(tree).setup("fit"))
    dm = module(tree, image_value_range=(0, 4095), val_fraction=0.5)
    dm.setup("fit")
    dataset = next(d for d in dm.datasets.values() if "s3" in [s.name for s in d.samples])
    item = dataset[[s.name for s in dataset.samples].index("s3")]
    assert int(item["image"].min()) == int(item["image"].max()) == round(4000 * 255 / 4095)


# ------------------------------------------------------------------ found by a review, as a new user would
def test_sixteen_bit_colour_tiff_is_refused_even_with_a_range(tmp_path: Path):
    import numpy as np

    from tests.data_trees import write_tiff16_rgb

    path = write_tiff16_rgb(tmp_path / "t.tif", np.full((8, 8, 3), 1500, dtype=np.uint16))
    for value_range in (None, (0, 4095)):
        one_line_error(
            r"t\.tif: a colour TIFF of more than 8 bits", lambda r=value_range: read_image(path, r)
        )


def test_transparency_that_may_hold_the_label_is_refused(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from lightning_seg.data.io import read_mask

    inverted = np.zeros((16, 16, 4), np.uint8)
    inverted[..., :3], inverted[4:8, 4:8] = 255, (0, 0, 0, 255)  # opaque black objects on transparent white
    Image.fromarray(inverted, "RGBA").save(tmp_path / "inv.png")
    for color in (False, True):
        one_line_error(r"inv\.png: mask has transparency \(240 pixels\) over non-black values",
                       lambda c=color: read_mask(tmp_path / "inv.png", color=c))  # fmt: skip
    painted = np.zeros((16, 16, 4), np.uint8)
    painted[4:8, 4:8] = (255, 255, 255, 255)  # a label painted on an empty transparent canvas
    Image.fromarray(painted, "RGBA").save(tmp_path / "ok.png")
    assert read_mask(tmp_path / "ok.png", color=True).unique().tolist() == [0, 255]


def test_palette_gif_index_masks_give_their_indices(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from lightning_seg.data.io import read_mask

    indices = np.zeros((8, 8), np.uint8)
    indices[2:4, 2:4] = 1
    gif = Image.fromarray(indices, "P")
    gif.putpalette([0, 0, 0, 200, 30, 10] + [0] * 762)  # class 1 shown red: torchvision would give colours
    gif.save(tmp_path / "m.gif")
    assert read_mask(tmp_path / "m.gif").unique().tolist() == [0, 1]


def test_masks_pair_within_their_folder_or_a_flat_folder_only(tmp_path: Path):
    root = tmp_path / "nested"
    for i in range(4):
        mask = block_mask(32, 32, 3, seed=i)
        write_png(root / "images" / "a" / f"s{i}.png", image_for(mask))
        write_png(root / "masks" / "b" / f"s{i}.png", mask.to(torch.uint8))  # another folder: no pair
    one_line_error(r"images/a/s\d\.png: mask missing", lambda: module(root).setup("fit"))
    write_png(root / "masks" / "a" / "s0.png", block_mask(32, 32, 3, seed=0).to(torch.uint8))
    one_line_error(r"images/a/s[123]\.png: mask missing", lambda: module(root).setup("fit"))


def test_a_list_entry_with_a_folder_never_means_another_folder(tmp_path: Path):
    root = tmp_path / "nested"
    for folder in ("a", "val"):
        for i in range(4 if folder == "a" else 2, 6 if folder == "val" else 4):
            mask = block_mask(32, 32, 3, seed=i)
            write_png(root / "images" / folder / f"s{i}.png", image_for(mask))
            write_png(root / "masks" / folder / f"s{i}.png", mask.to(torch.uint8))
    (root / "val.txt").write_text("val/s4\nval/s1\n")  # s1 lives in a/, not in val/
    one_line_error(
        r"val\.txt: 'val/s1' matches 0 images", lambda: module(root, val_list="val.txt").setup("fit")
    )


def test_the_binary_hint_is_not_given_for_an_unrelated_absent_class(tree: Path):
    (tree / "train.txt").write_text("\n".join(f"s{i}" for i in range(6)))
    for i in range(6):  # class 2 only in the val images
        mask = block_mask(32, 32, 2, seed=i)
        mask[:2, :2] = 255
        write_png(tree / "masks" / f"s{i}.png", mask.to(torch.uint8))
    message = one_line_error(
        r"class 'c' \(2\) has no pixel", lambda: module(tree, train_list="train.txt").setup("fit")
    )
    assert "mask_mode: binary" not in message


def test_images_rotated_by_exif_are_counted_at_setup(tree: Path):
    from data_trees import write_exif_jpeg

    # a square image: no size check can tell whether its mask was drawn on the rotated view
    write_exif_jpeg(tree / "images" / "s3.jpg", image_for(block_mask(32, 32, 3, seed=3)), orientation=6)
    (tree / "images" / "s3.png").unlink()
    with pytest.warns(UserWarning, match=r"1 (train|val) image\(s\) carry an EXIF orientation .*s3\.jpg"):
        module(tree).setup("fit")


def test_antialiased_rgb_masks_are_named_as_such(tmp_path: Path):
    from lightning_seg.data.io import ColorMaskEncoder

    labels = block_mask(16, 16, 2, seed=0).float()
    smooth = torch.nn.functional.avg_pool2d(labels[None, None] * 255, 3, stride=1, padding=1)[0, 0]
    rgb = torch.stack([smooth, torch.zeros_like(smooth), torch.zeros_like(smooth)]).round().to(torch.uint8)
    path = write_png(tmp_path / "aa.png", rgb)
    encoder = ColorMaskEncoder(((0, 0, 0), (255, 0, 0)))
    one_line_error(
        r"aa\.png: unknown colour .*the mask looks antialiased or resized", lambda: encoder.read(path)
    )
