"""Lightning callbacks of this project."""

from lightning_seg.callbacks.finetune import BackboneFinetuning
from lightning_seg.callbacks.summary import RunSummary
from lightning_seg.callbacks.visualize import SampleOverlays
from lightning_seg.callbacks.writer import MaskWriter

__all__ = ["BackboneFinetuning", "MaskWriter", "RunSummary", "SampleOverlays"]
