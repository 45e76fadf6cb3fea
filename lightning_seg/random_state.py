"""The global random generators' states as plain data, for checkpoints that resume exactly.

Kornia draws augmentation parameters, and dropout its masks, from the global generators, so a resumed run
repeats the uninterrupted one only if their states at the checkpoint come back. Lightning has a helper
(``lightning.fabric.utilities.seed._collect_rng_states``) but it stores NumPy's state as an ``ndarray``,
which ``torch.load(weights_only=True)`` refuses; here every state is a tensor, an int or a tuple of them.
"""

from __future__ import annotations

import random
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


def restore(state: dict[str, Any]) -> None:
    """Set the generators to a state from :func:`capture` (a CUDA state only where CUDA is in use)."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
