"""Tiny fake dataset trees in the real layouts, written by the tests themselves (nothing downloaded).

Images encode their masks: every channel of an image pixel is ``VALUE_STEP * class`` (+ a per-image
offset in the other channels), so a test can check that image and mask stayed aligned after resizing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import encode_jpeg, encode_png

VALUE_STEP = 40
CAMVID_ENV = "LIGHTNING_SEG_CAMVID"


def real_camvid_root() -> Path:
    """The shared CamVid copy: ``$LIGHTNING_SEG_CAMVID`` or ``../shared/data/camvid`` next to the repo."""
    env = os.environ.get(CAMVID_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def write_png(path: Path, tensor: torch.Tensor) -> Path:
    """uint8/uint16 C×H×W or H×W → PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = tensor if tensor.ndim == 3 else tensor[None]
    if tensor.dtype == torch.uint16:  # encode_png does not write 16-bit: go through PIL
        Image.fromarray(tensor[0].numpy()).save(path)
        return path
    path.write_bytes(encode_png(tensor.contiguous()).numpy().tobytes())
    return path


def write_jpeg(path: Path, tensor: torch.Tensor, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = tensor if tensor.ndim == 3 else tensor[None]
    path.write_bytes(encode_jpeg(tensor.contiguous(), quality=quality).numpy().tobytes())
    return path


def write_exif_jpeg(path: Path, image: torch.Tensor, orientation: int) -> Path:
    """uint8 3×H×W → JPEG with an EXIF orientation tag (as phone cameras write them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, exif=exif, quality=95)
    return path


def write_palette_png(
    path: Path, indices: torch.Tensor, palette: list[tuple[int, int, int]] | None = None, bits: int = 8
) -> Path:
    """H×W indices → palette PNG with ``bits`` per pixel (1, 2, 4 or 8: real files have all of them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices.numpy().astype(np.uint8), mode="P")
    palette = palette or voc_palette()
    image.putpalette([v for rgb in palette[: 2**bits] for v in rgb])
    image.save(path, bits=bits)
    return path


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map (bit-interleaved class index)."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


def block_mask(height: int, width: int, num_classes: int, seed: int, block: int = 8) -> torch.Tensor:
    """int64 H×W: random classes in ``block``-pixel squares (big enough to survive resizing)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(
        0, num_classes, ((height + block - 1) // block, (width + block - 1) // block), generator=g
    )
    return coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)[:height, :width]


def image_for(mask: torch.Tensor) -> torch.Tensor:
    """uint8 3×H×W whose channels are ``VALUE_STEP * mask`` (ignore pixels → 255)."""
    value = torch.where(mask >= 250, 255, (mask * VALUE_STEP).clamp(max=250))
    return value.to(torch.uint8).expand(3, -1, -1).contiguous()


# ------------------------------------------------------------------------------------------- layouts
def write_index_pair(root: Path, name: str, mask: torch.Tensor) -> None:
    """``root/images/<name>.png`` (:func:`image_for` the mask) and ``root/masks/<name>.png`` (the index mask)."""
    write_png(root / "images" / f"{name}.png", image_for(mask))
    write_png(root / "masks" / f"{name}.png", mask.to(torch.uint8))


def folder_tree(
    root: Path,
    count: int = 8,
    num_classes: int = 3,
    sizes: tuple[tuple[int, int], ...] = ((32, 48), (40, 40)),
    image_ext: str = ".png",
    ignore_value: int | None = 255,
) -> Path:
    """root/images/s{i}.png + root/masks/s{i}.png (index masks, some with an ignore corner)."""
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        mask = block_mask(h, w, num_classes, seed=i)
        if ignore_value is not None and i % 2 == 0:
            mask[:4, :4] = ignore_value
        image = image_for(mask)
        (write_jpeg if image_ext == ".jpg" else write_png)(root / "images" / f"s{i}{image_ext}", image)
        write_png(root / "masks" / f"s{i}.png", mask.to(torch.uint8))
    return root


def camvid_tree(root: Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (36, 48)) -> Path:
    """SegNet CamVid layout with 8-bit grey index masks (0..10, 11 = unlabelled)."""
    counts = counts or {"train": 6, "val": 2, "test": 3}
    for split, n in counts.items():
        for i in range(n):
            mask = block_mask(*size, num_classes=12, seed=100 * len(split) + i, block=6)
            write_png(root / split / f"0001TP_{i:06d}.png", image_for(mask))
            write_png(root / f"{split}annot" / f"0001TP_{i:06d}.png", mask.to(torch.uint8))
    return root


PET_STEMS = [("Abyssinian", 1, 1), ("Bengal", 6, 1), ("beagle", 5, 2), ("pug", 26, 2)]


def pets_tree(root: Path, per_breed: int = 3, size: tuple[int, int] = (40, 36)) -> Path:
    """torchvision's Oxford-IIIT Pet layout; trimaps 1 pet, 2 background, 3 border."""
    base = root / "oxford-iiit-pet"
    lines = {"trainval": [], "test": []}
    for b, (breed, class_id, species) in enumerate(PET_STEMS):
        for i in range(per_breed + 1):
            stem = f"{breed}_{i + 1}"
            trimap = torch.full(size, 2, dtype=torch.uint8)
            trimap[8:30, 8:28] = 3
            trimap[10:28, 10:26] = 1
            image = torch.where(trimap == 1, 200, 20).to(torch.uint8).expand(3, -1, -1)
            write_jpeg(base / "images" / f"{stem}.jpg", image)
            write_png(base / "annotations" / "trimaps" / f"{stem}.png", trimap)
            lines["test" if i == per_breed else "trainval"].append(f"{stem} {class_id} {species} {b + 1}")
    for name, rows in lines.items():
        (base / "annotations" / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return root


def voc_tree(root: Path, counts: dict[str, int] | None = None) -> Path:
    """torchvision's VOCSegmentation layout (2012) with palette PNG masks and a 255 border."""
    base = root / "VOCdevkit" / "VOC2012"
    counts = counts or {"train": 4, "val": 2}
    index = 0
    for split, n in counts.items():
        stems = []
        for _ in range(n):
            stem = f"2007_{index:06d}"
            mask = block_mask(30 + index % 3 * 4, 40, num_classes=21, seed=100 + index)
            mask[0, :] = 255
            write_jpeg(base / "JPEGImages" / f"{stem}.jpg", image_for(mask))
            write_palette_png(base / "SegmentationClass" / f"{stem}.png", mask)
            stems.append(stem)
            index += 1
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


MSD_COLORS = {"oil": (128, 0, 0), "stain": (0, 128, 0), "scratch": (128, 128, 0)}


def msd_tree(root: Path, per_type: int = 5, good: int = 2, size: tuple[int, int] = (27, 48)) -> Path:
    """Kaggle MSD layout: oil/ scratch/ stain/ good/ + ground_truth_1 (Scr, Sta) / ground_truth_2 (Oil).

    Masks are RGB in VOC palette colours, except every third, written as a palette PNG (both occur)."""
    prefixes = {"oil": "Oil", "scratch": "Scr", "stain": "Sta"}
    for folder, prefix in prefixes.items():
        gt = "ground_truth_2" if folder == "oil" else "ground_truth_1"
        for i in range(per_type):
            stem = f"{prefix}_{i + 1:04d}"
            defect = torch.zeros(size, dtype=torch.bool)
            defect[5 + i : 12 + i, 10:30] = True
            write_jpeg(
                root / folder / f"{stem}.jpg", torch.where(defect, 220, 30).to(torch.uint8).expand(3, -1, -1)
            )
            if i % 3 == 2:
                index = [1, 2, 3][list(prefixes).index(folder)]
                write_palette_png(root / gt / f"{stem}.png", defect.long() * index)
            else:
                rgb = torch.tensor(MSD_COLORS[folder], dtype=torch.uint8).view(3, 1, 1)
                write_png(root / gt / f"{stem}.png", torch.where(defect, rgb, torch.zeros_like(rgb)))
    for i in range(good):
        write_jpeg(root / "good" / f"{i:04d}.jpg", torch.full((3, *size), 30, dtype=torch.uint8))
    return root


def coco_tree(root: Path) -> Path:
    """COCO layout with a tiny instances JSON: polygons, an uncompressed-RLE crowd region, overlapping
    instances of two classes, an unselected category and an image without annotations."""
    from lightning_seg.data.coco import COCO_CATEGORIES

    h, w = 20, 30
    # all 80 categories, like the real files (ids here are 1..80; the real ones have gaps)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(COCO_CATEGORIES)]
    ids = {c["name"]: c["id"] for c in categories}

    def box(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    def crowd_rle(y0, y1, x0, x1):
        grid = np.zeros((h, w), dtype=np.uint8)
        grid[y0:y1, x0:x1] = 1
        flat = grid.flatten(order="F")  # COCO RLE runs go down columns
        counts, current, run = [], 0, 0
        for v in flat:
            if v == current:
                run += 1
            else:
                counts.append(run)
                current, run = v, 1
        counts.append(run)
        return {"counts": counts, "size": [h, w]}

    for split, n_images in (("train", 3), ("val", 2)):
        images, annotations = [], []
        for i in range(n_images):
            image_id = 100 + i
            file_name = f"{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
            write_jpeg(
                root / f"{split}2017" / file_name, torch.full((3, h, w), 50 + 40 * i, dtype=torch.uint8)
            )
        # image 100: a big person with a small car on top, and a dog (not selected by the tests)
        annotations += [
            {
                "id": 1,
                "image_id": 100,
                "category_id": ids["person"],
                "segmentation": box(2, 2, 20, 16),
                "area": 252.0,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 100,
                "category_id": ids["car"],
                "segmentation": box(10, 5, 16, 10),
                "area": 30.0,
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 100,
                "category_id": ids["dog"],
                "segmentation": box(22, 2, 28, 8),
                "area": 36.0,
                "iscrowd": 0,
            },
        ]
        # image 101: a crowd of people with one person in front of it
        annotations += [
            {
                "id": 4,
                "image_id": 101,
                "category_id": ids["person"],
                "segmentation": crowd_rle(0, 10, 0, 30),
                "area": 300.0,
                "iscrowd": 1,
            },
            {
                "id": 5,
                "image_id": 101,
                "category_id": ids["person"],
                "segmentation": box(4, 4, 8, 14),
                "area": 40.0,
                "iscrowd": 0,
            },
        ]
        # image 102 (train only): no annotations
        data = {"images": images, "annotations": [a for a in annotations if a["image_id"] < 100 + n_images],
                "categories": categories}  # fmt: skip
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return root


def write_tiff16_rgb(path: Path, rgb: np.ndarray) -> Path:
    """H×W×3 uint16 → an uncompressed little-endian 16-bit RGB TIFF, written by hand: PIL cannot write one
    (and reads one as 8-bit RGB, which is what the tests check is refused)."""
    import struct

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w, _ = rgb.shape
    data = rgb.astype("<u2").tobytes()
    # tag, type (3 short, 4 long), count, value (offsets filled in below)
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, 0), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, 0),
               (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]  # fmt: skip
    ifd_offset = 8
    bits_offset = ifd_offset + 2 + 12 * len(entries) + 4
    data_offset = bits_offset + 6
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_offset, 273: data_offset}.get(tag, value)
        if kind == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    path.write_bytes(out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + data)
    return path


