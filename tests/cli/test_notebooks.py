"""The notebooks run top to bottom (on their small default settings)."""

from __future__ import annotations

import nbformat
from helpers import REPO
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_every_notebook_executes() -> None:
    """All notebooks' cells in one kernel, each notebook's in its own order (a kernel start costs seconds of
    imports; the notebooks share the folder they run in and define what they use): no cell raises, and
    every notebook prints something."""
    notebooks = {path.stem: nbformat.read(path, as_version=4) for path in NOTEBOOKS}
    cells, owner = [], []
    for name, notebook in notebooks.items():
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cells.append(cell)
                owner.append(name)
    combined = nbformat.v4.new_notebook(cells=cells, metadata=next(iter(notebooks.values())).metadata)
    client = NotebookClient(
        combined,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    )
    client.execute()
    for name in notebooks:
        outputs = [
            o for cell, who in zip(combined.cells, owner, strict=True) if who == name for o in cell.outputs
        ]
        errors = [o for o in outputs if o.output_type == "error"]
        assert not errors, (name, errors[:1])
        assert any(o.get("output_type") == "stream" for o in outputs), name


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"explore_data.ipynb", "inspect_model.ipynb"}
