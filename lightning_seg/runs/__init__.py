"""Run folders: one per training run, held by one process, resumed on purpose, with evaluations beside it
(:mod:`.folders`); the trainer's run folder while it runs (:mod:`.log_dir`); W&B runs in those folders
(:mod:`.wandb`)."""

from lightning_seg.runs.folders import (
    LOCK_NAME,
    NUMBERED_LOGGERS,
    RUN_FOLDER_ENV,
    WANDB_LOGGER,
    RunLock,
    check_resume,
    claim_record_folder,
    claim_training_folder,
    finish,
    folder_arguments,
    is_run_folder,
    is_wandb,
    last_checkpoint,
    numbered_logger,
    pinned_version,
    resolve_checkpoint,
    run_of_checkpoint,
)

__all__ = [
    "LOCK_NAME",
    "NUMBERED_LOGGERS",
    "RUN_FOLDER_ENV",
    "WANDB_LOGGER",
    "RunLock",
    "check_resume",
    "claim_record_folder",
    "claim_training_folder",
    "finish",
    "folder_arguments",
    "is_run_folder",
    "is_wandb",
    "last_checkpoint",
    "numbered_logger",
    "pinned_version",
    "resolve_checkpoint",
    "run_of_checkpoint",
]
