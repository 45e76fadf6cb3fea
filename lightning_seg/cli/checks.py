"""Checks of a run's input before it starts, each ending in one ``ConfigError`` line that names the key or
file: config files, values torch or Lightning would reject only mid-run, output folders, and whether the
optimizer accepts its arguments (checkpoint files: :mod:`lightning_seg.checkpoints.read`)."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from lightning_seg.cli.pretrained import head_named_pretrained
from lightning_seg.errors import ConfigError, short_path, truncate
from lightning_seg.models.classifier import ImageClassifier

UNTRAINED_OPTION = "allow_untrained"
"""``--allow_untrained true``: evaluate or predict without ``--ckpt_path``, with untrained weights, on purpose."""
EVAL_SUBCOMMANDS = ("validate", "test", "predict", "tune", "submit", "export", "attack")
SPECIAL_CKPT_PATHS = ("last", "best", "hpc")
"""``--ckpt_path`` values Lightning resolves itself (besides ``registry``/``registry:...``)."""


def trainer_error_line(text: str, arguments: Sequence[str] = ()) -> str:
    """``trainer.<argument>: <Lightning's message>`` for an error raised while building the Trainer."""
    text = " ".join(text.split())
    named = re.search(r"`(\w+)(=[^`]*)?`", text)
    if named is None:
        mentioned = next((w for w in re.findall(r"\w+", text) if w in arguments and w != "self"), None)
        return truncate(f"trainer.{mentioned}: {text}" if mentioned else f"trainer: {text}")
    key = f"trainer.{named.group(1)}"
    if named.group(2) is None:  # `max_epochs` must be ... → trainer.max_epochs must be ...
        return truncate(text[: named.start()] + key + text[named.end() :])
    return truncate(f"{key}: {text}")


def check_untrained(subcommand: str, config: Namespace) -> None:
    """Evaluating or predicting without a checkpoint uses random weights: only when asked for, or when the net
    names pretrained weights with an output head (:func:`check_untrained_head` checks that head once built)."""
    if (
        subcommand in EVAL_SUBCOMMANDS
        and not config.get("ckpt_path")
        and not config.get(UNTRAINED_OPTION)
        and not head_named_pretrained(config)  # a zero-shot baseline: checked again once built
    ):
        raise ConfigError(
            f"{subcommand} without --ckpt_path would use untrained weights; pass --ckpt_path <checkpoint> "
            f"(or --{UNTRAINED_OPTION} true to do so on purpose)"
        )


def check_untrained_head(subcommand: str, config: Namespace, net: Any) -> None:
    """A zero-shot evaluation (no checkpoint, a net naming pretrained weights with a head) whose net replaced
    that head, because the data's classes differ from the weights', would score random weights."""
    if subcommand in EVAL_SUBCOMMANDS and not config.get("ckpt_path") and not config.get(UNTRAINED_OPTION):
        if isinstance(net, ImageClassifier):  # its label head is always new: never pretrained for the data
            raise ConfigError(
                f"{subcommand} without --ckpt_path: the image classifier's label head is new (untrained); fit "
                f"first, or pass --{UNTRAINED_OPTION} true"
            )
        if not getattr(net, "head_is_pretrained", False):
            raise ConfigError(
                f"{subcommand} without --ckpt_path: {type(net).__name__} replaced the pretrained head (the "
                "data's classes differ from the weights'), so it is untrained; fit first, map the classes "
                f"(TransformersNet class_mapping), or pass --{UNTRAINED_OPTION} true"
            )


