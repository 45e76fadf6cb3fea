"""The package's layers (pyproject's ``[tool.importlinter]``): dependencies point one way, callbacks import no
sibling, no package has an import cycle, and the top level holds only its few files."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_seg"
PYPROJECT = PACKAGE.parent / "pyproject.toml"
TOP_LEVEL = {"__init__.py", "__main__.py", "_graveyard.py", "errors.py", "segmenter.py"}


def test_import_contracts_are_kept() -> None:
    assert lint_imports(str(PYPROJECT), no_cache=True, no_logo=True) == 0


def test_the_top_level_holds_only_the_entry_files() -> None:
    assert {path.name for path in PACKAGE.glob("*.py")} == TOP_LEVEL
