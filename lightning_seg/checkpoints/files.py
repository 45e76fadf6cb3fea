"""Checkpoint files that exist, and weights that are finite: what a run may point a user at."""

from __future__ import annotations

from pathlib import Path

import torch


def written_checkpoint(*paths: str | None) -> str | None:
    """The first of ``paths`` that is a file on disk. Lightning names a checkpoint (``last_model_path``,
    ``best_model_path``) before writing it, so a name alone does not say the file exists."""
    return next((path for path in paths if path and Path(path).is_file()), None)


def nonfinite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` holding a NaN or an infinity
    (one host read for the whole module)."""
    named = [(n, t) for n, t in module.state_dict().items() if t.is_floating_point() and t.numel()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]
