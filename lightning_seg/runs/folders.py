"""Run folders: one per training run, held by one process, resumed on purpose, with evaluations beside it.

For loggers that number their runs (TensorBoard, CSV: ``<save_dir>/<name>/version_N``):

* ``fit`` claims a new ``version_N`` folder atomically (two runs started at once get two folders) and holds
  it with a lock file (``.lock``: an exclusive ``flock`` the kernel releases when the process dies, and its
  process id for the message), so no second process writes into a run that is training.
* ``fit --ckpt_path last`` resumes the newest run of that name that no live process holds; ``--ckpt_path
  <run folder>`` resumes that run; a checkpoint file inside a run resumes in its folder. A pinned
  ``version`` whose folder already holds a run is refused instead of being overwritten.
* ``validate``/``test``/``predict`` write their own record (config.yaml, summary.json, logs, predictions) in
  a new ``<run>/<stage>/<date-time>/`` folder of the checkpoint's run (``<save_dir>/<name>/<stage>/...``
  without one), never a new ``version_N`` and never over the training run's record.

Weights & Biases runs get the same folders (``<save_dir>/<project>/version_N``, the logger's ``save_dir``
pointed at it, so ``config.yaml``, ``checkpoints/``, ``summary.json`` and W&B's own ``wandb/`` files sit
together); a resumed run continues its W&B run id (:mod:`lightning_seg.runs.wandb`).

Under DDP, Lightning starts ranks 1.. by re-running the command; they take rank 0's folder from
:data:`RUN_FOLDER_ENV` instead of claiming their own.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

import lightning_seg.runs.wandb as wandb_runs
from lightning_seg.errors import ConfigError, NothingToDo, short_path, truncate

RUN_FOLDER_ENV = "LIGHTNING_SEG_RUN_FOLDER"
"""``<pid of rank 0>:<folder>``, read by the processes rank 0 starts."""

NUMBERED_LOGGERS = ("TensorBoardLogger", "CSVLogger")
WANDB_LOGGER = "WandbLogger"
LOCK_NAME = ".lock"


# ------------------------------------------------------------------------------------------- loggers
def _logger_kind(config: Namespace) -> str | None:
    logger = config.trainer.get("logger") if config.get("trainer") else None
    if not isinstance(logger, Namespace):
        return None
    return str(logger.get("class_path", "")).rpartition(".")[2]


def is_wandb(config: Namespace) -> bool:
    """Whether the command logs to Weights & Biases (Lightning's ``WandbLogger``)."""
    return _logger_kind(config) == WANDB_LOGGER


def numbered_logger(config: Namespace) -> tuple[Namespace, Path] | None:
    """The init args and the folder of numbered runs of a logger that writes locally: ``save_dir/name`` of
    TensorBoard and CSV (which number their own runs), ``save_dir/project`` of W&B (whose runs get the same
    ``version_N`` folders here, see :mod:`lightning_seg.runs.wandb`)."""
    kind = _logger_kind(config)
    if kind not in (*NUMBERED_LOGGERS, WANDB_LOGGER):
        return None
    init_args = config.trainer.logger.get("init_args")
    if init_args is None or init_args.get("save_dir") is None or "://" in str(init_args.save_dir):
        return None
    if kind == WANDB_LOGGER:
        return init_args, Path(init_args.save_dir) / wandb_runs.project_of(init_args)
    return init_args, Path(init_args.save_dir) / (init_args.get("name") or "")


def pinned_version(config: Namespace, init_args: Namespace) -> str | None:
    """The run folder a config pins (TensorBoard/CSV ``version``); a W&B ``version`` is a run id instead."""
    return None if is_wandb(config) else init_args.get("version")


def is_run_folder(folder: Path) -> bool:
    """Whether a training run wrote into ``folder`` (its config record or its checkpoints)."""
    return (folder / "config.yaml").is_file() or (folder / "checkpoints").is_dir()


def last_checkpoint(run: Path) -> Path:
    """Where a run's ``last.ckpt`` lives: ``<run>/checkpoints/last.ckpt``."""
    return run / "checkpoints" / "last.ckpt"


def run_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """``<run>`` of a checkpoint at ``<run>/checkpoints/<file>.ckpt``, else None."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


# ---------------------------------------------------------------------------------------------- lock
class RunLock:
    """An exclusive lock on a run folder for this process's lifetime (``<run>/.lock``).

    ``flock`` rather than the file's existence: the kernel drops it when the process dies, even by
    ``kill -9``, so a crashed run never blocks its own resume. The file holds the process id of the holder
    for messages, and is emptied (not deleted) when it lets go.
    """

    _held: dict[Path, int] = {}  # folder → open file descriptor, for the life of the process

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.path = self.folder / LOCK_NAME

    def holder(self) -> int | None:
        """The process id holding the lock, or None if no live process does."""
        if self.folder in self._held:
            return os.getpid()
        if not self.path.exists():
            return None
        try:
            handle = os.open(self.path, os.O_RDWR)
        except OSError:
            return None
        try:
            if _try_lock(handle):
                _unlock(handle)
                return None
            text = self.path.read_text().split()
            return int(text[0]) if text and text[0].isdigit() else -1  # -1: held, no id written yet
        finally:
            os.close(handle)

    def acquire(self, what: str) -> None:
        """Take the lock, or stop with one line naming the process that holds it."""
        if self.folder in self._held:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(handle):
            os.close(handle)
            pid = self.holder() or "?"  # it may just have ended
            raise ConfigError(
                truncate(
                    f"{short_path(self.folder)} is being trained by process {pid} ({LOCK_NAME}); {what}", 240
                )
            )
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        self._held[self.folder] = handle
        atexit.register(self.release)

    def release(self) -> None:
        handle = self._held.pop(self.folder, None)
        if handle is None:
            return
        # emptied, not deleted: a process waiting on this file's lock would otherwise lock a deleted file
        # while a third creates a new one (two holders)
        with contextlib.suppress(OSError):
            os.ftruncate(handle, 0)
        _unlock(handle)
        os.close(handle)


def _try_lock(handle: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no lock, as before
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: int) -> None:
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ rank handoff
def _folder_from_rank_zero() -> Path | None:
    """The folder rank 0 chose, in a process rank 0 started (None in rank 0 itself, and in any other
    program it starts: Lightning gives its ranks a ``LOCAL_RANK``)."""
    value = os.environ.get(RUN_FOLDER_ENV, "")
    pid, _, folder = value.partition(":")
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if pid.isdigit() and int(pid) == os.getppid() and folder and local_rank.isdigit() and int(local_rank) > 0:
        return Path(folder)
    return None


def _started_by_external_launcher() -> bool:
    """A rank other than 0 started by torchrun or SLURM: it cannot claim folders (rank 0 does)."""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    return rank.isdigit() and int(rank) > 0


def _hand_over(folder: Path) -> None:
    os.environ[RUN_FOLDER_ENV] = f"{os.getpid()}:{folder}"


def finish(folder: Path | None) -> None:
    """At the end of a command: release its run folder and stop handing it over."""
    if folder is not None:
        RunLock(folder).release()
    os.environ.pop(RUN_FOLDER_ENV, None)


# --------------------------------------------------------------------------------------- resuming
def resolve_checkpoint(config: Namespace, training: bool) -> None:
    """Turn ``--ckpt_path last`` into a file: the newest run's ``last.ckpt`` (for ``fit``: of a run no live
    process holds), the pinned ``version``'s, or without a numbered logger ``<default_root_dir>/checkpoints``'
    (where Lightning puts them then); and ``fit --ckpt_path <run folder>`` into that run's ``last.ckpt``."""
    ckpt_path = config.get("ckpt_path")
    if not ckpt_path:
        return
    found = numbered_logger(config)
    handed = _folder_from_rank_zero()
    if ckpt_path == "last":
        if training and handed is not None:
            config.ckpt_path = str(last_checkpoint(handed))  # the run rank 0 resumes (and holds)
        elif found is not None and pinned_version(config, found[0]) is None:
            config.ckpt_path = str(_newest_last(found[1], skip_busy=training))
        elif found is not None or config.trainer.get("logger") is False:
            folder = (
                found[1] / str(pinned_version(config, found[0]))
                if found is not None
                else Path(config.trainer.get("default_root_dir") or ".")
            )
            last = last_checkpoint(folder)
            if not last.is_file():
                raise ConfigError(
                    f"--ckpt_path last: no {short_path(last)} to {'resume' if training else 'evaluate'}"
                )
            config.ckpt_path = str(last)
    elif training and Path(ckpt_path).is_dir() and last_checkpoint(Path(ckpt_path)).is_file():
        config.ckpt_path = str(last_checkpoint(Path(ckpt_path)))


