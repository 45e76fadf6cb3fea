"""Weights & Biases runs: a folder per run, the same W&B run on resume, and offline by itself.

Lightning's ``WandbLogger`` writes into its ``save_dir``, and ``trainer.log_dir`` *is* that ``save_dir``: with
one shared ``runs/`` every run's ``config.yaml``, ``summary.json`` and ``samples/`` overwrote the last one's,
and checkpoints went to ``<save_dir>/<project>/<run id>/``, where ``--ckpt_path last`` did not look. Here the
CLI gives each W&B run the same kind of folder a TensorBoard run has (:mod:`lightning_seg.runs`):

* ``fit`` points ``save_dir`` at ``<save_dir>/<project>/version_N`` (W&B's own files in its ``wandb/``) and
  gives the run an id kept in ``wandb_id.txt`` there, so ``fit --ckpt_path last`` resumes the folder *and*
  the W&B run (``resume="allow"``, Lightning's default);
* an evaluation is a W&B run of its own, in its record folder ``<run>/<stage>/<date-time>``;
* without credentials (``WANDB_API_KEY``, ``wandb login``'s ``.netrc``) or without a reachable server the run
  goes offline before W&B starts, so it never prompts for a key and never waits on a network; one line says
  so and how to sync later.
"""

from __future__ import annotations

import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jsonargparse import Namespace

from lightning_seg.errors import ConfigError, short_path, truncate
from lightning_seg.utils.network import reachable

RUN_ID_FILE = "wandb_id.txt"
DEFAULT_SERVER = "https://api.wandb.ai"
_MODE_BEFORE: dict[str, str | None] = {}
"""``WANDB_MODE`` before an offline run of this process changed it, restored when the command ends."""


def project_of(init_args: Namespace) -> str:
    """The W&B project, as ``WandbLogger`` resolves it (its folder name under ``save_dir``)."""
    return init_args.get("project") or os.environ.get("WANDB_PROJECT") or "lightning_logs"


def point_at(init_args: Namespace, folder: Path, training: bool, announce: bool) -> None:
    """Make a ``WandbLogger``'s config write into ``folder``.

    Args:
        init_args: the logger's ``init_args`` (changed in place).
        folder: the run folder (``fit``) or the record folder of an evaluation.
        training: keep one W&B run id per run folder (``wandb_id.txt``), so a resume continues it; an
            evaluation starts a W&B run of its own.
        announce: rank zero's call (once per command): decide whether W&B must be offline, and say so.
    """
    init_args.save_dir = str(folder)
    # the display name says which folder a W&B run is: <name>/version_N, <name>/version_N/test/<date-time>
    # (``name`` is the experiment, as TensorBoard's; W&B would otherwise name every run alike)
    tail = folder.name if training else "/".join(folder.parts[-3:])
    init_args.name = "/".join(part for part in (init_args.get("name"), tail) if part)
    if training:
        init_args.id = run_id(folder, pinned_id(init_args))
    else:
        init_args.id = None
    init_args.version = None  # WandbLogger takes ``version or id``: one is enough
    if not announce or os.environ.get("WANDB_MODE", "").lower() == "disabled":
        return  # the other DDP ranks never start a W&B run: no credentials read, no connection tried
    reason = offline_reason(init_args)
    if reason is None:
        return
    _MODE_BEFORE.setdefault("WANDB_MODE", os.environ.get("WANDB_MODE"))  # WandbLogger sets it when offline
    init_args.offline = True
    if init_args.get("log_model"):
        # WandbLogger refuses log_model offline; the checkpoints stay in the run folder
        init_args.log_model = False
        reason += "; checkpoints are not uploaded (log_model needs a connection)"
    if announce:
        print(
            f"lightning-seg: W&B is offline ({reason}); the run is kept in {folder / 'wandb'}, "
            f"sync it later with: wandb sync {folder / 'wandb'}/offline-run-*",
            file=sys.stderr,
        )


def pinned_id(init_args: Namespace) -> str | None:
    """The W&B run id a config pins (``id``, or ``version``, which ``WandbLogger`` reads as an id)."""
    pinned = init_args.get("id") or init_args.get("version")
    return str(pinned) if pinned else None


