"""Small classes the tests name by class_path in YAML."""

import os

import lightning as L

from lightning_seg.data.synthetic import SyntheticDataModule
from lightning_seg.models import UNet


class OneClassDataModule(SyntheticDataModule):
    """A broken dataset definition: a single class cannot make a segmentation task."""

    class_names = ("background",)


class StopAfterEpoch(L.Callback):
    """Ends training after the first epoch, like an interrupted job (its last.ckpt is already written)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


class CrashAtStep(L.Callback):
    """Fails at the end of optimizer step ``step`` (before any checkpoint of that step), like a killed job;
    with ``hard`` the process is killed outright (SIGKILL: nothing runs after it, no cleanup)."""

    def __init__(self, step: int, hard: bool = False) -> None:
        self.step = step
        self.hard = hard

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if trainer.global_step == self.step:
            if self.hard:
                import os
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"simulated crash at step {self.step}")


class NonFiniteBatchAtStep(L.Callback):
    """Makes the batch of optimizer step ``step + 1`` NaN (its loss non-finite), as an overflow would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        if trainer.global_step == self.step:
            batch["image"].fill_(float("nan"))


class InterruptAtStep(L.Callback):
    """Presses Ctrl-C after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class RecordsDDPForward(UNet):
    """A U-Net that appends to ``$LIGHTNING_SEG_DDP_RECORD.<rank>`` whether each training forward runs inside
    DistributedDataParallel's forward: where ``model.compile``'s compiled net runs, and what Dynamo checks to
    split the compiled graph at DDP's gradient buckets (DDPOptimizer) so all-reduces overlap the backward."""

    def forward(self, x):  # noqa: ANN001, ANN201
        path = os.environ.get("LIGHTNING_SEG_DDP_RECORD")
        if self.training and path:
            from torch.nn.parallel import DistributedDataParallel

            inside = DistributedDataParallel._get_active_ddp_module() is not None
            with open(f"{path}.{os.environ.get('LOCAL_RANK', '0')}", "a") as record:
                record.write(f"{inside}\n")
        return super().forward(x)