def _newest_last(run_root: Path, skip_busy: bool) -> Path:
    """The newest ``last.ckpt`` under ``run_root`` (with ``skip_busy``: of a run no live process holds)."""
    candidates = sorted(
        run_root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if not candidates:
        raise ConfigError(f"--ckpt_path last: no {run_root}/*/checkpoints/last.ckpt to resume from")
    busy = []
    for candidate in candidates:
        pid = RunLock(candidate.parent.parent).holder() if skip_busy else None
        if pid is None:
            return candidate
        busy.append(f"{candidate.parent.parent.name} (process {pid})")
    raise ConfigError(
        truncate(
            f"--ckpt_path last: every run under {short_path(run_root)} is training now: {', '.join(busy)}; "
            "pass --ckpt_path <run folder> to choose one when it stops",
            240,
        )
    )


# ---------------------------------------------------------------------------------- fit: the folder
def claim_training_folder(config: Namespace) -> Path | None:
    """Pick and hold the folder a ``fit`` writes to; sets the logger's ``version`` (None: not managed)."""
    found = numbered_logger(config)
    if found is None:
        return None
    init_args, run_root = found
    handed = _folder_from_rank_zero()
    if handed is not None:
        _point_logger(config, init_args, handed)
        return handed
    if _started_by_external_launcher():
        return None
    ckpt_path = config.get("ckpt_path")
    resumed_run = run_of_checkpoint(ckpt_path) if ckpt_path else None
    version = pinned_version(config, init_args)
    resumes_here = resumed_run is not None and resumed_run.parent.resolve() == run_root.resolve()
    if version is None and resumes_here:
        version = resumed_run.name  # a resumed run continues in its own folder
    if is_wandb(config):
        wandb_runs.check_pinned_id(init_args, run_root, resumed_run if resumes_here else None)
    if version is not None:
        folder = run_root / str(version)
        resuming = resumed_run is not None and resumed_run.resolve() == folder.resolve()
        if is_run_folder(folder) and not resuming:
            raise ConfigError(
                truncate(
                    f"trainer.logger.init_args.version: {short_path(folder)} already holds a run; resume it with "
                    f"--ckpt_path {short_path(folder)}, or set the version to null to start a new run",
                    240,
                )
            )
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = _new_numbered_folder(run_root)
    RunLock(folder).acquire("wait for it to finish, or start a new run without --ckpt_path")
    _point_logger(config, init_args, folder, announce=True)
    _hand_over(folder)
    return folder


def _point_logger(config: Namespace, init_args: Namespace, folder: Path, announce: bool = False) -> None:
    """Make the logger write a training run into ``folder``: TensorBoard/CSV by its ``version``; W&B by its
    ``save_dir`` (its files go to ``<folder>/wandb/``), with the run's W&B id (the same on every resume)."""
    if is_wandb(config):
        wandb_runs.point_at(init_args, folder, training=True, announce=announce)
    else:
        init_args.version = folder.name


def _new_numbered_folder(run_root: Path) -> Path:
    """Create ``run_root/version_N`` with the next free N; ``mkdir`` decides between concurrent runs."""
    run_root.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in run_root.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
    number = max(numbers, default=-1) + 1
    while True:
        folder = run_root / f"version_{number}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


# ------------------------------------------------------------------------------ evaluation records
def claim_record_folder(config: Namespace, stage: str) -> Path | None:
    """Point a ``validate``/``test``/``predict`` at a new ``<run>/<stage>/<date-time>`` folder."""
    found = numbered_logger(config)
    folder = _folder_from_rank_zero()
    if folder is None:
        if _started_by_external_launcher():
            return None
        ckpt_path = config.get("ckpt_path")
        base = run_of_checkpoint(ckpt_path) if ckpt_path and ckpt_path != "last" else None
        if base is None:
            base = found[1] if found is not None else Path(config.trainer.get("default_root_dir") or ".")
        folder = _new_timestamped_folder(base / stage)
        _hand_over(folder)
    if found is not None and is_wandb(config):
        wandb_runs.point_at(found[0], folder, training=False, announce=_folder_from_rank_zero() is None)
    elif found is not None:
        init_args = found[0]
        init_args.save_dir, init_args.name, init_args.version = str(folder.parent), "", folder.name
    config.trainer.default_root_dir = str(folder)
    return folder


def _new_timestamped_folder(parent: Path) -> Path:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            truncate(
                f"{short_path(parent)}: cannot create this command's record folder beside the checkpoint's run "
                f"({error.strerror}); copy the checkpoint into a writable folder",
                240,
            )
        ) from error
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in ("", *(f"-{i}" for i in range(2, 1000))):
        folder = parent / f"{stamp}{suffix}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"{short_path(parent)}: cannot create a new record folder")


