"""``ModelPass``: the base of the small LightningModules a command runs for its own pass over the data
(``tune``'s calibration and before/after passes, ``attack``'s robustness pass), so that the segmentation
module is run by the loop, never reprogrammed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule


class ModelPass(L.LightningModule):
    """A command's own pass over a split, holding the segmentation module as a child: Lightning moves it to
    the device and attaches the trainer to it, and its ``setup`` (loss weights from the data) runs as in a
    stage of its own.

    Args:
        model: the segmentation module, its checkpoint's weights loaded.
    """

    def __init__(self, model: SegmentationModule) -> None:
        super().__init__()
        self.model = model

    def setup(self, stage: str) -> None:
        self.model.setup(stage)
