"""``BackboneFinetuning`` driven through real (tiny, CPU) ``Trainer.fit`` runs on random tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from lightning_seg.callbacks import BackboneFinetuning
from lightning_seg.errors import ConfigError
from lightning_seg.models import ResNetUNet, SMPNet, TorchvisionNet, UNet, as_net_output

NUM_CLASSES = 3
LR = 1e-3
RATIO = 0.1

SchedulerBuilder = Callable[[torch.optim.Optimizer], Any]


class TinySegModule(L.LightningModule):
    """The minimum SegmentationModule-like shape the callback needs: ``self.net``, a requires_grad optimizer.

    ``training_step`` records, for each batch, whether the backbone was trainable and its BatchNorm layers were
    in train mode at forward time. ``on_train_epoch_start`` puts the whole net in train mode, as user code may,
    to check that the callback still holds the frozen BatchNorm layers in eval mode.
    """

    def __init__(self, net: nn.Module, scheduler: SchedulerBuilder | None = None) -> None:
        super().__init__()
        self.net = net
        self.scheduler = scheduler
        self.records: list[dict[str, Any]] = []

    def on_train_epoch_start(self) -> None:
        self.net.train()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        backbone = self.net.backbone
        norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
        self.records.append(
            {
                "epoch": self.current_epoch,
                "requires_grad": {p.requires_grad for p in backbone.parameters()},
                "bn_training": {m.training for m in norms},
            }
        )
        image, mask = batch
        out = as_net_output(self.net(image))
        loss = F.cross_entropy(out.mask, mask)
        if out.aux is not None:
            loss = loss + 0.4 * F.cross_entropy(out.aux, mask)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        image, mask = batch
        self.log("val/loss", F.cross_entropy(as_net_output(self.net(image)).mask, mask))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=LR)
        if self.scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": "step"},
        }


class BackboneSnapshots(L.Callback):
    """Clones the backbone's state (weights and BatchNorm running statistics) at each epoch's start and end."""

    def __init__(self) -> None:
        self.start: dict[int, dict[str, torch.Tensor]] = {}
        self.end: dict[int, dict[str, torch.Tensor]] = {}

    @staticmethod
    def _clone(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in pl_module.net.backbone.state_dict().items()}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start[trainer.current_epoch] = self._clone(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end[trainer.current_epoch] = self._clone(pl_module)


def _loader(seed: int = 0) -> DataLoader:
    """One batch of two 32×32 images per epoch: enough to step the optimizer, and BatchNorm needs two."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    masks = torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=generator)
    return DataLoader(TensorDataset(images, masks), batch_size=2)


def _fit(trainer: L.Trainer, module: L.LightningModule, **kwargs: Any) -> None:
    trainer.fit(module, _loader(), _loader(seed=1), **kwargs)


def _trainer(tmp_path: Path, max_epochs: int, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": max_epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "num_sanity_val_steps": 0,
        **kwargs,
    }
    return L.Trainer(callbacks=callbacks, **options)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


NETS: dict[str, Callable[[], nn.Module]] = {
    "resnet_unet": lambda: ResNetUNet(NUM_CLASSES, base_width=8, stage_blocks=(1, 1, 1, 1)),
    "smp_unet": lambda: SMPNet(
        NUM_CLASSES, encoder_name="mobilenet_v2", decoder_kwargs={"decoder_channels": [16, 16, 8, 8, 8]}
    ),
    "torchvision_lraspp": lambda: TorchvisionNet(NUM_CLASSES, arch="lraspp_mobilenet_v3_large"),
}


