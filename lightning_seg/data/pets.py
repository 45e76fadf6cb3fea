"""Oxford-IIIT Pet in torchvision's layout: cat and dog photos with trimap masks.

::

    root/oxford-iiit-pet/images/<Breed_name>_<n>.jpg
    root/oxford-iiit-pet/annotations/trimaps/<Breed_name>_<n>.png   1 pet, 2 background, 3 border
    root/oxford-iiit-pet/annotations/trainval.txt, test.txt         "<image> <class id> <species> <breed id>"

``download=True`` fetches it with ``torchvision.datasets.OxfordIIITPet`` (about 800 MB).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from torch import nn

from lightning_seg.data.augment import natural_image_augmentations
from lightning_seg.data.files import SampleFile, listed_sample, require_list_file
from lightning_seg.data.image_mask import ImageMaskDataModule
from lightning_seg.data.io import IndexMaskEncoder, MaskEncoder
from lightning_seg.data.splits import split_samples
from lightning_seg.errors import ConfigError

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3


def _without_labels(samples: list[SampleFile]) -> list[SampleFile]:
    """The breed label only stratifies the split: drop it."""
    return [dataclasses.replace(s, label=None) for s in samples]


class OxfordPetDataModule(ImageMaskDataModule):
    """Oxford-IIIT Pet foreground segmentation.

    Args:
        root: the folder holding ``oxford-iiit-pet/`` (torchvision's ``root``), or that folder itself.
        mode: "binary": classes (background, pet); "trimap": (background, pet, border), the border being
            the uncertain band around the outline.
        ignore_border: binary mode only: border pixels become ``ignore_index`` (True) or pet (False).
        size: (height, width) samples are resized to (the photos vary in size).
        download: fetch the dataset with torchvision into ``root`` (``prepare_data``, once per node).
        val_fraction: share of ``trainval`` held out for validation, stratified by breed and seeded by
            ``split_seed``; the official ``test`` list is the test split (and ``predict``).
        **kwargs: :class:`~lightning_seg.data.image_mask.ImageMaskDataModule` arguments (``on_bad_sample``,
            ``check_files``, ``split_seed``) and :class:`~lightning_seg.data.base.SegDataModule` arguments.
    """

    def __init__(
        self,
        root: str,
        mode: Literal["binary", "trimap"] = "binary",
        ignore_border: bool = True,
        size: tuple[int, int] | None = (256, 256),
        download: bool = False,
        val_fraction: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(size=size, **kwargs)
        if mode not in ("binary", "trimap"):
            raise ConfigError(f"data.mode must be 'binary' or 'trimap', got {mode!r}")
        self.root, self.mode, self.ignore_border = Path(root), mode, ignore_border
        self.download, self.val_fraction = download, val_fraction
        self.class_names = ("background", "pet") if mode == "binary" else ("background", "pet", "border")

    def no_val_split_requested(self) -> bool:
        """``val_fraction: 0``: trained without validation, on purpose."""
        return self.val_fraction == 0

    @property
    def base_folder(self) -> Path:
        nested = self.root / "oxford-iiit-pet"
        return nested if nested.is_dir() or not (self.root / "annotations").is_dir() else self.root

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import OxfordIIITPet

            OxfordIIITPet(str(self.root), split="trainval", target_types="segmentation", download=True)

    def mask_encoder(self) -> MaskEncoder:
        if self.mode == "trimap":
            border = 2
        else:
            border = self.ignore_index if self.ignore_border else 1
        value_map = {TRIMAP_PET: 1, TRIMAP_BACKGROUND: 0, TRIMAP_BORDER: border}
        return IndexMaskEncoder(len(self.class_names), self.ignore_index, value_map)

    def _read_list(self, name: str) -> list[SampleFile]:
        base = self.base_folder
        list_file = base / "annotations" / f"{name}.txt"
        require_list_file(list_file, "Oxford-IIIT Pet", self.download)
        samples = []
        for line in list_file.read_text().splitlines():
            fields = line.split()
            if len(fields) < 2 or line.startswith("#"):
                continue
            stem, class_id = fields[0], int(fields[1])
            image = base / "images" / f"{stem}.jpg"
            mask = base / "annotations" / "trimaps" / f"{stem}.png"
            # the breed (class id) only stratifies the split; the batch carries no image-level label
            samples.append(listed_sample(image, mask, stem, class_id - 1))
        return samples

    def all_splits(self) -> dict[str, list[SampleFile]]:
        """train and val: ``trainval`` split at random, stratified by breed (the test list is read when asked)."""
        parts = split_samples(self._read_list("trainval"), self.val_fraction, 0.0, self.split_seed)
        return {split: _without_labels(parts[split]) for split in ("train", "val")}

    def find_samples(self, split: str) -> list[SampleFile]:
        if split in ("test", "predict"):
            return _without_labels(self._read_list("test"))
        return super().find_samples(split)

    def default_train_augmentations(self) -> list[nn.Module]:
        return natural_image_augmentations(self.size, scale=(0.4, 1.0), degrees=15.0)
