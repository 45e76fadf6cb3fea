"""The one place a ``.ckpt`` file is opened, and the check that its weights fit a model: each failure is one
``ConfigError`` line naming the file and what is wrong with it."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_seg.errors import ConfigError, short_path, truncate

_last_read: tuple[tuple[str, int, int, bool], dict[str, Any]] | None = None
"""The last checkpoint read, keyed by its resolved path, mtime, size and safe loading. A command reads its
checkpoint once: the CLI's checks, Lightning's restore (through :class:`~.atomic_io.AtomicCheckpointIO`) and
the command itself (export's bundle, the split check) all get this one dict. Memory-mapped, so keeping it
costs no memory for the tensors; :func:`forget_checkpoint` drops it when the command ends."""


def _cache_key(file: Path, weights_only: bool | None) -> tuple[str, int, int, bool]:
    stat = file.stat()
    return str(file.resolve()), stat.st_mtime_ns, stat.st_size, weights_only is not False


def cached_checkpoint(path: str | Path, weights_only: bool | None = True) -> dict[str, Any] | None:
    """The checkpoint :func:`read_checkpoint` last read, if it is ``path`` unchanged on disk and was read as
    safely (or more safely) than asked; else None."""
    if _last_read is None or "://" in str(path):
        return None
    file = Path(path).expanduser()
    try:
        key = _cache_key(file, weights_only)
    except OSError:
        return None
    (name, mtime, size, safe), checkpoint = _last_read
    same_file = (name, mtime, size) == key[:3]
    return _copy(checkpoint) if same_file and (safe or not key[3]) else None


def _copy(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A copy each consumer may change (a module's ``on_load_checkpoint`` drops keys of heads it does not
    build) without changing what the next one reads; the tensors are shared, not copied."""
    return {**checkpoint, "state_dict": dict(checkpoint["state_dict"])}


def forget_checkpoint() -> None:
    """Drop the cached checkpoint (the end of a command)."""
    global _last_read
    _last_read = None


def read_checkpoint(
    path: str, weights_only: bool | None = True, option: str = "--ckpt_path", cache: bool = False
) -> dict[str, Any]:
    """Load a checkpoint (memory-mapped: tensors are read only when used) or say in one line why not; the
    same file read again, unchanged, is the same dict (see :data:`_last_read`).

    ``weights_only``: as the run's ``--weights_only`` (None, Lightning's default, means True here).
    ``option``: what the message calls the path (the CLI option, or "checkpoint" for the Python API).
    ``cache``: keep it for the rest of the command (the CLI's commands; :func:`forget_checkpoint` at their
    end); the Python API reads without keeping anything."""
    global _last_read
    cached = cached_checkpoint(path, weights_only)
    if cached is not None:
        return cached
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
    if not cache:
        return checkpoint
    _last_read = (_cache_key(file, weights_only), checkpoint)
    return _copy(checkpoint)


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
