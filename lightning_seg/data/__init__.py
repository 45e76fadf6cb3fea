"""Data modules: one :class:`SegDataModule` subclass per dataset, all sharing one data path."""

from lightning_seg.data.base import SegDataModule
from lightning_seg.data.camvid import CamVidDataModule
from lightning_seg.data.coco import COCOSemanticDataModule
from lightning_seg.data.files import SampleFile
from lightning_seg.data.folder import FolderDataModule
from lightning_seg.data.image_mask import ImageMaskDataModule, ImageMaskDataset
from lightning_seg.data.msd import MSDDataModule
from lightning_seg.data.pets import OxfordPetDataModule
from lightning_seg.data.stats import ClassStatistics
from lightning_seg.data.synthetic import SyntheticDataModule
from lightning_seg.data.voc import VOCDataModule
from lightning_seg.data.voc_kaggle import VOCKaggleDataModule

__all__ = [
    "COCOSemanticDataModule",
    "CamVidDataModule",
    "ClassStatistics",
    "FolderDataModule",
    "ImageMaskDataModule",
    "ImageMaskDataset",
    "MSDDataModule",
    "OxfordPetDataModule",
    "SampleFile",
    "SegDataModule",
    "SyntheticDataModule",
    "VOCDataModule",
    "VOCKaggleDataModule",
]
