"""The package's layers (pyproject's ``[tool.importlinter]``): dependencies point one way, callbacks import no
sibling, no package has an import cycle, and the top level holds only its few files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_seg"
PYPROJECT = PACKAGE.parent / "pyproject.toml"
TOP_LEVEL = {"__init__.py", "__main__.py", "_graveyard.py", "errors.py", "segmenter.py"}


def test_import_contracts_are_kept() -> None:
    # in a process of its own: import-linter configures logging, which would hide later tests' log records
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run(
        [str(lint), "--no-cache", str(PYPROJECT)], cwd=PACKAGE.parent, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_top_level_holds_only_the_entry_files() -> None:
    assert {path.name for path in PACKAGE.glob("*.py")} == TOP_LEVEL