def folder_args(data: Path) -> list[str]:
    """CLI arguments for a FolderDataModule over ``folder_tree`` data (classes a, b, c), batched at 24×24."""
    return [
        "--data", "lightning_seg.data.FolderDataModule",
        "--data.root", str(data),
        "--data.class_names", "[a,b,c]",
        "--data.size", "[24,24]",
        "--data.batch_size", "2",
        "--data.val_fraction", "0.25",
        "--data.test_fraction", "0.34",
        "--data.max_ignored_fraction", "1.0",
    ]  # fmt: skip


def miou_of_index_pngs(
    predictions: Path, masks: Path, num_classes: int = 3, names: list[str] | None = None
) -> tuple[float, int]:
    """(mIoU, files) of predict's ``<name>_index.png`` files (those of ``names`` only, when given) against the
    masks of the same name as stored: one confusion matrix over every file's labelled pixels (255 ignored),
    IoU = TP / (TP + FP + FN) of each class that occurs in either, averaged. NumPy only, not the package's
    metrics."""
    from torchvision.io import decode_png, read_file

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    paths = sorted(predictions.glob("*_index.png"))
    if names is not None:
        paths = [path for path in paths if path.name.removesuffix("_index.png") in set(names)]
    for path in paths:
        prediction = decode_png(read_file(str(path)))[0].numpy().astype(np.int64)
        truth = (
            decode_png(read_file(str(masks / path.name.replace("_index", ""))))[0].numpy().astype(np.int64)
        )
        assert prediction.shape == truth.shape, path
        keep = truth != 255
        assert prediction.max() < num_classes, path
        np.add.at(confusion, (truth[keep], prediction[keep]), 1)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0])), len(paths)


