"""COCO instance annotations rendered once into semantic masks.

::

    root/train2017/*.jpg   root/val2017/*.jpg
    root/annotations/instances_train2017.json   instances_val2017.json

Rendering happens once per (annotation file, categories, overlap rule), in ``prepare_data`` (or at setup
when it was not called), in the module's worker processes; the masks are 8-bit PNGs in a cache folder with
a manifest, so later runs (and every epoch) read them like any mask file and do not even parse the JSON.

Rules: instances of the chosen categories are painted with their class (1..K, 0 is background);
instances of other categories are background; crowd regions of chosen categories are ``ignore_index``
(non-crowd instances on top of them keep their class); where instances overlap, ``overlap`` decides:
"smaller_on_top" paints larger instances first (ties by annotation id), so the smaller, usually nearer,
object wins, and "ignore" marks pixels claimed by two different classes as ``ignore_index`` (torchvision's
reference recipe). Test annotations are not public: ``test`` and ``predict`` use the val set.

pycocotools (``pip install lightning_seg[coco]``) is needed only to render.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset
from torchvision.io import encode_png

from lightning_seg.data.files import SampleFile
from lightning_seg.data.image_mask import ImageMaskDataModule
from lightning_seg.data.io import IndexMaskEncoder, MaskEncoder
from lightning_seg.data.stats import default_cache_dir
from lightning_seg.data.workers import map_in_workers
from lightning_seg.errors import ConfigError
from lightning_seg.utils.atomic import atomic_write

COCO_CATEGORIES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
# the 20 PASCAL VOC classes under their COCO names, in VOC's order
VOC_CATEGORIES = (
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table",
    "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch", "train", "tv",
)  # fmt: skip
STORED_IGNORE = 255  # the value of ignored pixels in the rendered PNGs
_RENDER_VERSION = 1  # bump when rendering changes, so old caches are not reused


def _mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise ConfigError(
            "COCOSemanticDataModule needs pycocotools to render masks: pip install lightning_seg[coco]"
        ) from None
    return mask_utils


def instance_mask(segmentation, height: int, width: int) -> torch.Tensor | None:
    """One annotation's ``segmentation`` (polygons, RLE or compressed RLE) → bool H×W, None if empty."""
    mask_utils = _mask_utils()
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]  # fewer than 3 points cannot be rasterised
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return torch.from_numpy(mask_utils.decode(rle)).bool()


def render_semantic_mask(
    height: int, width: int, instances: list[dict], overlap: Literal["smaller_on_top", "ignore"]
) -> torch.Tensor:
    """Paint instances into a class map.

    Args:
        instances: dicts with ``segmentation``, ``label`` (class index >= 1), ``iscrowd``, ``area``, ``id``.
        overlap: see the module docstring.

    Returns:
        uint8 H×W: 0 background, labels, :data:`STORED_IGNORE` for crowd regions (and conflicts).
    """
    out = torch.zeros(height, width, dtype=torch.uint8)
    for inst in instances:
        if inst["iscrowd"]:
            mask = instance_mask(inst["segmentation"], height, width)
            if mask is not None:
                out[mask] = STORED_IGNORE
    things = sorted((i for i in instances if not i["iscrowd"]), key=lambda i: (-i["area"], i["id"]))
    conflict = torch.zeros(height, width, dtype=torch.bool) if overlap == "ignore" else None
    for inst in things:
        mask = instance_mask(inst["segmentation"], height, width)
        if mask is None:
            continue
        if conflict is not None:
            # pixels a non-crowd instance painted (labels are 1..80, never STORED_IGNORE)
            painted = (out != 0) & (out != STORED_IGNORE)
            conflict |= mask & painted & (out != inst["label"])
        out[mask] = inst["label"]
    if conflict is not None:
        out[conflict] = STORED_IGNORE
    return out


class _RenderJobs(Dataset):
    """One item per image to render, so a DataLoader spreads the work over worker processes."""

    def __init__(self, jobs: list[tuple[str, int, int, list[dict]]], overlap: str):
        self.jobs, self.overlap = jobs, overlap

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> int:
        path, height, width, instances = self.jobs[index]
        target = Path(path)
        if target.is_file():
            return 0  # rendered by an interrupted earlier run
        data = encode_png(render_semantic_mask(height, width, instances, self.overlap)[None])
        atomic_write(target, data.numpy().tobytes())  # a killed run never leaves half a PNG
        return 1


