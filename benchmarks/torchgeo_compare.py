"""Ours against TorchGeo 0.8's ``SemanticSegmentationTask`` on the same data, batch, crop and precision.

Both are timed by ``benchmarks/throughput.py``'s ``StepTimer`` in the same measuring Trainer, back to back,
on one data module: ours as the CLI builds it from the config (give it SMPNet U-Net/ResNet34 and a
cross-entropy loss, the one TorchGeo's task has), then TorchGeo's task (``model="unet"``,
``backbone="resnet34"``, no pretrained weights, ``loss="ce"`` with our resolved class weights, if any) fed
the very batches our data module prepares (loading, transfer, Kornia augmentation
and normalisation are the same on both sides; what differs is the LightningModule: net wrapper, loss,
metrics, logging). Run through ``benchmarks/gpu_metrics.py torchgeo``.

TorchGeo is not one of our dependencies. Where it cannot be imported the result says so and how to bring
it: ``pip install torchgeo==0.8.1`` here, or on a machine without network its wheels in ``.whl``
(``bash benchmarks/gpu_prepare.sh`` fetches them; ``benchmarks/gpu_suite.sh`` installs them).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from throughput import StepTimer, make_trainer, measure_pipeline

HOW_TO_INSTALL = (
    "torchgeo not installed: pip install torchgeo==0.8.1 (not a dependency of ours); on the GPU machine, "
    "bash benchmarks/gpu_prepare.sh puts its wheels in .whl and gpu_suite.sh installs them"
)


def torchgeo_missing() -> str | None:
    """None when ``torchgeo.trainers`` imports, else one line: what is missing and how to bring it."""
    try:
        import torchgeo.trainers  # noqa: F401
    except ImportError as error:
        return f"{HOW_TO_INSTALL} ({type(error).__name__}: {error})"
    return None


def torchgeo_task(
    num_classes: int, ignore_index: int, lr: float, class_weights: torch.Tensor | None = None
) -> L.LightningModule:
    """TorchGeo's U-Net/ResNet34 segmentation task (cross-entropy with ``class_weights``, float32 (K,) or
    None; random initial weights), with its
    optimizer alone: its ReduceLROnPlateau watches ``val_loss``, which a run without validation never logs
    (Lightning would stop at the first epoch's end); a scheduler's step costs nothing measurable."""
    from torchgeo.trainers import SemanticSegmentationTask

    class Task(SemanticSegmentationTask):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"])

    return Task(
        model="unet",
        backbone="resnet34",
        weights=None,
        in_channels=3,
        task="multiclass",
        num_classes=num_classes,
        loss="ce",
        class_weights=class_weights,
        ignore_index=ignore_index,
        lr=lr,
    )


def compare(cli_args: list[str], steps: int, warmup: int) -> dict[str, Any]:
    """Images/s of ours (the config in ``cli_args``) and of TorchGeo's task on the same data module,
    Trainer settings and device, and their ratio (ours / TorchGeo); without torchgeo, only the line why."""
    missing = torchgeo_missing()
    if missing is not None:
        return {"torchgeo": missing}
    import torchgeo

    ours = measure_pipeline(cli_args, steps, warmup)
    module = ours.cli.model
    # the class weights ours resolved (the config's rule, from the training split's statistics)
    task = torchgeo_task(module.num_classes, module.ignore_index, 1e-3, module.loss.weight_tensor)
    timer = StepTimer(warmup, steps - 1)
    device = ours.trainer.strategy.root_device
    trainer = make_trainer(device.type, ours.trainer.precision, steps, [timer])
    trainer.fit(task, datamodule=ours.cli.datamodule)
    if timer.shape != ours.timer.shape:  # never compare different work
        raise RuntimeError(f"TorchGeo saw batches of {timer.shape}, ours {ours.timer.shape}")
    return {
        "pipeline": ours,
        "torchgeo": f"torchgeo {torchgeo.__version__}",
        "ours_images_per_s": float(f"{ours.images_per_s:.4g}"),
        "torchgeo_images_per_s": float(f"{timer.images_per_s:.4g}"),
        "ratio": round(ours.images_per_s / timer.images_per_s, 3),
        "torchgeo_warmup_s": round(timer.warmup_s, 2),
        "loss": f"cross-entropy, class weights {'given' if module.loss.weight_tensor is not None else 'none'}",
    }
