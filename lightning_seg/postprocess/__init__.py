"""Post-processing steps applied to one image's prediction at its original size (see :mod:`.base`)."""

from lightning_seg.postprocess.base import Prediction, Step
from lightning_seg.postprocess.chain import PostProcess
from lightning_seg.postprocess.components import SmallComponents
from lightning_seg.postprocess.consistency import LabelConsistency
from lightning_seg.postprocess.crf import DenseCRF
from lightning_seg.postprocess.temperature import TemperatureScaling
from lightning_seg.postprocess.thresholds import ClassThresholds, decide

__all__ = [
    "ClassThresholds",
    "DenseCRF",
    "LabelConsistency",
    "PostProcess",
    "Prediction",
    "SmallComponents",
    "Step",
    "TemperatureScaling",
    "decide",
]
