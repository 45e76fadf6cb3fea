"""FolderDataModule and the decoding/encoding helpers under it, on tiny trees written by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_seg.data import FolderDataModule
from lightning_seg.data.files import SampleFile
from lightning_seg.data.io import BinaryMaskEncoder, ColorMaskEncoder, IndexMaskEncoder, read_image, read_mask
from lightning_seg.data.splits import split_samples
from lightning_seg.errors import ConfigError
from tests.data_trees import (
    VALUE_STEP,
    block_mask,
    folder_tree,
    image_for,
    write_jpeg,
    write_palette_png,
    write_png,
)

REPO = Path(__file__).resolve().parents[2]


def check_batch(
    batch: dict, batch_size: int, size: tuple[int, int], num_classes: int, ignore_index: int = 255
):
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (batch_size, 3, *size)
    assert batch["mask"].dtype == torch.uint8 and batch["mask"].shape == (batch_size, *size)  # on the wire
    labels = batch["mask"].unique()
    assert bool(((labels >= 0) & (labels < num_classes) | (labels == ignore_index)).all()), labels
    assert batch["orig_size"].dtype == torch.int64 and batch["orig_size"].shape == (batch_size, 2)
    assert len(batch["name"]) == batch_size and all(isinstance(n, str) for n in batch["name"])


def test_index_masks_setup_batch_and_alignment(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=10, num_classes=3)
    dm = FolderDataModule(str(root), class_names=["a", "b", "c"], size=(32, 32), batch_size=4)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.ignore_index == 255 and dm.label_names == ()
    assert len(dm.datasets["train"]) == 8 and len(dm.datasets["val"]) == 2
    batch = next(iter(dm.val_dataloader()))
    check_batch(batch, 2, (32, 32), 3)
    # orig_size is the stored size (the tree alternates 32x48 and 40x40)
    assert {tuple(s) for s in batch["orig_size"].tolist()} <= {(32, 48), (40, 40)}
    # every sample: resized image and mask still agree (image value = VALUE_STEP * class)
    for item in (dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))):
        valid = item["mask"] != 255
        close = (item["image"][0].long() - item["mask"] * VALUE_STEP).abs() <= 2
        # bilinear antialiasing blurs block edges in the image, nearest keeps the mask sharp: most agree,
        # while a mask off by a flip would not
        assert close[valid].float().mean() > 0.8
        flipped = (item["image"][0].long() - item["mask"].flip(-1) * VALUE_STEP).abs() <= 2
        assert flipped[valid & valid.flip(-1)].float().mean() < 0.7
        assert (item["mask"] == 255).any() == (int(item["name"][1:]) % 2 == 0)


def test_same_files_keep_their_values_without_resize(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=4, sizes=((24, 40),))
    dm = FolderDataModule(str(root), class_names=["a", "b", "c"], size=None, batch_size=2, val_fraction=0.5)
    dm.setup("fit")
    item = dm.datasets["train"][0]
    stored = read_mask(root / "masks" / f"{item['name']}.png")[0].long()
    assert torch.equal(item["mask"], stored)
    assert torch.equal(item["image"], read_image(root / "images" / f"{item['name']}.png"))


def test_sizes_that_differ_need_a_size(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=4)
    with pytest.raises(ConfigError, match=r"images differ in size .* set data.size"):
        FolderDataModule(str(root), class_names=["a", "b", "c"], size=None, batch_size=2).setup("fit")
    # one image per batch is fine
    FolderDataModule(str(root), class_names=["a", "b", "c"], size=None, batch_size=1).setup("fit")


def test_binary_jpeg_masks_threshold_noise(tmp_path: Path):
    root = tmp_path / "polyps"
    for i in range(6):
        mask = block_mask(32, 32, 2, seed=i)
        write_jpeg(root / "images" / f"p{i}.jpg", image_for(mask))
        write_jpeg(root / "masks" / f"p{i}.jpg", (mask * 255).to(torch.uint8), quality=75)
    dm = FolderDataModule(str(root), mask_mode="binary", size=(32, 32), batch_size=3, val_fraction=0.5)
    assert dm.class_names == ("background", "foreground")
    dm.setup("fit")
    for i in range(len(dm.datasets["train"])):
        item = dm.datasets["train"][i]
        truth = block_mask(32, 32, 2, seed=int(item["name"][1:]))
        assert set(item["mask"].unique().tolist()) <= {0, 1}
        assert (item["mask"] == truth).float().mean() > 0.99


def test_binary_encoder_noise_bands_and_01_masks():
    encoder = BinaryMaskEncoder(128)
    noisy = torch.tensor([[0, 3, 8, 247, 251, 255]], dtype=torch.uint8)[None]
    assert encoder.encode(noisy, Path("m.jpg")).tolist() == [[0, 0, 0, 1, 1, 1]]
    # one threshold for every file, whatever a file holds (the dataset decides it: test_data_binary.py)
    zero_one = torch.tensor([[0, 1, 1, 0]], dtype=torch.uint8)[None]
    assert BinaryMaskEncoder(1).encode(zero_one, Path("m.png")).tolist() == [[0, 1, 1, 0]]
    assert encoder.encode(zero_one, Path("m.png")).tolist() == [[0, 0, 0, 0]]
    # the brightest channel decides: dark red on black is foreground
    red = torch.tensor([[[128, 0]], [[0, 0]], [[0, 0]]], dtype=torch.uint8)
    assert encoder.encode(red, Path("m.png")).tolist() == [[1, 0]]


def test_rgb_masks_with_ignore_colour(tmp_path: Path):
    colors = [[0, 0, 0], [255, 0, 0], [0, 128, 255]]
    root = tmp_path / "rgb"
    table = torch.tensor(colors + [[255, 255, 255]], dtype=torch.uint8)
    for i in range(4):
        labels = block_mask(24, 24, 4, seed=i)  # 3 = the void colour
        write_png(root / "images" / f"x{i}.png", image_for(labels))
        write_png(root / "masks" / f"x{i}.png", table[labels].permute(2, 0, 1))
    dm = FolderDataModule(
        str(root),
        mask_mode="rgb",
        colors=colors,
        ignore_colors=[[255, 255, 255]],
        class_names=["bg", "red", "blue"],
        size=(24, 24),
        batch_size=2,
        val_fraction=0.5,
    )
    dm.setup("fit")
    item = dm.datasets["val"][0]
    expected = block_mask(24, 24, 4, seed=int(item["name"][1:]))
    assert torch.equal(item["mask"], torch.where(expected == 3, 255, expected))


def test_palette_16bit_and_grey_rgb_index_masks(tmp_path: Path):
    labels = block_mask(16, 20, 12, seed=3)
    # 8-bit palette: torchvision gives the indices
    write_palette_png(tmp_path / "p8.png", labels)
    assert torch.equal(read_mask(tmp_path / "p8.png")[0].long(), labels)
    # 2-bit palette: torchvision cannot unpack it, PIL does
    small = labels % 4
    write_palette_png(
        tmp_path / "p2.png", small, palette=[(0, 0, 0), (9, 9, 9), (50, 0, 0), (0, 70, 0)], bits=2
    )
    assert (tmp_path / "p2.png").read_bytes()[24] < 8, "PIL should have written a low-bit palette"
    assert torch.equal(read_mask(tmp_path / "p2.png")[0].long(), small)
    # colour=True shows the palette colours
    assert read_mask(tmp_path / "p2.png", color=True)[:, labels % 4 == 2].T.unique(dim=0).tolist() == [
        [50, 0, 0]
    ]
    # 16-bit grey holds labels above 255
    big = (labels + 250).to(torch.int32).to(torch.uint16)
    write_png(tmp_path / "g16.png", big)
    encoder = IndexMaskEncoder(num_classes=300, ignore_index=999)
    assert torch.equal(encoder.read(tmp_path / "g16.png"), labels + 250)
    # a grey mask saved as RGB (equal channels) is accepted as indices
    write_png(tmp_path / "rgbgrey.png", labels.to(torch.uint8).expand(3, -1, -1))
    assert torch.equal(IndexMaskEncoder(12).read(tmp_path / "rgbgrey.png"), labels)


def test_color_encoder_is_vectorised_lookup():
    encoder = ColorMaskEncoder(
        ((0, 0, 0), (10, 20, 30), (255, 255, 255)), ignore_index=9, ignore_colors=((1, 2, 3),)
    )
    raw = torch.tensor([[[0, 10, 255, 1]], [[0, 20, 255, 2]], [[0, 30, 255, 3]]], dtype=torch.uint8)
    assert encoder.encode(raw, Path("m.png")).tolist() == [[0, 1, 2, 9]]


def test_split_lists_with_segnet_style_lines(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=8, sizes=((32, 32),))
    (root / "train.txt").write_text(
        "/SegNet/x/images/s0.png /SegNet/x/masks/s0.png\ns1\ns2.png\n# comment\n\ns3\n"
    )
    (root / "val.txt").write_text("s4\ns5\n")
    dm = FolderDataModule(
        str(root),
        class_names=list("abc"),
        size=(32, 32),
        train_list="train.txt",
        val_list="val.txt",
        test_fraction=0.5,
    )
    splits = dm.splits()
    assert [s.name for s in splits["train"]] == ["s0", "s1", "s2", "s3"]
    assert [s.name for s in splits["val"]] == ["s4", "s5"]
    assert sorted(s.name for s in splits["test"]) == ["s6"]  # half of the unlisted two (s6, s7)


def test_random_split_is_seeded_stratified_and_disjoint(tmp_path: Path):
    samples = [
        SampleFile(Path(f"{c}{i}.png"), name=f"{c}{i}", label=k)
        for k, c in enumerate("ab")
        for i in range(10)
    ]
    samples += [SampleFile(Path(f"c{i}.png"), name=f"c{i}", label=2) for i in range(5)]
    parts = split_samples(samples, 0.2, 0.2, seed=1)
    names = [s.name for part in parts.values() for s in part]
    assert sorted(names) == sorted(s.name for s in samples) and len(set(names)) == len(names)
    assert len(parts["val"]) == 5 and len(parts["test"]) == 5
    for split in ("val", "test"):
        counts = torch.bincount(torch.tensor([s.label for s in parts[split]]), minlength=3).tolist()
        assert counts == [2, 2, 1], (split, counts)
    assert parts == split_samples(list(reversed(samples)), 0.2, 0.2, seed=1)  # file order does not matter
    assert parts != split_samples(samples, 0.2, 0.2, seed=2)
    tiny = split_samples(samples[:3], 0.1, 0.0, seed=0)
    assert len(tiny["val"]) == 1  # a positive fraction always gets a sample


def test_labels_from_parent_and_prefix(tmp_path: Path):
    root = tmp_path / "labelled"
    for k, kind in enumerate(["cat", "dog"]):
        for i in range(5):
            mask = block_mask(16, 16, 2, seed=10 * k + i)
            write_png(root / "images" / kind / f"{kind[:2].upper()}_{i}.png", image_for(mask))
            write_png(root / "masks" / kind / f"{kind[:2].upper()}_{i}.png", mask.to(torch.uint8))
    dm = FolderDataModule(
        str(root), mask_mode="index", class_names=["bg", "fg"], size=(16, 16), labels_from="parent"
    )
    # known before setup: the CLI links label_names into the model right after building the module
    assert dm.label_names == ("cat", "dog")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (len(batch["name"]),)
    for name, label in zip(batch["name"], batch["label"].tolist(), strict=True):
        assert name.split("/")[0] == ("cat", "dog")[label]
    assert {s.label for s in dm.datasets["val"].samples} == {0, 1}  # stratified
    by_prefix = FolderDataModule(
        str(root), class_names=["bg", "fg"], labels_from="prefix", label_names=["DO", "CA"]
    )
    by_prefix.setup("fit")
    assert all(
        by_prefix.label_names[s.label] == s.name.split("/")[1][:2]
        for s in by_prefix.datasets["train"].samples
    )


def test_predict_dir_and_default_predict_split(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=6)
    for i in range(3):
        write_jpeg(root / "unlabelled" / f"new{i}.jpg", torch.full((3, 20 + i, 30), 100, dtype=torch.uint8))
    dm = FolderDataModule(
        str(root), class_names=list("abc"), size=(32, 32), predict_dir="unlabelled", batch_size=3
    )
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert "mask" not in batch and batch["image"].shape == (3, 3, 32, 32)
    assert batch["orig_size"].tolist() == [[20, 30], [21, 30], [22, 30]]
    # no predict_dir, no test split: the val images, without masks
    dm = FolderDataModule(str(root), class_names=list("abc"), size=(32, 32), batch_size=2)
    dm.setup("predict")
    assert [s.name for s in dm.datasets["predict"].samples] == [s.name for s in dm.splits()["val"]]
    assert "mask" not in dm.datasets["predict"][0]


def test_mask_suffix_in_the_same_folder(tmp_path: Path):
    root = tmp_path / "isic"
    for i in range(4):
        mask = block_mask(16, 16, 2, seed=i)
        write_jpeg(root / "all" / f"ISIC_{i}.jpg", image_for(mask))
        write_png(root / "all" / f"ISIC_{i}_segmentation.png", (mask * 255).to(torch.uint8))
    dm = FolderDataModule(
        str(root),
        image_dir="all",
        mask_dir="all",
        mask_suffix="_segmentation",
        mask_mode="binary",
        size=(16, 16),
    )
    dm.setup("fit")
    assert sorted(s.name for part in dm.splits().values() for s in part) == [f"ISIC_{i}" for i in range(4)]


def test_a_config_s_data_swapped_for_a_folder_on_the_command_line(tmp_path: Path):
    """``fit --config configs/default.yaml --data lightning_seg.data.FolderDataModule --data.root ...``: the
    class path switches the data module, the options after it set its arguments (README, "Configure")."""
    from lightning_seg.cli import build_cli

    root = tmp_path / "polyps"
    for i in range(6):
        mask = block_mask(40, 40, 2, seed=i)
        write_jpeg(root / "images" / f"p{i}.jpg", image_for(mask))
        write_png(root / "masks" / f"p{i}.png", (mask * 255).to(torch.uint8))
    args = [
        "--config", str(REPO / "configs" / "default.yaml"),
        "--data", "lightning_seg.data.FolderDataModule",
        "--data.root", str(root),
        "--data.mask_mode", "binary",
        "--data.size", "[32,32]",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    cli = build_cli(args, run=False)
    dm = cli.datamodule
    assert isinstance(dm, FolderDataModule) and dm.size == (32, 32) and dm.mask_mode == "binary"
    assert cli.model.num_classes == 2 and cli.model.ignore_index == 255
    dm.setup("fit")
    batch = dm.prepare_batch(next(iter(dm.train_dataloader())), train=True)
    assert batch["image"].dtype == torch.float32 and batch["mask"].dtype == torch.int64
    # and the line trains as it stands
    from lightning_seg.cli import run_cli

    fit = run_cli(["fit", *args, "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
    assert fit is not None and 0.0 <= float(fit.trainer.callback_metrics["val/mIoU"]) <= 1.0
    assert "val/IoU_fg" in fit.trainer.callback_metrics  # binary task: foreground IoU is reported


def test_mask_folder_inside_the_image_folder(tmp_path: Path):
    root = tmp_path / "nested"
    for i in range(4):
        mask = block_mask(16, 16, 2, seed=i)
        write_png(root / "images" / f"a{i}.png", image_for(mask))
        write_png(root / "images" / "masks" / f"a{i}.png", mask.to(torch.uint8))
    dm = FolderDataModule(str(root), mask_dir="images/masks", class_names=["a", "b"], size=(16, 16))
    assert sorted(s.name for part in dm.splits().values() for s in part) == ["a0", "a1", "a2", "a3"]


def test_low_bit_grey_masks_keep_their_values(tmp_path: Path):
    """libpng scales 1/2/4-bit grey to 0..255; an index mask must read back the stored 0/1 (not 0/255,
    which would silently become ignore_index), a binary one stays foreground either way."""
    import numpy as np
    from PIL import Image

    bits = np.array([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=bool)
    Image.fromarray(bits).save(tmp_path / "one_bit.png")
    Image.fromarray(bits).save(tmp_path / "one_bit.bmp")  # a PIL-decoded format
    Image.fromarray(np.array([[0, 1, 2, 3, 15]], dtype=np.uint8), "L").save(tmp_path / "four_bit.png", bits=4)
    expected = torch.from_numpy(bits.astype(np.int64))
    for name in ("one_bit.png", "one_bit.bmp"):
        assert torch.equal(IndexMaskEncoder(2).read(tmp_path / name), expected)
        assert torch.equal(BinaryMaskEncoder().read(tmp_path / name), expected)
    assert read_mask(tmp_path / "four_bit.png")[0].tolist() == [[0, 1, 2, 3, 15]]