def _init_args(config: Namespace, key: str) -> Namespace:
    part = config.get(key)
    init_args = part.get("init_args") if isinstance(part, Namespace) else None
    return init_args if isinstance(init_args, Namespace) else Namespace()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config_values(config: Namespace) -> None:
    """Trainer values Lightning does not check when it is built (it fails on them mid-run: a division by
    zero, an empty loop); ``max_epochs`` and ``max_steps`` it checks itself (see ``trainer_error_line``)."""
    trainer = config.get("trainer") or Namespace()
    limits = {  # key: (least value, how to say it)
        "accumulate_grad_batches": (1, ">= 1"),
        "check_val_every_n_epoch": (1, ">= 1 (or null: validate by steps)"),
    }
    for name, (least, allowed) in limits.items():
        value = trainer.get(name)
        if _is_int(value) and value < least:
            raise ConfigError(f"trainer.{name} must be {allowed}, got {value}")


def output_folder(config: Namespace) -> tuple[str, str | None]:
    """The key and value of the folder a run writes to: the logger's ``save_dir`` (logs, config.yaml,
    checkpoints), else ``default_root_dir``, which Lightning uses only when no logger says where to write."""
    trainer = config.get("trainer") or Namespace()
    save_dir = (
        _init_args(trainer, "logger").get("save_dir")
        if isinstance(trainer.get("logger"), Namespace)
        else None
    )
    if save_dir:
        return "trainer.logger.init_args.save_dir", str(save_dir)
    folder = trainer.get("default_root_dir")
    return "trainer.default_root_dir", str(folder) if folder else None


def check_output_folders(config: Namespace) -> None:
    """The run's output folder (:func:`output_folder`) can be created and written (checked on the nearest
    existing parent)."""
    key, folder = output_folder(config)
    if not folder or "://" in folder:
        return
    existing = Path(folder).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: {short_path(existing)} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            truncate(
                f"{key}: cannot write to {short_path(existing)} (read-only); pass --{key} <a writable folder>"
            )
        )


def resolved_by_lightning(ckpt_path: str) -> bool:
    """Names Lightning resolves itself (``last``, ``best``, the model registry) and remote or URL paths it
    opens through fsspec (``s3://``, ``file://``): not checked here."""
    return (
        ckpt_path in SPECIAL_CKPT_PATHS
        or ckpt_path == "registry"
        or ckpt_path.startswith("registry:")
        or "://" in ckpt_path
    )


_OPTIMIZER_WORDS = {"learning rate": "lr", "epsilon": "eps", "beta": "betas"}


def _builder_class(builder: Any) -> str:
    """The class a jsonargparse callable builds (a ``partial`` around it), for messages."""
    for candidate in (*getattr(builder, "args", ()), getattr(builder, "func", builder)):
        if inspect.isclass(candidate):
            return candidate.__name__
    return getattr(getattr(builder, "func", builder), "__name__", type(builder).__name__)


def _argument_error(part: str, builder: Any, error: Exception) -> str:
    text = str(error)
    names = list(getattr(builder, "keywords", {}) or {})
    argument = next((n for n in names if re.search(rf"\b{re.escape(n)}\b", text)), None)
    argument = argument or next((n for w, n in _OPTIMIZER_WORDS.items() if w in text.lower()), None)
    key = f"model.init_args.{part}" + (f".init_args.{argument}" if argument else "")
    return truncate(f"{key}: {text} ({_builder_class(builder)})")


def check_optimizer(model: Any) -> None:
    """Build the optimizer and scheduler once on a stand-in parameter, so that an argument torch rejects
    (a negative learning rate) is reported with its config key before training, not as a traceback."""
    builder = getattr(model, "optimizer_builder", None)
    if builder is None:
        return
    try:
        optimizer = builder([torch.nn.Parameter(torch.zeros(1))])
    except ValueError as error:
        raise ConfigError(_argument_error("optimizer", builder, error)) from error
    except Exception:  # a probe only; the real call reports anything else
        return
    scheduler = getattr(model, "scheduler_builder", None)
    if scheduler is None:
        return
    probe = model.scheduler_with_total_steps(100)[0]  # as configure_optimizers fills in a null total_steps
    try:
        probe(optimizer)
    except ValueError as error:
        raise ConfigError(_argument_error("lr_scheduler", scheduler, error)) from error
    except Exception:
        return