def folder_arguments(config: Namespace) -> dict[str, Any]:
    """The arguments that say where a command writes, by dotted key, as the user gave them (the config
    record is saved with these, not with the folder the CLI chose)."""
    given: dict[str, Any] = {"trainer.default_root_dir": config.trainer.get("default_root_dir")}
    if numbered_logger(config) is not None:
        # W&B: the CLI may also set its run id and turn it offline
        keys = (
            ("save_dir", "name", "id", "version", "offline")
            if is_wandb(config)
            else ("save_dir", "name", "version")
        )
        for key in keys:
            given[f"trainer.logger.init_args.{key}"] = config.trainer.logger.init_args.get(key)
    return given


# ------------------------------------------------------------------------------ what a resume does
def check_resume(config: Namespace, checkpoint: dict[str, Any]) -> None:
    """Before the trainer reads any data: a resumed ``fit`` with nothing left to do says so
    (:class:`NothingToDo`), and one that would run a one-cycle schedule past its end is refused (it would
    fail after the sanity check with a traceback)."""

    trainer = config.trainer
    ckpt = short_path(config.ckpt_path)
    progress = _progress(checkpoint)
    if progress is None:
        return
    max_steps = trainer.get("max_steps")
    max_steps = None if max_steps in (None, -1) else int(max_steps)
    max_epochs = trainer.get("max_epochs")
    if max_epochs is None:
        max_epochs = 1000 if max_steps is None and trainer.get("max_time") is None else -1
    if max_steps is not None and progress["global_step"] >= max_steps:
        raise NothingToDo(
            f"{ckpt}: the run finished at step {progress['global_step']} (max_steps {max_steps}); "
            "nothing left to do (raise --trainer.max_steps to train on)"
        )
    if max_epochs > 0 and progress["epochs"] >= max_epochs and not progress["mid_epoch"]:
        raise NothingToDo(
            f"{ckpt}: the run finished its {progress['epochs']} epochs (max_epochs {max_epochs}); "
            "nothing left to do (raise --trainer.max_epochs to train on)"
        )
    limit = _max_time_seconds(trainer.get("max_time"))
    elapsed = _time_elapsed(checkpoint)
    if limit is not None and elapsed is not None and elapsed >= limit:
        raise NothingToDo(
            f"{ckpt}: the run was stopped by max_time after {dt.timedelta(seconds=round(elapsed))} "
            f"of training; nothing left to do (raise --trainer.max_time to train on)"
        )
    _check_one_cycle_length(config, checkpoint, progress, max_epochs, max_steps)


