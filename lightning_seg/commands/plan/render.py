"""The plan as a config file a user reads and edits: every choice on its own line with the reason beside it.

Written as text (not dumped from a dict) so the comments sit where the values are; the values themselves are
JSON, which YAML reads as they are. ``tests/commands/test_plan.py`` parses each written file and trains it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_seg.commands.plan.recipe import NET, SCRATCH_NET, Choice, Recipe

COMMENT_COLUMN = 44


def _value(value: Any) -> str:
    return "null" if value is None else json.dumps(value)


def _line(indent: int, key: str, value: Any, why: str | None = None) -> str:
    text = f"{' ' * indent}{key}: {_value(value)}"
    return f"{text.ljust(COMMENT_COLUMN)} # {why}" if why else text


def _choice(indent: int, key: str, choice: Choice) -> str:
    return _line(indent, key, choice.value, choice.why)


def _net_lines(recipe: Recipe) -> list[str]:
    """The model's net, loss, optimizer and schedule: the pretrained recipe of configs/camvid/lite0_unet.yaml
    or the from-scratch one of configs/default.yaml."""
    lines = [f"{'    net:'.ljust(COMMENT_COLUMN)} # {recipe.net.why}"]
    if recipe.net.value == "unet":
        lines += [
            "      class_path: lightning_seg.models.UNet",
            f"      init_args: {json.dumps(SCRATCH_NET)}",
        ]
        lr, schedule = 0.004, ["torch.optim.lr_scheduler.OneCycleLR", "{max_lr: 0.004, pct_start: 0.2}"]
    else:
        lines += [
            "      class_path: lightning_seg.models.SMPNet",
            "      init_args:",
            _line(8, "arch", NET["arch"]),
            _line(8, "encoder_name", NET["encoder_name"], "4.7 M parameters: fast on a CPU"),
            _choice(8, "encoder_weights", recipe.encoder_weights),
            _line(8, "decoder_kwargs", NET["decoder_kwargs"]),
        ]
        lr, schedule = 0.001, ["lightning_seg.task.schedulers.WarmupCosineLR", "{warmup: 0.03}"]
    return [
        *lines,
        "    loss:",
        "      class_path: lightning_seg.losses.CompoundLoss",
        "      init_args:",
        _line(8, "weights", {"ce": 1.0, "dice": 1.0}, "Dice keeps small classes from being traded away"),
        _choice(8, "class_weights", recipe.class_weights),
        "    optimizer:",
        "      class_path: torch.optim.AdamW",
        f"      init_args: {{lr: {lr}, weight_decay: 0.0001}}",
        "    lr_scheduler:",
        f"      class_path: {schedule[0]}",
        f"      init_args: {schedule[1]}",
    ]


def render_plan(
    recipe: Recipe,
    data_class: str,
    data_args: Mapping[str, Any],
    split_lists: Mapping[str, Path],
    header: list[str],
    data_notes: Mapping[str, str] | None = None,
) -> str:
    """The config text: trainer, model and data, with ``data_args`` (the user's) and the split lists kept.

    Args:
        recipe: the decisions.
        data_class: the data module's class path.
        data_args: the data module arguments the user gave (root included), written as given.
        split_lists: split → its list file (absolute), so every later command sees the plan's split.
        header: comment lines for the top (what wrote it, from what, how to run it).
        data_notes: a comment for some of ``data_args`` (a value the checks decided).
    """
    height, width = recipe.crop.value  # type: ignore[misc]
    lines = [f"# {line}" if line else "#" for line in header]
    lines += [
        "seed_everything: 42",
        "trainer:",
        "  accelerator: auto",
        "  devices: 1",
        _choice(2, "max_epochs", recipe.max_epochs),
        _line(2, "precision", "32-true", "on a GPU: bf16-mixed"),
        "  log_every_n_steps: 20",
        "  default_root_dir: runs",
        "  logger:",
        "    class_path: lightning.pytorch.loggers.TensorBoardLogger",
        "    init_args: {save_dir: runs, name: plan}",
        "  callbacks:",
        "    - class_path: lightning_seg.callbacks.ModelCheckpoint",
        "      init_args:",
        "        monitor: val/mIoU",
        "        mode: max",
        "        save_last: true",
        '        filename: "epoch{epoch:03d}-miou{val/mIoU:.4f}"',
        "        auto_insert_metric_name: false",
        "    - class_path: lightning.pytorch.callbacks.LearningRateMonitor",
        "      init_args: {logging_interval: step}",
        "    - class_path: lightning_seg.callbacks.RunSummary",
        "    - class_path: lightning_seg.callbacks.RunPlots",
        "    - class_path: lightning_seg.callbacks.SampleOverlays",
        "    - class_path: lightning_seg.callbacks.MaskWriter",
        "model:",
        "  class_path: lightning_seg.SegmentationModule",
        "  init_args:",
        *_net_lines(recipe),
    ]
    lines += ["data:", f"  class_path: {data_class}", "  init_args:"]
    notes = data_notes or {}
    lines += [_line(4, key, value, notes.get(key)) for key, value in data_args.items()]
    lines += [
        _choice(4, "size", recipe.size),
        _choice(4, "batch_size", recipe.batch_size),
        *([] if "num_workers" in data_args else ["    num_workers: 2"]),
        _choice(4, "balanced_labels", recipe.balanced_labels),
    ]
    for split, path in split_lists.items():
        lines.append(
            _line(4, f"{split}_list", str(path), f"the plan's {split} split" if split == "train" else None)
        )
    aspect = width / height  # crop boxes around the crop's own aspect, so objects are not squeezed much
    # crops of half the image see objects at 0.7x..1.4x the scale the net is evaluated at (configs/camvid/
    # lite0_unet.yaml's boxes); a whole-image crop can only zoom in, and up to 1.4x as well
    whole = recipe.crop.value == recipe.size.value
    crop = {
        "size": [height, width],
        "scale": [0.5, 1.0] if whole else [0.25, 1.0],
        "ratio": [round(aspect * 0.8, 2), round(aspect * 1.33, 2)],
        "cropping_mode": "resample",
    }
    lines += [
        "    train_augmentations:",
        "      - class_path: kornia.augmentation.RandomHorizontalFlip",
        f"      - class_path: kornia.augmentation.RandomResizedCrop  # {recipe.crop.why}",
        f"        init_args: {json.dumps(crop)}",
        "      - class_path: kornia.augmentation.RandomAffine",
        '        init_args: {"degrees": 10.0, "p": 0.3}',
        "      - class_path: kornia.augmentation.ColorJitter",
        '        init_args: {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "p": 0.5, "order": [0, 1, 2]}',
    ]
    return "\n".join(lines) + "\n"
