"""Checkpoints that stand alone: what rebuilds a model, kept in its checkpoint as plain data.

Every checkpoint the CLI writes holds, under ``checkpoint["lightning_seg"]``::

    {"format": "lightning_seg.model/1",
     "model": {"class_path": ..., "init_args": {...}},   # the resolved model config, with the values the
                                                          # CLI links from the data (num_classes, class
                                                          # names, ignore_index, mean/std, labels)
     "input": {"size": [h, w] | None,                    # how the data makes an image batchable
               "image_value_range": [low, high] | None,
               "eval_augmentations": [<config>] | None},
     "thresholds": {<the tuned thresholds file>} | None} # embedded by ``export``'s bundle

only strings, numbers, booleans, None, lists and dicts, so ``torch.load(path, weights_only=True)`` reads
the whole checkpoint. :func:`build_module` rebuilds the model from it (jsonargparse instantiates the
``class_path``/``init_args``, the way the CLI does); :mod:`lightning_seg.checkpoints.load` loads the weights
into it and :mod:`lightning_seg.segmenter` puts a predict API on top. A checkpoint written before this record
existed loads with the record its run's ``config.yaml`` gives (:mod:`lightning_seg.cli.records`).

Written by hand: Lightning's ``save_hyperparameters`` would do the first part, but LightningCLI merges a
checkpoint's ``hyper_parameters`` back into the config of every ``--ckpt_path`` command, which is what
dropped the config's net once (see the module's ``__init__``); this record is read only by this module.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_seg.checkpoints.splits import SPLITS_KEY
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.models.weights import checkpoint_follows
from lightning_seg.utils.error_lines import innermost_message

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule

RECORD_KEY = "lightning_seg"
RECORD_FORMAT = "lightning_seg.model/1"
LINKED_FROM_DATA = (
    "num_classes",
    "ignore_index",
    "class_names",
    "label_names",
    "label_classes",
    "mean",
    "std",
)
"""The model arguments the CLI links from the data module (absent from the model's own config section)."""
TRAINING_ONLY = ("optimizer", "lr_scheduler", "scheduler_interval", "scheduler_monitor", "compile")
"""Model arguments that play no part in inference; kept in the record (a record is the config), but a
rebuild for inference does not build them (an optimizer class of another environment must not stop it)."""


def plain(value: Any, where: str = "record") -> Any:
    """``value`` as plain data (dict/list/str/int/float/bool/None; tuples become lists), or ConfigError
    naming the first part that is not (what ``torch.load(weights_only=True)`` could not read back)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"checkpoint {where}: {type(value).__name__} is not plain data (a config value?)")


def model_record(
    model_config: dict[str, Any],
    module: SegmentationModule,
    size: Any = None,
    image_value_range: Any = None,
    eval_augmentations: list[Any] | None = None,
    splits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a model built by the CLI (see the module's docstring).

    Args:
        model_config: the model's section of the resolved config, as plain data (``class_path``,
            ``init_args``).
        module: the built model (the values linked from the data are read from it).
        size: the data's ``size`` (int or (height, width)), None: images batched at their stored size.
        image_value_range: the data's ``image_value_range`` for images deeper than 8 bits.
        eval_augmentations: the data's ``eval_augmentations`` config (usually None).
        splits: the samples of each split the model is trained on (``fit`` only; see
            :mod:`lightning_seg.checkpoints.splits`).
    """
    config = copy.deepcopy(model_config)
    init_args = config.setdefault("init_args", {})
    linked = {
        "num_classes": module.num_classes,
        "ignore_index": module.ignore_index,
        "class_names": list(module.class_names),
        # labels given by the data (a derived head's names come back from the classes)
        "label_names": None if module.label_task.derived else list(module.label_names),
        "label_classes": _label_classes(module),
        "mean": list(module.mean),
        "std": list(module.std),
    }
    assert set(linked) == set(LINKED_FROM_DATA)  # the CLI links exactly these (cli.py)
    init_args.update(linked)
    # a net whose config names files (a transformers hub model) records its resolved architecture instead
    record_init_args = getattr(module.net, "record_init_args", None)
    if callable(record_init_args) and isinstance(init_args.get("net"), dict):
        init_args["net"].setdefault("init_args", {}).update(record_init_args())
    if isinstance(size, int):
        size = [size, size]
    record = {
        "format": RECORD_FORMAT,
        "model": config,
        "input": {
            "size": list(size) if size is not None else None,
            "image_value_range": list(image_value_range) if image_value_range is not None else None,
            "eval_augmentations": eval_augmentations or None,
        },
        "thresholds": None,
        SPLITS_KEY: splits,
    }
    return plain(record)


def _label_classes(module: SegmentationModule) -> list[str | None] | None:
    classes = getattr(module.label_task, "label_classes", None)
    return list(classes) if classes else None


def read_record(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The record of a loaded checkpoint, or ConfigError in one line: written before checkpoints carried
    it (load it with its run's config.yaml), or of another format."""
    record = checkpoint.get(RECORD_KEY)
    shown = short_path(str(path))
    if record is None:
        config = Path(path).parent.parent / "config.yaml"
        hint = f"config={short_path(str(config))}" if config.is_file() else "config=<its run's config.yaml>"
        raise ConfigError(
            f"checkpoint {shown}: holds no model record (written before checkpoints carried one, or by a model "
            f"trained outside the CLI); load it with {hint}, or through the CLI with --config and --ckpt_path"
        )
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ConfigError(f"checkpoint {shown}: model record of format {found!r}, expected {RECORD_FORMAT!r}")
    return record


def build_module(record: dict[str, Any], for_training: bool = False) -> SegmentationModule:
    """The model a record describes, with fresh weights (jsonargparse builds the class paths as the CLI
    does). ``for_training=False`` leaves the optimizer and scheduler out of the rebuild."""
    import lightning as L
    from jsonargparse import ArgumentParser

    config = copy.deepcopy(record["model"])
    if not for_training:
        for key in TRAINING_ONLY:
            config.get("init_args", {}).pop(key, None)
    parser = ArgumentParser(exit_on_error=False)
    # any LightningModule subclass the record names (jsonargparse imports its class_path)
    parser.add_subclass_arguments(L.LightningModule, "model", required=True)
    try:
        parsed = parser.parse_object({"model": config})
        # the checkpoint's weights replace pretrained ones: never download them (offline, it would fail)
        with checkpoint_follows():
            return parser.instantiate_classes(parsed).model
    except ConfigError:
        raise
    except Exception as error:  # a class of another version, an argument it no longer takes
        raise ConfigError(
            f"checkpoint model record: cannot rebuild the model ({innermost_message(error)})"
        ) from error


def attach_thresholds(record: dict[str, Any], thresholds: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``record`` carrying the tuned thresholds file's content (None: none)."""
    record = copy.deepcopy(record)
    record["thresholds"] = plain(thresholds) if thresholds is not None else None
    return record