@pytest.mark.parametrize("name", list(NETS))
def test_freeze_then_unfreeze(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TinySegModule(NETS[name]())
    backbone = module.net.backbone
    snapshots = BackboneSnapshots()
    callback = BackboneFinetuning(unfreeze_at_epoch=1, backbone_lr_ratio=RATIO)
    trainer = _trainer(tmp_path, 3, [callback, snapshots])
    _fit(trainer, module)

    frozen = [r for r in module.records if r["epoch"] == 0]
    trained = [r for r in module.records if r["epoch"] >= 1]
    assert frozen and trained
    assert all(r["requires_grad"] == {False} for r in frozen)
    assert all(r["bn_training"] == {False} for r in frozen)  # held in eval despite net.train() each epoch
    assert all(r["requires_grad"] == {True} for r in trained)
    assert all(r["bn_training"] == {True} for r in trained)
    # epoch 0 changed neither weights nor running statistics of the backbone; later epochs train it
    assert _same(snapshots.start[0], snapshots.end[0])
    assert not _same(snapshots.start[1], snapshots.end[2])

    optimizer = trainer.optimizers[0]
    assert len(optimizer.param_groups) == 2
    head, added = optimizer.param_groups
    backbone_ids = {id(p) for p in backbone.parameters()}
    assert {id(p) for p in added["params"]} == backbone_ids
    assert not backbone_ids & {id(p) for p in head["params"]}
    assert added["lr"] == pytest.approx(RATIO * head["lr"])
    assert added["weight_decay"] == head["weight_decay"]


SCHEDULERS: dict[str, SchedulerBuilder] = {
    "lambda": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step)),
    "one_cycle": lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=100),
    "cosine": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100),
    "sequential": lambda opt: torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=3),
            torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.9**s),
        ],
        milestones=[2],
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_follow_the_new_group(name: str, tmp_path: Path) -> None:
    """A scheduler built for one group keeps stepping, and scales the backbone's lr with the head's."""
    module = TinySegModule(NETS["resnet_unet"](), scheduler=SCHEDULERS[name])
    trainer = _trainer(tmp_path, 3, [BackboneFinetuning(unfreeze_at_epoch=1, backbone_lr_ratio=RATIO)])
    _fit(trainer, module)
    head, added = trainer.optimizers[0].param_groups
    assert head["lr"] != pytest.approx(LR)  # the schedule moved
    assert added["lr"] == pytest.approx(RATIO * head["lr"])


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # a fresh directory for the resumed run
@pytest.mark.parametrize("with_scheduler", [False, True])
def test_resume_after_the_unfreeze_epoch(with_scheduler: bool, tmp_path: Path) -> None:
    """A run resumed past the unfreeze epoch trains the backbone again, in the group the checkpoint stored."""
    scheduler = SCHEDULERS["lambda"] if with_scheduler else None

    def trainer(max_epochs: int, *extra: L.Callback) -> L.Trainer:
        callbacks = [BackboneFinetuning(unfreeze_at_epoch=1, backbone_lr_ratio=RATIO), *extra]
        checkpoint = ModelCheckpoint(dirpath=tmp_path / f"ckpt{max_epochs}", save_last=True)
        return _trainer(tmp_path, max_epochs, [*callbacks, checkpoint], enable_checkpointing=True)

    _fit(trainer(2), TinySegModule(NETS["resnet_unet"](), scheduler))  # unfreezes at epoch 1, saves last.ckpt

    module = TinySegModule(NETS["resnet_unet"](), scheduler)
    snapshots = BackboneSnapshots()
    second = trainer(3, snapshots)
    _fit(second, module, ckpt_path=str(tmp_path / "ckpt2" / "last.ckpt"))

    assert [r["epoch"] for r in module.records] == [2]
    assert all(r["requires_grad"] == {True} and r["bn_training"] == {True} for r in module.records)
    assert not _same(snapshots.start[2], snapshots.end[2])
    head, added = second.optimizers[0].param_groups
    assert {id(p) for p in added["params"]} == {id(p) for p in module.net.backbone.parameters()}
    assert added["lr"] == pytest.approx(RATIO * head["lr"])


def test_train_bn_keeps_batchnorm_trainable(tmp_path: Path) -> None:
    module = TinySegModule(NETS["resnet_unet"]())
    trainer = _trainer(tmp_path, 2, [BackboneFinetuning(unfreeze_at_epoch=1, train_bn=True)])
    _fit(trainer, module)
    norms = [m for m in module.net.backbone.modules() if isinstance(m, _BatchNorm)]
    epoch0 = [r for r in module.records if r["epoch"] == 0]
    assert all(r["requires_grad"] == {False, True} and r["bn_training"] == {True} for r in epoch0)
    head, added = trainer.optimizers[0].param_groups
    bn_ids = {id(p) for m in norms for p in m.parameters()}
    assert bn_ids <= {id(p) for p in head["params"]}  # trained with the head from the start
    assert not bn_ids & {id(p) for p in added["params"]}


def test_net_without_backbone_is_a_config_error(tmp_path: Path) -> None:
    module = TinySegModule(UNet(NUM_CLASSES, base_width=4, depth=2))
    with pytest.raises(ConfigError, match="UNet has no `backbone`"):
        _fit(_trainer(tmp_path, 1, [BackboneFinetuning()]), module)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unfreeze_at_epoch"):
        BackboneFinetuning(unfreeze_at_epoch=-1)
    with pytest.raises(ConfigError, match="backbone_lr_ratio"):
        BackboneFinetuning(backbone_lr_ratio=0.0)


def test_parameters_are_matched_by_identity_not_value() -> None:
    """A backbone tensor equal in value to one already in the optimizer still joins the new group."""
    net = nn.Module()
    net.backbone = nn.Linear(4, 4)
    net.head = nn.Linear(4, 4)
    for p in net.parameters():
        nn.init.zeros_(p)  # every backbone tensor now equals a head tensor of the same shape
    module = L.LightningModule()
    module.net = net
    callback = BackboneFinetuning(unfreeze_at_epoch=0)
    callback.freeze_before_training(module)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    module._trainer = SimpleNamespace(optimizers=[optimizer], lr_scheduler_configs=[])
    callback.finetune_function(module, 0, optimizer)
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {id(p) for p in net.backbone.parameters()}
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1)
