"""Lightning callbacks of this project."""

from lightning_seg.callbacks.checkpoint import ModelCheckpoint
from lightning_seg.callbacks.divergence import DivergenceGuard
from lightning_seg.callbacks.finetune import BackboneFinetuning
from lightning_seg.callbacks.model_record import ModelRecord
from lightning_seg.callbacks.plots import RunPlots
from lightning_seg.callbacks.progress import PlainProgressBar
from lightning_seg.callbacks.schedule_time import ScheduleTimeCheck
from lightning_seg.callbacks.summary import RunSummary
from lightning_seg.callbacks.uncertainty import UncertaintyWriter
from lightning_seg.callbacks.visualize import SampleOverlays
from lightning_seg.callbacks.writer import MaskWriter

__all__ = [
    "BackboneFinetuning",
    "DivergenceGuard",
    "MaskWriter",
    "ModelCheckpoint",
    "ModelRecord",
    "PlainProgressBar",
    "RunPlots",
    "RunSummary",
    "SampleOverlays",
    "ScheduleTimeCheck",
    "UncertaintyWriter",
]
