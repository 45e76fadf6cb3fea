"""lightning_seg: semantic-segmentation experiments with PyTorch Lightning."""

from lightning_seg.module import SegmentationModule

__version__ = "0.1.0"
__all__ = ["SegmentationModule", "__version__"]