class COCOSemanticDataModule(ImageMaskDataModule):
    """COCO as semantic segmentation over a subset of its 80 categories.

    Args:
        root: the COCO folder; relative paths below are taken from here.
        train_ann: instances JSON of the training images.
        val_ann: instances JSON of the validation images (also ``test`` and ``predict``).
        train_images: folder of the training images.
        val_images: folder of the validation images.
        categories: COCO category names to segment, in class order after "background";
            "voc": the 20 PASCAL VOC classes; "all": all 80.
        overlap: how overlapping instances are resolved: "smaller_on_top" or "ignore".
        drop_empty_train: leave out training images with no instance of the chosen categories.
        cache_dir: where rendered masks go; None: ``$LIGHTNING_SEG_CACHE/coco`` (``~/.cache/lightning_seg``).
        size: (height, width) samples are resized to.
        check_files: setup's file check (see ImageMaskDataModule); "none" by default because the masks are
            rendered from the images' own sizes and a header pass over 120k images takes a while.
        ignore_index: label of crowd regions (and overlap conflicts).
        **kwargs: :class:`~lightning_seg.data.image_mask.ImageMaskDataModule` arguments (``on_bad_sample``)
            and :class:`~lightning_seg.data.base.SegDataModule` arguments.
    """

    def __init__(
        self,
        root: str,
        train_ann: str = "annotations/instances_train2017.json",
        val_ann: str = "annotations/instances_val2017.json",
        train_images: str = "train2017",
        val_images: str = "val2017",
        categories: list[str] | Literal["voc", "all"] = "voc",
        overlap: Literal["smaller_on_top", "ignore"] = "smaller_on_top",
        drop_empty_train: bool = True,
        cache_dir: str | None = None,
        size: tuple[int, int] | None = (320, 320),
        check_files: Literal["header", "full", "none"] = "none",
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(size=size, check_files=check_files, **kwargs)
        if categories == "voc":
            categories = list(VOC_CATEGORIES)
        elif categories == "all":
            categories = list(COCO_CATEGORIES)
        unknown = [c for c in categories if c not in COCO_CATEGORIES]
        if unknown or not categories or len(set(categories)) != len(categories):
            raise ConfigError(
                f"data.categories must be distinct COCO category names (or 'voc', 'all'); unknown: {unknown}"
            )
        if overlap not in ("smaller_on_top", "ignore"):
            raise ConfigError(f"data.overlap must be 'smaller_on_top' or 'ignore', got {overlap!r}")
        self.root = Path(root)
        self.sources = {
            "train": (self.root / train_ann, self.root / train_images),
            "val": (self.root / val_ann, self.root / val_images),
        }
        self.categories = tuple(categories)
        self.class_names = ("background", *self.categories)
        self.overlap, self.drop_empty_train = overlap, drop_empty_train
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "coco"
        self.ignore_index = ignore_index
        self._samples: dict[str, list[SampleFile]] = {}

    def mask_encoder(self) -> MaskEncoder:
        return IndexMaskEncoder.with_stored_ignore(len(self.class_names), self.ignore_index, STORED_IGNORE)

    def render_dir(self, split: str) -> Path:
        """The cache folder of ``split``'s rendered masks (depends on the annotations and the rules)."""
        ann_file, _ = self.sources[split]
        if not ann_file.is_file():
            raise ConfigError(f"{ann_file}: COCO annotation file not found")
        stat = ann_file.stat()
        key = f"{_RENDER_VERSION}|{ann_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.categories}|{self.overlap}"
        return self.cache_dir / f"{split}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"

    def render(self, split: str) -> Path:
        """Render ``split``'s masks unless the cache has them; returns the manifest path."""
        out = self.render_dir(split)
        manifest = out / "manifest.json"
        if manifest.is_file():
            return manifest
        ann_file, _ = self.sources[split]
        try:
            data = json.loads(ann_file.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{ann_file}: cannot read COCO annotations ({err})") from None
        label_of = {
            c["id"]: self.class_names.index(c["name"])
            for c in data["categories"]
            if c["name"] in self.categories
        }
        missing = sorted(set(self.categories) - {c["name"] for c in data["categories"]})
        if missing:
            raise ConfigError(f"{ann_file}: categories {missing} are not in this annotation file")
        instances: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            if ann["category_id"] in label_of:
                instances.setdefault(ann["image_id"], []).append(
                    {
                        "segmentation": ann["segmentation"],
                        "label": label_of[ann["category_id"]],
                        "iscrowd": int(ann.get("iscrowd", 0)),
                        "area": float(ann.get("area", 0.0)),
                        "id": int(ann["id"]),
                    }
                )
        (out / "masks").mkdir(parents=True, exist_ok=True)
        entries, jobs = [], []
        for image in sorted(data["images"], key=lambda i: i["id"]):
            found = instances.get(image["id"], [])
            mask = None
            if found:
                mask = f"masks/{image['id']:012d}.png"
                jobs.append((str(out / mask), int(image["height"]), int(image["width"]), found))
            has_things = any(not i["iscrowd"] for i in found)
            entries.append({"file": image["file_name"], "mask": mask, "has_things": has_things})
        if jobs:
            _mask_utils()  # fail with the install hint before starting workers
            for _ in map_in_workers(_RenderJobs(jobs, self.overlap), self.num_workers):
                pass
        atomic_write(manifest, json.dumps({"annotations": str(ann_file), "images": entries}))
        return manifest

    def prepare_data(self) -> None:
        for split in self.sources:
            self.render(split)

    def sample_ids(self, split: str) -> list[str] | None:
        # COCO's own train and val files are disjoint, and listing them renders every mask: not recorded
        return None

    def find_samples(self, split: str) -> list[SampleFile]:
        source = "train" if split == "train" else "val"
        if source not in self._samples:
            manifest = self.render(source)
            _, image_dir = self.sources[source]
            samples = []
            for entry in json.loads(manifest.read_text())["images"]:
                if source == "train" and self.drop_empty_train and not entry["has_things"]:
                    continue
                mask = manifest.parent / entry["mask"] if entry["mask"] else None
                samples.append(SampleFile(image_dir / entry["file"], mask, Path(entry["file"]).stem))
            self._samples[source] = samples
        return self._samples[source]
