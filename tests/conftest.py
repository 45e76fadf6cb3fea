"""Shared fixtures: tiny CLI runs on generated data, CPU only, nothing downloaded. Helper functions live in
helpers.py (imported by the test modules as ``helpers``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.register_assert_rewrite("helpers", "data_trees")

from helpers import TinyRun, make_checkpoint  # noqa: E402  (after the rewrite registration)

os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def run_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def tiny_run_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of one tiny default fit (``tiny_args``, one epoch), trained once a session. Tests take
    their own copy through ``tiny_run``; this one is never written to."""
    last = make_checkpoint(tmp_path_factory.mktemp("tiny_run") / "runs")
    return last.parent.parent


@pytest.fixture
def tiny_run(tiny_run_once: Path, run_root: Path) -> TinyRun:
    """A copy of the session's tiny trained run as ``run_root/default/version_0``, for the tests that need a
    checkpoint of the default config, not the fit itself: what they write lands beside their own copy."""
    run = run_root / "default" / "version_0"
    shutil.copytree(tiny_run_once, run)
    (best,) = [path for path in (run / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt"]
    return TinyRun(run, best, run / "checkpoints" / "last.ckpt")
