"""Checks of a run's input before it starts, each ending in one ``ConfigError`` line that names the key or
file: config files, values torch or Lightning would reject only mid-run, output folders, checkpoint files,
whether a checkpoint fits the model, and whether the optimizer accepts its arguments."""

from __future__ import annotations

import inspect
import os
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace

from lightning_seg.errors import ConfigError, short_path, truncate
from lightning_seg.pretrained import head_named_pretrained

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


def check_config_files(args: Sequence[str]) -> None:
    """Every ``--config`` file is a readable YAML mapping (else one line with the file, line and column)."""
    for index, arg in enumerate(args):
        if arg in ("--config", "-c") and index + 1 < len(args):
            check_config_file(args[index + 1])
        elif arg.startswith("--config="):
            check_config_file(arg.split("=", 1)[1])


def check_config_file(value: str) -> None:
    path = Path(value).expanduser()
    if not path.exists():
        return  # a missing file (jsonargparse says so in one line) or a YAML string given inline
    shown = short_path(value)
    if path.is_dir():
        raise ConfigError(f"--config {shown}: is a folder, not a YAML file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--config {shown}: cannot be read ({error.strerror})") from error
    if b"\0" in data:
        raise ConfigError(f"--config {shown}: a binary file, not a YAML config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"--config {shown}: not UTF-8 text (bad byte at offset {error.start}), not a YAML config"
        ) from error
    try:
        content = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context = error.context_mark
        opened = (
            f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
            if error.context and context is not None and error.problem and context is not mark
            else ""
        )
        raise ConfigError(
            truncate(f"--config {shown}: YAML syntax error{where}: {error.problem or error.context}{opened}")
        ) from error
    except yaml.YAMLError as error:
        raise ConfigError(truncate(f"--config {shown}: not valid YAML ({error})")) from error
    if content is not None and not isinstance(content, dict):
        kind = {list: "a list", str: "a string"}.get(type(content), f"a {type(content).__name__}")
        raise ConfigError(
            f"--config {shown}: the top level must be a mapping (trainer:, model:, data:), not {kind}"
        )


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


def read_checkpoint(
    path: str, weights_only: bool | None = True, option: str = "--ckpt_path"
) -> dict[str, Any]:
    """Load a checkpoint (memory-mapped: tensors are read only when used) or say in one line why not.

    ``weights_only``: as the run's ``--weights_only`` (None, Lightning's default, means True here).
    ``option``: what the message calls the path (the CLI option, or "checkpoint" for the Python API)."""
    file = Path(path).expanduser()
    shown = short_path(path)
    if not file.exists():
        raise ConfigError(f"{option} {shown}: no such file")
    if file.is_dir():
        # a few levels only: a folder like ~ must not be walked whole for a hint
        patterns = ("last.ckpt", "checkpoints/last.ckpt", "*/checkpoints/last.ckpt", "*.ckpt", "*/*.ckpt")
        found = next((match for pattern in patterns for match in sorted(file.glob(pattern))), None)
        hint = f"; e.g. {short_path(found, 60)}" if found else ""
        raise ConfigError(truncate(f"{option} {shown}: is a folder, not a checkpoint file{hint}"))
    if file.stat().st_size == 0:
        raise ConfigError(f"{option} {shown}: empty file (0 bytes), not a checkpoint")
    try:
        checkpoint = torch.load(
            file, map_location="cpu", weights_only=weights_only is not False, mmap=zipfile.is_zipfile(file)
        )
    except PermissionError as error:
        raise ConfigError(f"{option} {shown}: permission denied") from error
    except pickle.UnpicklingError as error:
        # a well-formed file holding Python objects torch will not unpickle safely, or garbage bytes
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if unsafe:
            raise ConfigError(
                f"{option} {shown}: holds a Python object ({unsafe.group(1)}) that safe loading refuses; "
                "if you trust the file, pass "
                + ("--weights_only false" if option.startswith("--") else "weights_only=False")
            ) from error
        raise ConfigError(f"{option} {shown}: not a readable checkpoint (truncated or corrupt)") from error
    except Exception as error:  # zip, EOF, pickle and OS errors of a damaged file
        raise ConfigError(f"{option} {shown}: not a readable checkpoint (truncated or corrupt)") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(
            f"{option} {shown}: not a Lightning checkpoint (no state_dict; bare saved weights?)"
        )
    return checkpoint


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape) or "scalar"


def _trained_net(ckpt_path: str) -> str | None:
    """The net class_path in the run's ``config.yaml`` beside ``<run>/checkpoints/x.ckpt``, if any."""
    config = Path(ckpt_path).parent.parent / "config.yaml"
    try:
        net = yaml.safe_load(config.read_text())["model"]["init_args"]["net"]
        return str(net["class_path"] if isinstance(net, dict) else net)
    except Exception:  # only a detail of the message
        return None


def check_checkpoint_fits(ckpt_path: str, state: dict[str, Any], model: torch.nn.Module) -> None:
    """The checkpoint's weights load into ``model`` (strictly, as Lightning loads them), else one line
    saying how they differ: the number of classes, or the net."""
    own = model.state_dict()
    unbuilt = getattr(model, "unbuilt_head_keys", None)
    dropped = set(unbuilt(state)) if callable(unbuilt) else set()  # left out when loading (see the module)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and k not in dropped]
    resized = [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or resized):
        return
    shown = short_path(ckpt_path, 70)
    num_classes = getattr(model, "num_classes", None)
    if not missing and not unexpected and all(c[1:] == o[1:] and c and o for _, c, o in resized):
        heads = [c[0] for _, c, o in resized if o[0] == num_classes]
        if heads:
            raise ConfigError(
                truncate(
                    f"checkpoint {shown} has {heads[0]} classes, the data has {num_classes}; "
                    "use the data it was trained on"
                )
            )
    # counts of each kind of difference; the first kind with an example
    details = []
    if missing:
        details.append(f"{len(missing)} keys missing" + ("" if details else f" ({missing[0]}, ...)"))
    if unexpected:
        details.append(f"{len(unexpected)} unexpected" + ("" if missing else f" ({unexpected[0]}, ...)"))
    if resized:
        key, theirs, ours = resized[0]
        example = f" ({key} {_shape(theirs)} vs {_shape(ours)})" if not details else ""
        details.append(f"{len(resized)} of another shape{example}")
    trained = _trained_net(ckpt_path)
    net = getattr(model, "net", None)
    ours_name = type(net).__name__ if net is not None else ""
    which = (
        f"a {trained.rsplit('.', 1)[-1]}, not a {ours_name}"
        if trained and ours_name and trained.rsplit(".", 1)[-1] != ours_name
        else "another net"
    )
    raise ConfigError(truncate(f"checkpoint {shown} was trained with {which}: {', '.join(details)}"))


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
