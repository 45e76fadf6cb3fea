"""MSD, the mobile-phone screen surface-defect dataset (Peking University; FDSNet, ICASSP 2022), in the
layout of its Kaggle copy ("mobile-phone-defect-segmentation-dataset")::

    root/oil/Oil_0001.jpg ...            400 images, 1920×1080
    root/scratch/Scr_0001.jpg ...        400
    root/stain/Sta_0001.jpg ...          400
    root/good/*.jpg                      20 defect-free images (optional; they get all-background masks)
    root/ground_truth_1/Scr_*.png, Sta_*.png     masks of the scratch and stain images
    root/ground_truth_2/Oil_*.png                masks of the oil images

What the layout was taken from (public material, not the files themselves): the Kaggle description
(six folders, ground_truth_1 for scratch and stain, ground_truth_2 for oil), notebooks that pair
``oil/Oil_0001.jpg`` with ``ground_truth_2/Oil_0001.png``, and a converter that reads the masks as colour
images with PASCAL-VOC palette colours (oil (128, 0, 0), stain (0, 128, 0), scratch (128, 128, 0)) on black.
Assumed, hence the tolerant reading: a mask may be RGB, palette or grey; any non-black pixel is defect;
masks are looked up by stem in both ground-truth folders; the defect type comes from the image's folder
(not from the mask colour); there is no official split (the authors used a random 6:2:2 one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import nn

from lightning_seg.data.augment import natural_image_augmentations
from lightning_seg.data.files import SampleFile, find_files
from lightning_seg.data.image_mask import ImageMaskDataModule
from lightning_seg.data.io import IMAGE_EXTENSIONS, MASK_EXTENSIONS, BinaryMaskEncoder, MaskEncoder
from lightning_seg.data.splits import split_samples
from lightning_seg.errors import ConfigError

MSD_LABELS = ("None", "Scratch", "Stain", "Oil")
# image folder → (image-level label index, the ground-truth folder that should hold its masks)
MSD_FOLDERS = {
    "good": (0, None),
    "scratch": (1, "ground_truth_1"),
    "stain": (2, "ground_truth_1"),
    "oil": (3, "ground_truth_2"),
}


class MSDDataModule(ImageMaskDataModule):
    """Phone-screen defects: a defect mask plus the image-level defect type in ``sample["label"]``.

    ``label_names`` = ("None", "Scratch", "Stain", "Oil"): ``sample["label"]`` is 0 for a defect-free
    ("good") image, else the defect type of its folder.

    Args:
        root: the folder holding ``oil/ scratch/ stain/ [good/] ground_truth_1/ ground_truth_2/``.
        mask_mode: "binary": classes (background, defect); "defect_type": (background, scratch, stain,
            oil), each image's defect pixels taking the class of its folder.
        size: (height, width) samples are resized to; the default is about half of 1080×1920, in multiples
            of 32. Scratches are thin: much smaller sizes erase them.
        include_good: keep the defect-free images (all-background masks, label "None").
        val_fraction: random share for validation (seeded by ``split_seed``, stratified by label).
        test_fraction: random share for testing (also used by ``predict``).
        **kwargs: :class:`~lightning_seg.data.image_mask.ImageMaskDataModule` arguments (``on_bad_sample``,
            ``check_files``, ``split_seed``) and :class:`~lightning_seg.data.base.SegDataModule` arguments.
    """

    label_names = MSD_LABELS

    def __init__(
        self,
        root: str,
        mask_mode: Literal["binary", "defect_type"] = "binary",
        size: tuple[int, int] | None = (544, 960),
        include_good: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(size=size, **kwargs)
        if mask_mode not in ("binary", "defect_type"):
            raise ConfigError(f"data.mask_mode must be 'binary' or 'defect_type', got {mask_mode!r}")
        self.root, self.mask_mode, self.include_good = Path(root), mask_mode, include_good
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        if mask_mode == "binary":
            self.class_names = ("background", "defect")
            # every defect type shows as the one "defect" class; "None" names no class
            self.label_classes = (None, *(["defect"] * (len(MSD_LABELS) - 1)))
        else:
            self.class_names = ("background", *(name.lower() for name in MSD_LABELS[1:]))
            self.label_classes = (None, *self.class_names[1:])

    def no_val_split_requested(self) -> bool:
        """``val_fraction: 0``: trained without validation, on purpose."""
        return self.val_fraction == 0

    def mask_encoder(self) -> MaskEncoder:
        # masks are lossless and drawn in dark palette colours: any non-black pixel is defect
        return BinaryMaskEncoder(threshold=1)

    def _all_samples(self) -> list[SampleFile]:
        masks: dict[str, dict[str, Path]] = {}
        for folder in ("ground_truth_1", "ground_truth_2"):
            directory = self.root / folder
            masks[folder] = find_files(directory, MASK_EXTENSIONS) if directory.is_dir() else {}
        samples = []
        for folder, (label, mask_folder) in MSD_FOLDERS.items():
            directory = self.root / folder
            if folder == "good":
                if not self.include_good or not directory.is_dir():
                    continue
            elif not directory.is_dir() or not (self.root / mask_folder).is_dir():
                missing = directory if not directory.is_dir() else self.root / mask_folder
                raise ConfigError(
                    f"{missing}: folder not found; MSD needs oil/ scratch/ stain/ ground_truth_1/ ground_truth_2/"
                )
            for key, image in sorted(find_files(directory, IMAGE_EXTENSIONS).items()):
                name = f"{folder}/{key}"
                if mask_folder is None:
                    samples.append(SampleFile(image, None, name, label))
                    continue
                stem = key.rsplit("/", 1)[-1]
                # the documented folder first, then the other one, in case a copy files them differently
                mask = masks[mask_folder].get(stem) or next(
                    (m[stem] for m in masks.values() if stem in m), None
                )
                error = None if mask else f"{image}: mask missing (looked for {stem}.png in ground_truth_1/2)"
                fill = label if self.mask_mode == "defect_type" else None
                samples.append(SampleFile(image, mask, name, label, fill, error))
        if not samples:
            raise ConfigError(f"{self.root}: no MSD images found")
        return samples

    def all_splits(self) -> dict[str, list[SampleFile]]:
        return split_samples(self._all_samples(), self.val_fraction, self.test_fraction, self.split_seed)

    def empty_split_hint(self, split: str) -> str:
        return f"set data.{split}_fraction above 0" if split in ("val", "test") else "check data.root"

    def default_train_augmentations(self) -> list[nn.Module]:
        # a screen has no up or left: both flips are free; keep most of the frame so small defects survive
        return natural_image_augmentations(self.size, scale=(0.6, 1.0), degrees=0.0, vertical_flip=True)
