"""``BackboneFinetuning``: train the head on a frozen backbone first, then the whole net.

Built on Lightning's :class:`~lightning.pytorch.callbacks.BaseFinetuning` (freezing, and saving/restoring the
extra optimizer param group in checkpoints), with four fixes over using it as is:

* frozen BatchNorm layers are held in eval mode, so they normalise with their (pretrained) running statistics.
  ``BaseFinetuning.freeze(train_bn=False)`` only stops the statistics from updating; in train mode the layer
  would still normalise with each batch's own statistics, which is not what the pretrained weights expect.
* parameters are matched to the optimizer by identity. ``BaseFinetuning.filter_on_optimizer`` compares
  values (``torch.equal``), so a backbone parameter that happens to equal one already in the optimizer (e.g. a
  freshly initialised BatchNorm weight of ones) would be silently left out of the new group.
* LR schedulers keep one entry per param group (``base_lrs``, ``lr_lambdas``, ...); they are extended for the
  new group, otherwise ``LambdaLR``-based schedules raise on their next step and ``OneCycleLR`` on a missing key.
* resuming from a checkpoint written after the unfreeze epoch unfreezes again (Lightning's own
  ``BackboneFinetuning`` acts only at exactly that epoch, leaving the backbone frozen after a resume).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from lightning_seg.errors import ConfigError

# param-group entries that are learning rates (torch schedulers add initial_lr; OneCycleLR max_lr/min_lr)
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
# per-group lists kept by torch schedulers: (attribute, scale by the ratio?)
_SCHEDULER_LISTS = (
    ("base_lrs", True),
    ("max_lrs", True),
    ("min_lrs", True),
    ("_last_lr", True),
    ("lr_lambdas", False),
)


def _extend_scheduler(scheduler: Any, num_groups: int, ratio: float) -> None:
    """Give ``scheduler`` entries for param groups added after it was built (copies of group 0's, × ratio)."""
    for child in getattr(scheduler, "_schedulers", None) or ():  # SequentialLR, ChainedScheduler
        _extend_scheduler(child, num_groups, ratio)
    for name, scaled in _SCHEDULER_LISTS:
        values = getattr(scheduler, name, None)
        if isinstance(values, list) and 0 < len(values) < num_groups:
            fill = values[0] * ratio if scaled else values[0]
            values.extend([fill] * (num_groups - len(values)))


class BackboneFinetuning(BaseFinetuning):
    """Freeze ``pl_module.net.backbone`` before training; unfreeze it at ``unfreeze_at_epoch`` with a lower lr.

    While frozen, the backbone's parameters have ``requires_grad=False`` and its BatchNorm layers stay in eval
    mode (running statistics used and unchanged) unless ``train_bn``. At the start of epoch
    ``unfreeze_at_epoch`` all its parameters become trainable and join the first optimizer as a new param
    group with ``lr = param_groups[0]["lr"] * backbone_lr_ratio`` (the head's current lr), other
    hyperparameters copied from group 0; schedulers then scale it along with the head's.

    The LightningModule must hold the net as ``self.net`` and build its optimizer from the parameters that
    require gradients (as :class:`~lightning_seg.task.module.SegmentationModule` does); otherwise the frozen
    backbone is already in group 0 at the head's lr.

    Args:
        unfreeze_at_epoch: first epoch (0-based) that trains the backbone; 0 trains it from the start, but
            at the reduced lr (discriminative learning rates); beyond ``max_epochs`` keeps it frozen.
        backbone_lr_ratio: backbone lr as a fraction of the head lr, > 0.
        train_bn: keep the backbone's BatchNorm layers trainable (and in train mode) while the rest is frozen;
            they then sit in the optimizer's first group at the head's lr.

    Multi-GPU: DDP registers the parameters that require gradients once, at wrap time, so gradients of a
    backbone unfrozen later would not be averaged across processes (Lightning issue #20340); the callback
    refuses to run with more than one process.
    """

    def __init__(
        self, unfreeze_at_epoch: int = 5, backbone_lr_ratio: float = 0.1, train_bn: bool = False
    ) -> None:
        super().__init__()
        if unfreeze_at_epoch < 0:
            raise ConfigError(f"BackboneFinetuning.unfreeze_at_epoch must be >= 0, got {unfreeze_at_epoch}")
        if backbone_lr_ratio <= 0:
            raise ConfigError(f"BackboneFinetuning.backbone_lr_ratio must be > 0, got {backbone_lr_ratio}")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_ratio = backbone_lr_ratio
        self.train_bn = train_bn
        self._frozen = False
        self._frozen_norms: list[_BatchNorm] = []
        self._frozen_by_net: set[int] = set()

    @staticmethod
    def backbone_of(pl_module: L.LightningModule) -> nn.Module:
        """``pl_module.net.backbone``, or a :class:`ConfigError` saying which part is missing."""
        net = getattr(pl_module, "net", None)
        if not isinstance(net, nn.Module):
            raise ConfigError(
                f"BackboneFinetuning: {type(pl_module).__name__} has no `net` module whose backbone could be frozen"
            )
        backbone = getattr(net, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise ConfigError(
                f"BackboneFinetuning: net {type(net).__name__} has no `backbone` to freeze; use a net with an "
                "encoder (ResNetUNet, MicroUNet, SMPNet, TorchvisionNet, TransformersNet) or remove the callback"
            )
        return backbone

    # ------------------------------------------------------------------------------------------ freeze
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":  # validate/test/predict use the weights as they are; nothing to freeze
            return
        if trainer.world_size > 1:
            # refused rather than warned: the run would finish and report numbers from drifted replicas
            raise ConfigError(
                "BackboneFinetuning does not work with multi-process training: DDP does not average the gradients "
                "of parameters unfrozen after it wrapped the model (Lightning issue #20340), and SyncBatchNorm "
                "replaces the frozen BatchNorm layers; train on one device or remove the callback"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        backbone = self.backbone_of(pl_module)
        # this runs before the module's setup, where a net finds the parameters its logits never use: find
        # them first, or a frozen backbone would hide them
        freeze_unused = getattr(pl_module.net, "freeze_unused_parameters", None)
        if callable(freeze_unused):
            freeze_unused()
        # frozen by the net itself (DETR's stem, parameters the logits never use): they stay frozen
        self._frozen_by_net = {id(p) for p in backbone.parameters() if not p.requires_grad}
        self.freeze(backbone, train_bn=self.train_bn)
        self._frozen = True
        self._frozen_norms = (
            [] if self.train_bn else [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
        )

    def _hold_norms_in_eval(self) -> None:
        # Lightning restores train mode after validation (and a module may call .train() itself), so this runs
        # before every training batch; a no-op when the layers are already in eval mode.
        for norm in self._frozen_norms:
            if norm.training:
                norm.eval()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function, stores the param groups
        self._hold_norms_in_eval()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._hold_norms_in_eval()

    # ---------------------------------------------------------------------------------------- unfreeze
    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if not self._frozen or epoch < self.unfreeze_at_epoch:
            return
        trainer = pl_module.trainer
        if optimizer is not trainer.optimizers[0]:  # the backbone joins the first optimizer only
            return
        backbone = self.backbone_of(pl_module)
        self.make_trainable(backbone)  # requires_grad and BatchNorm running statistics back on
        for parameter in backbone.parameters():
            if id(parameter) in self._frozen_by_net:
                parameter.requires_grad_(False)
        for norm in self._frozen_norms:
            norm.train(pl_module.training)
        self._frozen_norms = []
        self._frozen = False

        # After a resume, BaseFinetuning.on_fit_start has already restored the backbone's group.
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for p in backbone.parameters() if id(p) not in known and p.requires_grad]
        if params:
            head = optimizer.param_groups[0]
            group = {key: value for key, value in head.items() if key not in ("params", "name")}
            for key in _LR_KEYS:
                if key in group:
                    group[key] = group[key] * self.backbone_lr_ratio
            optimizer.add_param_group({**group, "params": params})
            rank_zero_info(
                f"BackboneFinetuning: epoch {epoch}: backbone unfrozen, {len(params)} tensors at "
                f"lr {float(group['lr']):.3g} ({self.backbone_lr_ratio} × head lr)"
            )
        for config in trainer.lr_scheduler_configs:
            if getattr(config.scheduler, "optimizer", None) is optimizer:
                _extend_scheduler(config.scheduler, len(optimizer.param_groups), self.backbone_lr_ratio)
