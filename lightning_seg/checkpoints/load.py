"""A model rebuilt from a checkpoint's record with its weights loaded, and the bundle ``export`` writes: a
checkpoint that stands alone for deployment."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from lightning_seg.checkpoints.read import check_checkpoint_fits, read_checkpoint
from lightning_seg.checkpoints.record import RECORD_KEY, attach_thresholds, build_module, read_record
from lightning_seg.checkpoints.splits import SPLITS_KEY
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.utils.atomic import atomic_write

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule


def load_module(
    path: str | Path,
    record: dict[str, Any] | None = None,
    weights_only: bool = True,
    map_location: str | torch.device = "cpu",
) -> tuple[SegmentationModule, dict[str, Any]]:
    """A model rebuilt from a checkpoint and its weights loaded, in eval mode; with its record.

    Args:
        path: the checkpoint (``.ckpt``).
        record: the model record to rebuild from, for a checkpoint written before checkpoints held theirs (see
            :func:`lightning_seg.cli.records.record_from_config`); None: the checkpoint's own.
        weights_only: safe loading (the record is plain data); false only for a trusted old checkpoint.
        map_location: where the weights are loaded.

    Raises:
        ConfigError: in one line, for a missing, truncated or foreign file, or a record that no longer
            builds.
    """
    checkpoint = read_checkpoint(str(path), weights_only, option="checkpoint")
    if record is None:
        record = read_record(checkpoint, path)
    module = build_module(record)
    load_weights(module, checkpoint, path)
    module.to(map_location).eval()
    return module, record


def load_weights(module: SegmentationModule, checkpoint: dict[str, Any], path: str | Path) -> None:
    """A loaded checkpoint's weights (and what ``on_load_checkpoint`` restores: loss weights, embedded
    thresholds) into ``module``; weights that do not fit are one line saying how they differ."""
    state = checkpoint["state_dict"]
    module.on_load_checkpoint(checkpoint)  # leaves out the heads the module does not build
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        check_checkpoint_fits(str(path), state, module)  # says how they differ in one line
        raise ConfigError(f"checkpoint {short_path(str(path))}: weights do not fit its model") from error


def write_bundle(
    module: SegmentationModule,
    source: dict[str, Any],
    checkpoint_path: str | Path,
    target: str | Path,
    record: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint that stands alone for deployment: the weights of ``module``, its record with the tuned
    thresholds it uses embedded (so no file beside it is needed), and the loss weights a later ``test``
    reports its loss with; no optimizer or loop state. Loads with ``weights_only=True``, with
    :func:`load_module` and as ``--ckpt_path`` of ``test``/``predict``.

    Args:
        module: the model, weights and post-processing loaded (``load_postprocess``).
        source: the checkpoint it was loaded from, as read (its record, when ``module`` has none; its epoch,
            step and loss weights).
        checkpoint_path: that checkpoint's path (for messages).
        target: the bundle's path.
        record: the model record of the exporting config (its post-processing chain); None: the source's.
    """
    record = copy.deepcopy(record or read_record(source, checkpoint_path))
    # the split the weights were trained on is the checkpoint's, not the exporting config's
    record[SPLITS_KEY] = copy.deepcopy((source.get(RECORD_KEY) or {}).get(SPLITS_KEY))
    thresholds = module.postprocess.thresholds
    for step in record["model"].get("init_args", {}).get("postprocess") or []:
        if isinstance(step, dict) and str(step.get("class_path", "")).endswith("ClassThresholds"):
            # the thresholds travel inside the bundle: a path would point back at the file beside the
            # training checkpoint (tuned for that file, not this one)
            (step.get("init_args") or {}).pop("path", None)
    bundle: dict[str, Any] = {
        "state_dict": {key: value.detach().cpu() for key, value in module.state_dict().items()},
        RECORD_KEY: attach_thresholds(record, thresholds.data if thresholds is not None else None),
        "pytorch-lightning_version": L.__version__,
        "epoch": source.get("epoch", 0),
        "global_step": source.get("global_step", 0),
    }
    for key in ("loss_class_weights", "loss_label_class_weights"):
        if source.get(key) is not None:
            bundle[key] = source[key]
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda handle: torch.save(bundle, handle), durable=True)
    return target
