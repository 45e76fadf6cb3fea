"""Small classes the tests name by class_path in YAML."""

import lightning as L

from lightning_seg.data.synthetic import SyntheticDataModule


class OneClassDataModule(SyntheticDataModule):
    """A broken dataset definition: a single class cannot make a segmentation task."""

    class_names = ("background",)


class StopAfterEpoch(L.Callback):
    """Ends training after the first epoch, like an interrupted job (its last.ckpt is already written)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True
