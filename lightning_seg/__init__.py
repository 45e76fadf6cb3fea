"""lightning_seg: semantic-segmentation experiments with PyTorch Lightning."""

from lightning_seg.module import SegmentationModule
from lightning_seg.segmenter import Segmentation, Segmenter, load

__version__ = "0.1.0"
__all__ = ["SegmentationModule", "Segmentation", "Segmenter", "load", "__version__"]
