"""What a stage logs at its epoch's end, by name: ``<stage>/<score>``, ``<stage>/IoU/<class>``,
``<stage>/loss/<term>``, ``<stage>/label_<score>`` and per label ``<stage>/label_precision/<label>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_seg.errors import ConfigError

PLAIN_SCORES = ("dice", "dice_fg", "acc")
OPTIONAL_SCORES = ("IoU_fg", "image_IoU", "image_dice_fg", "image_IoU_fg", "image_mIoU", "competition_dice")
LABEL_SCORES = ("f1", "acc", "mAP", "AUC")


def segmentation_logs(
    stage: str, scores: dict[str, torch.Tensor], losses: dict[str, torch.Tensor], class_names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The stage's mask scores (device tensors, as computed by ``SegMetrics``; mIoU is logged apart, on
    the progress bar) and loss terms. A class absent from the whole evaluation (NaN IoU) is not logged; the
    test reads the NaN mask once on the host."""
    logged = {f"{stage}/{name}": scores[name] for name in PLAIN_SCORES}
    logged.update({f"{stage}/loss/{name}": value for name, value in losses.items() if name != "loss"})
    logged.update({f"{stage}/{name}": scores[name] for name in OPTIONAL_SCORES if name in scores})
    present = (~scores["iou"].isnan()).tolist()
    dice = scores.get("dice_per_class")
    for index, (class_name, value, known) in enumerate(zip(class_names, scores["iou"], present, strict=True)):
        if known:
            logged[f"{stage}/IoU/{class_name}"] = value
            if dice is not None:
                logged[f"{stage}/Dice/{class_name}"] = dice[index]
    return logged


def composite_score(
    stage: str, weights: dict[str, float], logged: dict[str, torch.Tensor], mIoU: torch.Tensor
) -> torch.Tensor:
    """``sum_name weight · <stage>/<name>`` over the stage's logged metrics (a device tensor: no host sync).

    Raises:
        ConfigError: in one line, for a name the stage does not log.
    """
    available = {**{key.split("/", 1)[1]: value for key, value in logged.items()}, "mIoU": mIoU}
    missing = [name for name in weights if name not in available]
    if missing:
        names = ", ".join(sorted(k for k in available if "/" not in k))
        raise ConfigError(
            f"model.score: {stage} logs no {missing[0]!r} (a net without an image-level head logs no label_*; "
            f"a class name needs IoU/<name>); {stage} logs: {names}"
        )
    return sum(
        (value * available[name] for name, value in weights.items()), torch.zeros((), device=mIoU.device)
    )


def label_logs(
    stage: str, scores: dict[str, torch.Tensor], record: dict[str, Any], label_names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The image-level head's scores; per label precision and recall where defined (``record``: the same
    scores as plain data, None where a label had no prediction or no target)."""
    logged = {f"{stage}/label_{name}": scores[name] for name in LABEL_SCORES if name in scores}
    for kind in ("precision", "recall"):
        for label_name, value, known in zip(label_names, scores[kind], record[kind], strict=True):
            if known is not None:
                logged[f"{stage}/label_{kind}/{label_name}"] = value
    return logged
