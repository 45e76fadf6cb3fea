"""The global random generators' states as plain data, for checkpoints that resume exactly.

Kornia draws augmentation parameters, and dropout its masks, from the global generators, so a resumed run
repeats the uninterrupted one only if their states at the checkpoint come back. Lightning has a helper
(``lightning.fabric.utilities.seed._collect_rng_states``) but it stores NumPy's state as an ``ndarray``,
which ``torch.load(weights_only=True)`` refuses; here every state is a tensor, an int or a tuple of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """The states of torch's CPU generator and the current CUDA device's, NumPy's and Python's
    (weights_only-loadable): ``{"torch": uint8 tensor, "cuda"?: uint8 tensor, "numpy": tuple, "python": tuple}``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's: one device per process
    return state


def capture_per_rank(
    world_size: int, all_gather: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> dict[str, Any]:
    """:func:`capture`, and under DDP each rank's torch and CUDA states (``<key>_per_rank``, one row per
    rank: Kornia's and dropout's draws differ per rank), gathered on ``device`` (the process group's) since
    only rank 0 writes the file. A collective: every rank calls it."""
    state = capture()
    if world_size > 1:
        for key in ("torch", "cuda"):
            if key in state:
                state[f"{key}_per_rank"] = all_gather(state[key].to(device)).cpu()
    return state


def restore(state: dict[str, Any]) -> None:
    """Set the generators to a state from :func:`capture` (a CUDA state only where CUDA is in use)."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def restore_for_rank(state: dict[str, Any], rank: int, world_size: int) -> None:
    """Set this process's generators to a checkpoint's state. Under DDP the checkpoint holds each rank's
    torch and CUDA states (``<key>_per_rank``, one row per rank); with another number of processes than it
    was saved with, nothing is restored (each rank keeps its own seeding: the draws cannot repeat anyway)."""
    saved_world = len(state["torch_per_rank"]) if "torch_per_rank" in state else 1
    if saved_world != world_size:
        return
    state = dict(state)
    for key in ("torch", "cuda"):
        per_rank = state.get(f"{key}_per_rank")
        if per_rank is not None:
            # a copy, not a view: torch.set_rng_state reads a view with a storage offset out of bounds (a
            # segmentation fault with torch 2.15)
            state[key] = per_rank[rank].clone()
    restore(state)
