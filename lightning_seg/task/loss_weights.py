"""Class- and label-weight rules of the loss: read from the data module's statistics when the loss first needs
them, and resolved once on rank 0 before training starts."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import Strategy

from lightning_seg.errors import ConfigError
from lightning_seg.labels import LabelTask, label_weight_source
from lightning_seg.losses import CompoundLoss


def class_weights_of(datamodule: Any, rule: str, beta: float) -> torch.Tensor:
    """A ``loss.class_weights`` rule resolved from the data module's training-mask statistics."""
    weights = getattr(datamodule, "class_weights", None)
    if weights is None:
        raise ConfigError(f"loss.class_weights={rule!r} needs a data module with class statistics")
    return weights(rule, beta=beta)


def label_weights_of(datamodule: Any, task: LabelTask, rule: str, beta: float) -> torch.Tensor:
    """A ``loss.label_class_weights`` rule resolved from the training split's label counts."""
    source = label_weight_source(datamodule, task)
    if source is None:
        raise ConfigError(f"loss.label_class_weights={rule!r} needs a data module with label counts")
    return source(rule, beta)


def resolve_on_rank_zero(loss: CompoundLoss, strategy: Strategy, is_global_zero: bool) -> None:
    """Resolve the loss's class- and label-weight rules: rank 0 reads the data's statistics (one cached pass
    over the training masks) and broadcasts the weights, so the other DDP ranks neither repeat the pass nor
    stall inside the first step. A resumed fit restores them from its checkpoint instead."""
    for pending, weights, assign in (
        (loss.weights_pending, loss.pixel_weights, loss.set_class_weights),
        (loss.label_weights_pending, loss.label_weights, loss.set_label_class_weights),
    ):
        if not pending:
            continue
        payload: tuple[torch.Tensor | None, str | None] | None = None
        failure: Exception | None = None
        if is_global_zero:
            try:
                payload = (weights.resolved(), None)
            except Exception as error:  # sent to every rank, so that all stop (none waits in broadcast)
                failure, payload = error, (None, str(error))
        resolved, message = strategy.broadcast(payload, src=0)
        if failure is not None:
            raise failure
        if message is not None:
            raise ConfigError(message)
        assign(resolved)
