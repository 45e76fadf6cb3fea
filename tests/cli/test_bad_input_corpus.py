"""The bad-input corpus: every input a new user could get wrong, run through the command line in-process.

Each refused case must end with exit code 2 and exactly one line on stderr, ``lightning-seg: error: ...``,
that names the file or the key and stays short (the message itself, without the test's temporary folder,
at most ``MESSAGE_LIMIT`` characters). Cases accepted on purpose (``on_bad_sample: skip``, samples named by
no split list, masks without an image) train, and the test asserts what was dropped and that it was said.

The data cases (``DATA_CASES``, below) are functions that write their data under ``root`` and return the
command-line arguments and a pattern the error line must match; the command-line cases (``CLI_CASES``: parse
errors, bad values, checkpoints, config files, untrained weights) live in ``test_cli_errors.py`` beside the
tests of the parse-error reducer, and run here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_cases import CLI_CASES
from data_trees import block_mask, image_for, write_exif_jpeg, write_jpeg, write_png
from helpers import DEFAULT_CONFIG, assert_one_line_error
from PIL import Image

from lightning_seg.cli import main, run_cli

MESSAGE_LIMIT = 200
CLASSES = "[a,b,c]"


# ------------------------------------------------------------------------------------------ the harness
def folder_args(root: Path, *extra: str, classes: str | None = CLASSES, stage: str = "fit") -> list[str]:
    """A FolderDataModule run on ``root`` shrunk to seconds: 32 px, a 2-level U-Net of width 4, 1 epoch."""
    args = [
        stage,
        "--config", DEFAULT_CONFIG,
        "--data", "lightning_seg.data.FolderDataModule",
        "--data.root", str(root / "data"),
        "--data.size", "[32,32]",
        "--data.batch_size", "2",
        "--data.val_fraction", "0.25",
        f"--trainer.default_root_dir={root / 'runs'}",
        f"--trainer.logger.init_args.save_dir={root / 'runs'}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--model.init_args.net.init_args.base_width=4",
        "--model.init_args.net.init_args.depth=2",
    ]  # fmt: skip
    if classes is not None:
        args += ["--data.class_names", classes]
    return [*args, *extra]


def index_tree(root: Path, count: int = 8, classes: int = 3, mask_ext: str = ".png", scale: int = 1) -> Path:
    """root/data/images/s{i}.png + root/data/masks/s{i}<mask_ext>, index masks (× ``scale``)."""
    data = root / "data"
    for i in range(count):
        mask = block_mask(32, 32, classes, seed=i)
        write_png(data / "images" / f"s{i}.png", image_for(mask))
        value = (mask * scale).to(torch.uint8)
        (write_jpeg if mask_ext == ".jpg" else write_png)(data / "masks" / f"s{i}{mask_ext}", value)
    return data


def assert_refused(code: int, err: str, needle: str, root: Path) -> str:
    """Exit code 2 and the one error line matching ``needle``, its message (``root`` aside) within the limit."""
    assert code == 2, err
    return assert_one_line_error(err, pattern=needle, max_len=MESSAGE_LIMIT, uncounted=root)


# -------------------------------------------------------------------------------------- silent mislabels
def zero_255_masks_in_index_mode(root: Path):
    index_tree(root, classes=2, scale=255)
    # the foreground is stored as 255 = ignore_index: over half the pixels are ignored, and no pixel is
    # foreground; either check stops it, with the likely reading
    return folder_args(root, classes="[background,foreground]"), (
        r"(ignore_index 255|'foreground' \(1\) has no pixel).*use data\.mask_mode: binary"
    )


def zero_255_masks_with_small_objects_in_index_mode(root: Path):
    data = root / "data"
    for i in range(8):
        mask = torch.zeros(32, 32, dtype=torch.int64)
        mask[4 + i : 12 + i, 8:16] = 1  # 6% foreground: few ignored pixels, but class 1 never appears
        write_png(data / "images" / f"s{i}.png", image_for(mask))
        write_png(data / "masks" / f"s{i}.png", (mask * 255).to(torch.uint8))
    return folder_args(root, classes="[background,foreground]"), (
        r"class 'foreground' \(1\) has no pixel in the 6 training masks \(masks that store 0/255 are binary: "
        r"use data\.mask_mode: binary\)"
    )


def index_masks_in_binary_mode(root: Path):
    index_tree(root, classes=3)
    return folder_args(root, "--data.mask_mode", "binary", classes=None), (
        r"masks/s\d\.png: .*binary masks.*use data\.mask_mode: index"
    )


def stray_255_in_zero_one_masks(root: Path):
    data = index_tree(root, classes=2)
    mask = block_mask(32, 32, 2, seed=3).to(torch.uint8)
    mask[7, 7] = 255
    write_png(data / "masks" / "s3.png", mask)
    return folder_args(root, "--data.mask_mode", "binary", classes=None), r"masks/s3\.png: value 255"


def exif_rotated_image_against_its_mask(root: Path):
    data = index_tree(root)
    # a 32×48 photo stored landscape with "rotate 90°" in EXIF is 48×32 as shown; its mask was drawn on
    # the stored pixels
    write_exif_jpeg(data / "images" / "s2.jpg", torch.zeros(3, 32, 48, dtype=torch.uint8), orientation=6)
    (data / "images" / "s2.png").unlink()
    write_png(data / "masks" / "s2.png", torch.zeros(32, 48, dtype=torch.uint8))
    return folder_args(root, "--data.size", "null"), r"masks/s2\.png: mask is 32x48 .*EXIF orientation"


def same_name_in_two_image_folders(root: Path):
    data = root / "data"
    for folder in ("cat", "dog"):
        for i in range(4):
            mask = block_mask(32, 32, 3, seed=i)
            write_png(data / "images" / folder / f"x{i}.png", image_for(mask))
    for i in range(4):
        write_png(data / "masks" / f"x{i}.png", block_mask(32, 32, 3, seed=i).to(torch.uint8))
    return folder_args(root), r"images/dog/x0\.png: ambiguous pairing, .*images/cat/x0\.png .*masks/x0\.png"


def index_masks_as_jpeg(root: Path):
    index_tree(root, mask_ext=".jpg")
    return folder_args(root), r"masks/s\d\.jpg: \.jpg is lossy .*save the masks as PNG"


def float_tiff_image(root: Path):
    data = index_tree(root)
    Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32)).save(data / "images" / "s4.tif")
    (data / "images" / "s4.png").unlink()
    return folder_args(
        root
    ), r"images/s4\.tif: float image \(values 0\.5\.\.0\.5\); set data\.image_value_range"


def sixteen_bit_image(root: Path):
    data = index_tree(root)
    Image.fromarray(np.full((32, 32), 4000, dtype=np.uint16)).save(data / "images" / "s5.png")
    return folder_args(
        root
    ), r"images/s5\.png: 16-bit image \(values 4000\.\.4000\); set data\.image_value_range"


def overlapping_split_lists(root: Path):
    data = index_tree(root)
    (data / "train.txt").write_text("s0\ns1\ns2\ns3\ns4\n")
    (data / "val.txt").write_text("s4\ns5\n")
    return folder_args(root, "--data.train_list", "train.txt", "--data.val_list", "val.txt"), (
        r"val\.txt: 's4' is also in the train list .*train\.txt"
    )


def repeated_stem_in_a_split_list(root: Path):
    data = index_tree(root)
    (data / "val.txt").write_text("s1\ns2\ns1\n")
    return folder_args(root, "--data.val_list", "val.txt"), r"val\.txt: 's1' is listed twice"


def every_mask_ignored(root: Path):
    data = index_tree(root)
    for i in range(8):
        write_png(data / "masks" / f"s{i}.png", torch.full((32, 32), 255, dtype=torch.uint8))
    return folder_args(root), r"every train mask pixel is ignore_index 255"


def empty_predict_dir(root: Path):
    index_tree(root)
    (root / "data" / "unlabelled").mkdir()
    args = folder_args(root, "--data.predict_dir", "unlabelled", stage="predict")
    return [*args, "--allow_untrained", "true"], r"no images .* in data\.predict_dir .*unlabelled"


def masks_named_with_a_suffix(root: Path):
    data = index_tree(root)
    for path in sorted((data / "masks").iterdir()):
        path.rename(path.with_name(f"{path.stem}_mask.png"))
    return folder_args(root), r"images/s\d\.png: mask missing .*data\.mask_suffix: '_mask'"


def zero_byte_mask(root: Path):
    data = index_tree(root)
    (data / "masks" / "s6.png").write_bytes(b"")
    return folder_args(root), r"masks/s6\.png: empty file"


def a_class_absent_from_training(root: Path):
    index_tree(root, classes=3)
    return folder_args(root, classes="[a,b,c,d]"), r"class 'd' \(3\) has no pixel in the \d+ training masks"


# --------------------------------------------------------------------------------- bad files and layouts
def unreadable_image(root: Path):
    data = index_tree(root)
    (data / "images" / "s3.png").write_bytes(b"this is not an image")
    return folder_args(root), r"images/s3\.png: cannot read image header"


def truncated_image(root: Path):
    data = index_tree(root)
    path = data / "images" / "s2.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return folder_args(root), r"images/s2\.png: the file was cut short \(an interrupted copy\?\)"


def missing_mask(root: Path):
    data = index_tree(root)
    (data / "masks" / "s4.png").unlink()
    return folder_args(root), r"images/s4\.png: mask missing \(looked for .*masks/s4"


def mask_of_another_size(root: Path):
    data = index_tree(root)
    write_png(data / "masks" / "s1.png", torch.zeros(30, 32, dtype=torch.uint8))
    return folder_args(root), r"masks/s1\.png: mask is 30x32 but its image .*s1\.png is 32x32"


def mask_value_beyond_the_classes(root: Path):
    data = index_tree(root)
    mask = block_mask(32, 32, 3, seed=0).to(torch.uint8)
    mask[5, 5] = 7
    write_png(data / "masks" / "s0.png", mask)
    return folder_args(
        root, "--data.check_files", "full"
    ), r"masks/s0\.png: mask values \[7\] are >= num_classes 3"


def colour_mask_in_index_mode(root: Path):
    data = index_tree(root)
    write_png(data / "masks" / "s6.png", torch.randint(0, 3, (3, 32, 32), dtype=torch.uint8))
    return folder_args(root, "--data.check_files", "full"), r"masks/s6\.png: mask has colours"


def unknown_colour_in_rgb_mode(root: Path):
    data = root / "data"
    for i in range(8):
        labels = block_mask(32, 32, 2, seed=i)
        rgb = torch.where(labels.bool(), 255, 0).to(torch.uint8).expand(3, -1, -1).clone()
        if i == 2:
            rgb[:, 3, 3] = torch.tensor([1, 2, 3], dtype=torch.uint8)
        write_png(data / "images" / f"c{i}.png", image_for(labels))
        write_png(data / "masks" / f"c{i}.png", rgb)
    args = folder_args(
        root, "--data.mask_mode", "rgb", "--data.colors", "[[0,0,0],[255,255,255]]", classes=None
    )
    return [
        *args,
        "--data.check_files",
        "full",
    ], r"masks/c2\.png: unknown colour \[1, 2, 3\] in an RGB mask \(1 pixels, 1 unknown colours\)"


def two_images_with_one_stem(root: Path):
    data = index_tree(root)
    write_png(data / "images" / "s0.jpg", torch.zeros(3, 8, 8, dtype=torch.uint8))
    return folder_args(root), r"two files with the stem 's0'"


def split_list_names_a_missing_image(root: Path):
    data = index_tree(root)
    (data / "val.txt").write_text("s1\nnot_there\n")
    return folder_args(root, "--data.val_list", "val.txt"), r"val\.txt: 'not_there' matches 0 images"


def split_list_not_found(root: Path):
    index_tree(root)
    return folder_args(root, "--data.val_list", "missing.txt"), r"missing\.txt: split list not found"


def empty_test_split(root: Path):
    index_tree(root)
    return folder_args(root, "--allow_untrained", "true", stage="test"), (
        r"the test split is empty; set data\.test_list or data\.test_fraction"
    )


def data_folder_not_found(root: Path):
    return folder_args(root), r"data/images: folder not found"


def no_images_in_the_folder(root: Path):
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "masks").mkdir()
    return folder_args(root), r"data/images: no images found"


def class_names_missing_in_index_mode(root: Path):
    index_tree(root)
    return folder_args(root, classes=None), r"data\.class_names is required with mask_mode index"


def rgb_mode_without_colours(root: Path):
    index_tree(root)
    return folder_args(root, "--data.mask_mode", "rgb", classes=None), r"data\.colors is required"


def binary_threshold_out_of_range(root: Path):
    index_tree(root, classes=2)
    args = folder_args(root, "--data.mask_mode", "binary", "--data.binary_threshold", "0", classes=None)
    return args, r"data\.binary_threshold must be in 1\.\.255"


def ignore_index_inside_the_classes(root: Path):
    index_tree(root)
    return folder_args(root, "--data.ignore_index", "1"), r"ignore_index 1 collides with a class index"


def fractions_over_one(root: Path):
    index_tree(root)
    args = folder_args(root, "--data.val_fraction", "0.6", "--data.test_fraction", "0.5")
    return args, r"data\.val_fraction and data\.test_fraction must be"


def bad_image_value_range(root: Path):
    index_tree(root)
    return folder_args(
        root, "--data.image_value_range", "[10,5]"
    ), r"data\.image_value_range must be \[low, high\]"


def negative_workers(root: Path):
    index_tree(root)
    return folder_args(root, "--data.num_workers", "-1"), r"data\.num_workers must be >= 0"


def zero_batch_size(root: Path):
    index_tree(root)
    return folder_args(root, "--data.batch_size", "0"), r"data\.batch_size must be >= 1"


def every_sample_bad_when_skipping(root: Path):
    data = index_tree(root)
    for path in (data / "masks").iterdir():
        path.unlink()
    return folder_args(root, "--data.on_bad_sample", "skip"), r"every (train|val) sample has a bad file"


DATA_CASES: list[Callable[[Path], tuple[list[str], str]]] = [
    zero_255_masks_in_index_mode,
    zero_255_masks_with_small_objects_in_index_mode,
    index_masks_in_binary_mode,
    stray_255_in_zero_one_masks,
    exif_rotated_image_against_its_mask,
    same_name_in_two_image_folders,
    index_masks_as_jpeg,
    float_tiff_image,
    sixteen_bit_image,
    overlapping_split_lists,
    repeated_stem_in_a_split_list,
    every_mask_ignored,
    empty_predict_dir,
    masks_named_with_a_suffix,
    zero_byte_mask,
    a_class_absent_from_training,
    unreadable_image,
    truncated_image,
    missing_mask,
    mask_of_another_size,
    mask_value_beyond_the_classes,
    colour_mask_in_index_mode,
    unknown_colour_in_rgb_mode,
    two_images_with_one_stem,
    split_list_names_a_missing_image,
    split_list_not_found,
    empty_test_split,
    data_folder_not_found,
    no_images_in_the_folder,
    class_names_missing_in_index_mode,
    rgb_mode_without_colours,
    binary_threshold_out_of_range,
    ignore_index_inside_the_classes,
    fractions_over_one,
    bad_image_value_range,
    negative_workers,
    zero_batch_size,
    every_sample_bad_when_skipping,
]


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda case: case.__name__)
def test_bad_data_is_refused_in_one_line(case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args, needle = case(tmp_path)
    capsys.readouterr()
    code = main(args)
    assert_refused(code, capsys.readouterr().err, needle, tmp_path)
    assert not list(tmp_path.glob("runs/**/*.ckpt"))  # refused before any training


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_run_once: Path) -> Path:
    """A copy of the session's tiny trained run (conftest): its last checkpoint."""
    run = tmp_path_factory.mktemp("trained") / "default" / "version_0"
    shutil.copytree(tiny_run_once, run)
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_command_lines_are_refused_in_one_line(
    build, expected: str, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build(tmp_path, checkpoint)
    capsys.readouterr()
    code = main(args)
    assert_refused(code, capsys.readouterr().err, re.escape(expected), tmp_path)
    assert not list(tmp_path.glob("runs/**/*.ckpt"))  # refused before any training


def test_the_corpus_covers_at_least_forty_cases() -> None:
    assert len(DATA_CASES) + len(CLI_CASES) >= 40


# ----------------------------------------------------------------------------------- accepted on purpose
def test_bad_samples_skipped_on_purpose_are_counted(tmp_path: Path) -> None:
    data = index_tree(tmp_path)
    (data / "masks" / "s2.png").unlink()
    (data / "images" / "s4.png").write_bytes(b"junk")
    with pytest.warns(UserWarning, match=r"skipped 1 of \d (train|val) samples with bad files"):
        cli = run_cli(folder_args(tmp_path, "--data.on_bad_sample", "skip"))
    assert cli is not None
    dm = cli.datamodule
    assert sum(dm.skipped.values()) == 2
    kept = {s.name for d in dm.datasets.values() for s in d.samples}
    assert kept == {f"s{i}" for i in range(8)} - {"s2", "s4"}


def test_samples_in_no_split_list_and_masks_without_images_are_counted(tmp_path: Path) -> None:
    data = index_tree(tmp_path)
    (data / "train.txt").write_text("s0\ns1\ns2\ns3\ns4\n")
    (data / "val.txt").write_text("s5\ns6\n")
    write_png(data / "masks" / "orphan.png", torch.zeros(32, 32, dtype=torch.uint8))
    with pytest.warns(UserWarning) as warnings:
        cli = run_cli(folder_args(tmp_path, "--data.train_list", "train.txt", "--data.val_list", "val.txt"))
    assert cli is not None
    said = [str(w.message) for w in warnings]
    assert any(
        re.search(r"1 sample\(s\) are named by no split list and not used \(first: s7\)", m) for m in said
    )
    assert any(
        re.search(r"1 mask\(s\) have no image and are not used \(first: .*orphan\.png\)", m) for m in said
    )
    assert cli.datamodule.unlisted == ["s7"]
    assert sorted(s.name for s in cli.datamodule.datasets["train"].samples) == [f"s{i}" for i in range(5)]