def check_pinned_id(init_args: Namespace, run_root: Path, resumed: Path | None) -> None:
    """Refuse a pinned W&B id that names another run: a second run folder under it would append to that W&B
    run (``resume="allow"``), and a resumed run keeps the id it was given."""
    pinned = pinned_id(init_args)
    if pinned is None:
        return
    if resumed is not None:
        kept = resumed / RUN_ID_FILE
        kept_id = kept.read_text().strip() if kept.is_file() else None
        if kept_id and kept_id != pinned:
            raise ConfigError(
                f"trainer.logger.init_args.id: {short_path(resumed)} is W&B run {kept_id}, not {pinned}; "
                "leave the id null to resume it"
            )
        return
    for path in sorted(run_root.glob(f"*/{RUN_ID_FILE}")):
        if path.read_text().strip() == pinned:
            raise ConfigError(
                truncate(
                    f"trainer.logger.init_args.id: W&B run {pinned} is the run in {short_path(path.parent)}; "
                    f"resume it with --ckpt_path {short_path(path.parent)}, or set the id to null for a new run",
                    240,
                )
            )


def run_id(folder: Path, pinned: str | None) -> str:
    """The W&B run id of a run folder: the config's when it pins one, else the one kept in the folder, else
    a new one (8 characters of [a-z0-9], as W&B makes them), kept for resumes."""
    path = folder / RUN_ID_FILE
    kept = path.read_text().strip() if path.is_file() else None
    chosen = str(pinned) if pinned else kept
    if not chosen:
        alphabet = string.ascii_lowercase + string.digits
        chosen = "".join(secrets.choice(alphabet) for _ in range(8))
    if chosen != kept:
        path.write_text(chosen + "\n")
    return chosen


def offline_reason(init_args: Namespace) -> str | None:
    """Why this run must be offline, or None when W&B can go online."""
    if init_args.get("offline"):
        return "offline: true in the config"
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun"):
        return f"WANDB_MODE={mode}"
    server = server_url()
    if not _has_credentials(server):
        return "no API key: set WANDB_API_KEY or run `wandb login`"
    if not reachable(server):
        return f"{urlparse(server).hostname} cannot be reached"
    return None


def server_url() -> str:
    """The W&B server, as W&B finds it: ``WANDB_BASE_URL``, else the ``base_url`` that ``wandb login --host``
    keeps in W&B's settings file (``$WANDB_CONFIG_DIR/settings``, ``~/.config/wandb/settings``), else W&B's."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    import configparser

    folder = os.environ.get("WANDB_CONFIG_DIR") or str(Path.home() / ".config" / "wandb")
    settings = configparser.ConfigParser()
    try:
        settings.read(Path(folder) / "settings")
        return settings.get("default", "base_url", fallback=None) or DEFAULT_SERVER
    except (OSError, configparser.Error):
        return DEFAULT_SERVER


def _has_credentials(server: str) -> bool:
    """An API key in the environment or in ``.netrc`` for the server's ``host[:port]`` (where ``wandb login``
    writes it)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        return bool(read_netrc_auth(host=server))
    except ImportError:  # another wandb version: read .netrc as it does
        import netrc

        path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
        try:
            return netrc.netrc(path).authenticators(urlparse(server).netloc) is not None
        except (OSError, netrc.NetrcParseError):
            return False
    except Exception:  # a malformed .netrc: W&B would fail on it too
        return False


def finish_runs(trainer: Any, failed: bool) -> None:
    """End the W&B runs a command started, so their files are complete when it returns and a later command
    in the same process starts a run of its own (``WandbLogger`` reuses a run still open)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in getattr(trainer, "loggers", None) or []:
        experiment = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish(exit_code=1 if failed else 0)
            logger._experiment = None
    if "WANDB_MODE" in _MODE_BEFORE:  # WandbLogger sets WANDB_MODE=dryrun for an offline run: undo it
        before = _MODE_BEFORE.pop("WANDB_MODE")
        if before is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = before
