"""lightning_seg: semantic-segmentation experiments with PyTorch Lightning."""

from lightning_seg import _graveyard
from lightning_seg.utils import started as _started  # noqa: F401  (before torch: the command's clock starts)

_graveyard.install()  # before anything else: old module paths in configs and checkpoint records keep loading

from lightning_seg.segmenter import Segmentation, Segmenter, load  # noqa: E402
from lightning_seg.task.classifier import ImageClassifierModule  # noqa: E402
from lightning_seg.task.module import SegmentationModule  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ImageClassifierModule", "SegmentationModule", "Segmentation", "Segmenter", "load", "__version__"]