def _progress(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """Completed epochs, global step and whether the checkpoint was written inside an epoch; None for a
    checkpoint without Lightning's loop state (nothing can be said of it)."""
    loop = checkpoint.get("loops", {}).get("fit_loop")
    if not loop:
        return None
    epochs = loop.get("epoch_progress", {}).get("current", {})
    batches = loop.get("epoch_loop.batch_progress", {})
    started, processed = int(epochs.get("started", 0)), int(epochs.get("processed", 0))
    # a save at the end of a validation that closes an epoch comes before Lightning counts the epoch
    # as processed; its batch progress says the epoch's last batch was done
    epoch_done = started > processed and bool(batches.get("is_last_batch"))
    mid_epoch = started > processed and not epoch_done
    return {
        "epochs": processed + int(epoch_done),
        "global_step": int(checkpoint.get("global_step", 0)),
        "mid_epoch": mid_epoch,
        "batches_into_epoch": int(batches.get("current", {}).get("processed", 0)) if mid_epoch else 0,
    }


def _max_time_seconds(value: Any) -> float | None:
    if value is None:
        return None
    from lightning.pytorch.callbacks import Timer

    return Timer(duration=value)._duration  # Lightning's own parsing of "DD:HH:MM:SS", dicts and timedeltas


def _time_elapsed(checkpoint: dict[str, Any]) -> float | None:
    for key, state in checkpoint.get("callbacks", {}).items():
        if str(key).startswith("Timer") and isinstance(state, dict):
            return float(state.get("time_elapsed", {}).get("train", 0.0))
    return None


def _check_one_cycle_length(
    config: Namespace,
    checkpoint: dict[str, Any],
    progress: dict[str, Any],
    max_epochs: int,
    max_steps: int | None,
) -> None:
    """OneCycleLR restores its length from the checkpoint and raises once stepped past it."""
    schedules = [
        s for s in checkpoint.get("lr_schedulers", []) if isinstance(s, dict) and "_schedule_phases" in s
    ]
    if not schedules or "total_steps" not in schedules[0]:
        return
    total = int(schedules[0]["total_steps"])
    accumulate = int(config.trainer.get("accumulate_grad_batches") or 1)
    steps_in_epoch = progress["batches_into_epoch"] // accumulate
    per_epoch = (
        (progress["global_step"] - steps_in_epoch) / progress["epochs"] if progress["epochs"] else None
    )
    planned = [max_steps] if max_steps is not None else []
    if per_epoch and max_epochs > 0:
        planned.append(round(per_epoch * max_epochs))
    if not planned or min(planned) <= total:
        return
    fits = f"max_epochs {round(total / per_epoch)}" if per_epoch else f"max_steps {total}"
    raise ConfigError(
        truncate(
            f"--ckpt_path {short_path(config.ckpt_path)}: its OneCycleLR schedule ends at step {total} and this run "
            f"would go on to step {min(planned)}; a one-cycle schedule cannot be extended: keep {fits}, or start a new run",
            260,
        )
    )
