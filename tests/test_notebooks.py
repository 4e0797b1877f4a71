"""Execute the teaching notebooks end to end, so they always match the current API.

Each notebook runs in a fresh ``python3`` kernel with ``notebooks/`` as working directory.
jupyter_client resolves the ``python3`` kernel's ``python`` to ``sys.executable``, so the
kernel runs in the virtual environment that runs pytest; a final cell added here checks
that. Rendered data goes to the session cache set up in ``conftest.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = [
    "01_nmf_basics.ipynb",
    "02_piano_transcription.ipynb",
    "03_differentiable_dictionary_search.ipynb",
    "04_amortized_separation.ipynb",
    "05_bayesian_nmf.ipynb",
]
CELL_TIMEOUT = 300  # seconds per cell

_CHECK_INTERPRETER = "import sys; print(sys.prefix)"


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "") for output in cell.outputs if output.output_type == "stream"
    )


def test_notebooks_are_committed_without_outputs() -> None:
    for name in NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        nbformat.validate(notebook)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            assert not cell.outputs, f"{name}: cell {index} has outputs; clear them."
            assert cell.execution_count is None, f"{name}: cell {index} has an execution count."


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_CHECK_INTERPRETER))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name} failed:\n{error}", pytrace=False)
    kernel_prefix = _stdout(notebook.cells[-1]).strip()
    assert os.path.abspath(kernel_prefix) == os.path.abspath(sys.prefix), (
        f"{name} ran in the environment {kernel_prefix}, not in the one running the tests "
        f"({sys.prefix}); the python3 kernelspec points elsewhere."
    )
