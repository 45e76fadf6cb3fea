"""PASCAL VOC segmentation in torchvision's ``VOCSegmentation`` layout: 20 object classes + background.

::

    root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    root/VOCdevkit/VOC2012/SegmentationClass/<id>.png          palette PNG: indices 0..20, 255 = border
    root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

The test annotations are not public, so ``test`` (and ``predict``) use the val list. The SBD-augmented
training set ("SegmentationClassAug", ``train_aug.txt``) works by pointing ``mask_dir`` and
``train_split`` at it.
"""

from __future__ import annotations

from pathlib import Path

from lightning_seg.data.files import SampleFile, listed_sample, require_list_file
from lightning_seg.data.image_mask import ImageMaskDataModule
from lightning_seg.data.io import IndexMaskEncoder, MaskEncoder
from lightning_seg.errors import ConfigError

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_BORDER = 255  # the stored value of the unlabelled band around objects


class VOCDataModule(ImageMaskDataModule):
    """PASCAL VOC semantic segmentation (21 classes; the 255 border becomes ``ignore_index``).

    Args:
        root: torchvision's ``root`` (holding ``VOCdevkit/``), or the ``VOC<year>`` folder itself.
        year: "2007" … "2012" (torchvision's years).
        size: (height, width) samples are resized to (the photos are at most 500×500, of varied shapes).
        download: fetch the year's archive with torchvision into ``root`` (``prepare_data``, once per node).
        mask_dir: folder of the masks inside ``VOC<year>``.
        train_split: name of the training list in ``ImageSets/Segmentation``.
        val_split: name of the validation list (also used for ``test`` and ``predict``).
        ignore_index: label of the border pixels.
        **kwargs: :class:`~lightning_seg.data.image_mask.ImageMaskDataModule` arguments (``on_bad_sample``,
            ``check_files``) and :class:`~lightning_seg.data.base.SegDataModule` arguments.
    """

    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str,
        year: str = "2012",
        size: tuple[int, int] | None = (320, 320),
        download: bool = False,
        mask_dir: str = "SegmentationClass",
        train_split: str = "train",
        val_split: str = "val",
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(size=size, **kwargs)
        from torchvision.datasets.voc import DATASET_YEAR_DICT

        if year not in DATASET_YEAR_DICT:
            raise ConfigError(f"data.year must be one of {sorted(DATASET_YEAR_DICT)}, got {year!r}")
        self.root, self.year, self.download = Path(root), year, download
        self.mask_dir, self.ignore_index = mask_dir, ignore_index
        self.split_names = {"train": train_split, "val": val_split, "test": val_split, "predict": val_split}
        self._base_dir = DATASET_YEAR_DICT[year]["base_dir"]

    @property
    def voc_root(self) -> Path:
        if (self.root / "JPEGImages").is_dir():
            return self.root
        return self.root / self._base_dir

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import VOCSegmentation

            VOCSegmentation(str(self.root), year=self.year, image_set="train", download=True)

    def mask_encoder(self) -> MaskEncoder:
        return IndexMaskEncoder.with_stored_ignore(len(self.class_names), self.ignore_index, VOC_BORDER)

    def find_samples(self, split: str) -> list[SampleFile]:
        base = self.voc_root
        list_file = base / "ImageSets" / "Segmentation" / f"{self.split_names[split]}.txt"
        require_list_file(list_file, "VOCSegmentation", self.download)
        return [
            listed_sample(base / "JPEGImages" / f"{stem}.jpg", base / self.mask_dir / f"{stem}.png", stem)
            for stem in list_file.read_text().split()
        ]
