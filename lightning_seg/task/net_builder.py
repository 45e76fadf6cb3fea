"""Building a model's net from its config: the net class with its arguments but ``num_classes`` (and the
heads the loss trains), so a config never states the data's classes twice."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from lightning_seg.errors import ConfigError

NetBuilder = Callable[[int], nn.Module]
"""A net class with its arguments but without ``num_classes``; YAML: ``class_path`` + ``init_args``."""

UNBUILT_HEAD_MARKERS = (".aux_classifier.", ".label_head.", ".classification_head.")
"""Parameter names of the heads that are not built when their loss weight is 0 (torchvision's aux
classifier, MicroUNet's and SMP's image-level heads)."""


def build_net(
    builder: NetBuilder,
    num_classes: int,
    num_labels: int | None,
    derived_labels: bool = False,
    *,
    aux_head: bool = True,
    label_head: bool = True,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Call the net builder with ``num_classes``, and with ``num_labels`` when the data has image-level
    classes and the net takes a ``num_labels`` the config left null (so a config never states it twice).

    With ``derived_labels`` (labels made from the masks) only a net that has a class head when its
    ``num_labels`` is null (``label_head_by_default``, e.g. MicroUNet) is given ``num_labels``: its head is
    sized for the labels, and a net without a head by default (SMPNet) does not grow one.

    ``aux_head=False`` / ``label_head=False`` (the loss gives that head weight 0) build the net without it:
    an untrained head would cost a forward pass per step, and its parameters, without gradients, stop DDP
    (which runs without ``find_unused_parameters``). A net that takes ``aux_loss`` gets ``aux_loss=False``;
    no net is given ``num_labels``, except ``num_labels=0`` (no head) for a net with a head by default. A
    config that asks for the head itself (``aux_loss: true``, ``num_labels`` > 0) raises ConfigError.

    A net that takes ``class_names`` (pretrained nets compare them with the classes of their weights) is given
    the data's ``class_names`` when its config leaves them null; one that takes ``input_mean``/``input_std``
    (an ensemble re-normalising for its members) the data's normalisation ``mean``/``std`` likewise.
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    # a CLI builder is a partial whose keywords hold every init_arg, the defaults included
    keywords = getattr(builder, "keywords", None) or {}
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        parameters = {}

    def takes(name: str) -> bool:
        return name in keywords or name in parameters

    if not aux_head and takes("aux_loss"):
        if keywords.get("aux_loss"):
            raise ConfigError(
                "model.net aux_loss: true contradicts model.loss aux_weight: 0 (the aux head would run "
                "untrained and leave DDP parameters without gradients); set aux_loss: null (or false) or aux_weight > 0"
            )
        kwargs["aux_loss"] = False
    given = keywords.get("num_labels")
    by_default = getattr(builder_class(builder, nn.Module), "label_head_by_default", False)
    if not label_head:
        if given:
            raise ConfigError(
                f"model.net num_labels: {given} contradicts model.loss label_weight: 0 (the image-level head "
                "would run untrained and leave DDP parameters without gradients); set num_labels: null (or 0) or "
                "label_weight > 0"
            )
        if given is None and by_default and takes("num_labels"):
            kwargs["num_labels"] = 0
    elif num_labels is not None and given is None and takes("num_labels"):
        if not derived_labels or by_default:
            kwargs["num_labels"] = num_labels
    if class_names is not None and takes("class_names") and keywords.get("class_names") is None:
        kwargs["class_names"] = list(class_names)
    for name, value in (("input_mean", mean), ("input_std", std)):
        if value is not None and takes(name) and keywords.get(name) is None:
            kwargs[name] = list(value)
    return builder(**kwargs)


def builder_class(builder: Any, base: type = object) -> type | None:
    """The class a builder makes (a net, a scheduler): the class itself, or the subclass of ``base`` that a
    partial (a CLI builder) calls; None for anything else."""
    if isinstance(builder, type):
        return builder
    candidates = [getattr(builder, "func", None), *getattr(builder, "args", ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, base)), None)