VOC_KAGGLE_TRAIN_IDS = ("17", "3", "42", "8", "105", "23", "61", "9")
VOC_KAGGLE_TEST_IDS = ("12", "2", "77")  # not sorted: predict must keep the CSV's order


def voc_kaggle_tree(
    root: Path,
    train_ids: tuple[str, ...] = VOC_KAGGLE_TRAIN_IDS,
    test_ids: tuple[str, ...] = VOC_KAGGLE_TEST_IDS,
    sizes: tuple[tuple[int, int], ...] = ((30, 40), (36, 28), (40, 44)),
) -> Path:
    """The VOC 2009 Kaggle competition layout: ``train/train_set.csv`` (Id + 20 0/1 label columns, each
    row the foreground classes its mask holds), ``train/img/train_<Id>.npy`` (uint8 H×W×3),
    ``train/seg/train_<Id>.npy`` (uint8 H×W, 0..20, a void 255 border), ``test/test_set.csv`` (labels -1)
    and ``test/img/test_<Id>.npy``. Images of different sizes, each covering several classes."""
    labels = [
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
        "tvmonitor",
    ]  # fmt: skip
    header = ",".join(["Id", *labels])
    for split, ids in (("train", train_ids), ("test", test_ids)):
        (root / split / "img").mkdir(parents=True, exist_ok=True)
        rows = [header]
        for i, image_id in enumerate(ids):
            h, w = sizes[i % len(sizes)]
            mask = block_mask(h, w, num_classes=21, seed=300 + i + (100 if split == "test" else 0), block=6)
            mask[0, :] = 255  # the void border VOC draws around objects
            mask[:, -1] = 255
            image = image_for(mask).permute(1, 2, 0).numpy()  # H×W×3
            np.save(root / split / "img" / f"{split}_{image_id}.npy", image)
            if split == "train":
                (root / "train" / "seg").mkdir(parents=True, exist_ok=True)
                np.save(root / "train" / "seg" / f"train_{image_id}.npy", mask.numpy().astype(np.uint8))
                present = {int(v) for v in mask.unique() if 0 < int(v) < 21}
                values = ["1" if c in present else "0" for c in range(1, 21)]
            else:
                values = ["-1"] * 20
            rows.append(",".join([image_id, *values]))
        (root / split / f"{split}_set.csv").write_text("\n".join(rows) + "\n")
    return root
