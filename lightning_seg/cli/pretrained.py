"""What the CLI decides from a config's pretrained weights before anything is built.

* The data's normalisation follows the weights (:func:`link_normalization`): a net class says what its weights
  expect (``weights_normalization``, see :mod:`lightning_seg.models.weights`); ``data.mean``/``data.std`` left
  null take those values, and the CLI link carries them on to the model. A config that sets other values keeps
  them, with one warning line: a pretrained encoder fed inputs normalised otherwise starts from shifted
  features, which fine-tuning may or may not undo.
* Evaluating a net whose output head comes pretrained (a zero-shot baseline: torchvision's COCO-with-VOC-labels
  DeepLabV3, a COCO-panoptic model through a class mapping) needs no checkpoint (:func:`head_named_pretrained`).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from jsonargparse import Namespace

from lightning_seg.errors import ConfigError, truncate
from lightning_seg.models.weights import Normalization


def _named_class(class_path: str) -> type | None:
    """The class a config's ``class_path`` names, or None when it cannot be imported (the parser says so)."""
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):  # ValueError: an empty module name
        return None


def net_config(config: Namespace) -> tuple[type | None, dict[str, Any]]:
    """The net class a CLI config names (None when it cannot be imported) and its init args as a dict."""
    net = config.get("model.init_args.net")
    if not isinstance(net, Namespace) or not isinstance(net.get("class_path"), str):
        return None, {}
    cls = _named_class(net.class_path)
    if cls is None:
        return None, {}
    init_args = net.get("init_args")
    return cls, (init_args.as_dict() if isinstance(init_args, Namespace) else {})


def link_normalization(config: Namespace, announce: bool = True) -> None:
    """Fill ``data.init_args.mean``/``std`` left null with the normalisation the net's weights expect, or warn
    (rank zero, ``announce``) when the config sets values that differ from it.

    Not for a config with ``ckpt_path``: :func:`link_recorded_normalization` gives the values its run
    trained with."""
    cls, init_args = net_config(config)
    normalization_of = getattr(cls, "weights_normalization", None)
    if normalization_of is not None and _data_normalization(config) is not None:
        _follow(config, normalization_of(**init_args), announce)


def link_recorded_normalization(
    config: Namespace, record: dict[str, Any] | None, announce: bool = True, resuming: bool = False
) -> None:
    """For ``--ckpt_path``: fill ``data.init_args.mean``/``std`` left null with the values the checkpoint's
    run trained with (its model record), or warn when the config sets others; ``resuming`` (``fit``) refuses
    them instead, since the run would change its inputs halfway. Without a record (older checkpoints) the
    config stands."""
    init_args = _recorded_model_args(record)
    if init_args.get("mean") is None or init_args.get("std") is None:
        return
    recorded = Normalization.of(init_args["mean"], init_args["std"], "the checkpoint's run")
    _follow(config, recorded, announce, refuse=resuming)


def use_recorded_architecture(config: Namespace, record: dict[str, Any] | None) -> None:
    """For ``--ckpt_path``: a net whose config names files for its architecture (``ARCHITECTURE_ARGS``, e.g.
    TransformersNet's hub ``model``) takes them from the checkpoint's record (the resolved architecture), so
    evaluating or resuming needs neither the hub, nor its cache, nor the original folder. Only when the
    record's net is the config's class; its other arguments (a class mapping) stay the config's."""
    cls, _ = net_config(config)
    keys = getattr(cls, "ARCHITECTURE_ARGS", ())
    recorded = _recorded_model_args(record).get("net") or {}
    net = config.get("model.init_args.net")
    if not keys or recorded.get("class_path") != net.get("class_path"):
        return
    recorded_args = recorded.get("init_args") or {}
    if not all(key in recorded_args for key in keys):
        return  # an older record without them
    for key in keys:
        net.init_args[key] = recorded_args[key]


def _recorded_model_args(record: dict[str, Any] | None) -> dict[str, Any]:
    """The model's init args in a checkpoint's record (:mod:`lightning_seg.checkpoints.record`); empty without one."""
    return ((record or {}).get("model") or {}).get("init_args") or {}


def _data_normalization(config: Namespace) -> Namespace | None:
    data = config.get("data.init_args")
    return data if isinstance(data, Namespace) and "mean" in data and "std" in data else None


def _data_defaults(config: Namespace) -> tuple[list[float], list[float]] | None:
    """The ``mean``/``std`` defaults of the config's data class (None when it has none or cannot be read)."""
    cls = _named_class(str(config.get("data.class_path") or ""))
    try:
        parameters = inspect.signature(cls).parameters if cls is not None else {}
    except (ValueError, TypeError):
        return None
    mean, std = (parameters[key].default if key in parameters else None for key in ("mean", "std"))
    if mean is None or std is None or mean is inspect.Parameter.empty or std is inspect.Parameter.empty:
        return None
    return list(mean), list(std)


def _follow(config: Namespace, expected: Normalization | None, announce: bool, refuse: bool = False) -> None:
    """Null ``data.mean``/``std`` take ``expected``'s values; set ones that differ from them are kept, with one
    warning line on rank zero (``announce``), or refused (``refuse``)."""
    data = _data_normalization(config)
    if expected is None or data is None:
        return
    if not expected.known:
        # a file with no companion config: its statistics are the user's to state; a data module's own
        # default (ImageNet's, or the synthetic shapes' 0.5/0.25) says nothing about these weights
        if (
            data.mean is None
            or data.std is None
            or _data_defaults(config) == (list(data.mean), list(data.std))
        ):
            raise ConfigError(
                truncate(
                    f"{expected.source}: nothing states its normalisation (no companion <stem>.json, "
                    "config.json or preprocessor_config.json); set data.mean and data.std (ImageNet's: "
                    "[0.485, 0.456, 0.406], [0.229, 0.224, 0.225])",
                    300,
                )
            )
        return
    if data.mean is None and data.std is None:
        data.mean, data.std = list(expected.mean), list(expected.std)
        return
    mean = data.mean if data.mean is not None else expected.mean
    std = data.std if data.std is not None else expected.std
    difference = (
        f"data.mean {_short(mean)} and data.std {_short(std)} differ from what {expected.source} expects: "
        f"mean {_short(expected.mean)}, std {_short(expected.std)}; set both to null to use those"
    )
    if expected.differs(mean, std) and refuse:
        raise ConfigError(truncate(f"resuming: {difference}", 300))
    if expected.differs(mean, std) and announce:
        print("lightning-seg: warning: " + truncate(difference, 300), file=sys.stderr)
    data.mean, data.std = list(mean), list(std)


def head_named_pretrained(config: Namespace) -> bool:
    """Whether the config's net loads a pretrained output head (``pretrained_head_named`` of its class), so
    evaluating it without a checkpoint is a zero-shot baseline, not random weights."""
    cls, init_args = net_config(config)
    named = getattr(cls, "pretrained_head_named", None)
    return bool(named is not None and named(init_args))


def warn_unread_checkpoint(config: Namespace, announce: bool = True) -> None:
    """A ``--ckpt_path`` this process cannot read before building (a remote URL, ``registry:``, ``best``):
    its recorded normalisation cannot be checked, so say what the data will use."""
    data = _data_normalization(config)
    if announce and data is not None:
        mean = "the data module's default" if data.mean is None else _short(data.mean)
        print(
            f"lightning-seg: warning: --ckpt_path {config.ckpt_path} is not read before building: the data is "
            f"normalised with mean {mean} as configured, not checked against what the checkpoint trained with",
            file=sys.stderr,
        )


def _short(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"
