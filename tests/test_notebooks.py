"""Execute the teaching notebooks end to end, so they always match the current API.

Each notebook runs in a fresh ``python3`` kernel with ``notebooks/`` as working directory.
jupyter_client resolves the ``python3`` kernel's ``python`` to ``sys.executable``, so the
kernel runs in the virtual environment that runs pytest; a final cell added here checks
that. Rendered data goes to the session cache set up in ``conftest.py``.

The executed notebook (without that check cell) is stored for the documentation site
(``benchmarks/docs_notebooks.py``, an MkDocs hook, shows it with its outputs), under the
key of the notebook and package it was executed from: ``make test`` runs pytest before
``mkdocs build``, so the build reuses these executions instead of running each notebook
a second time.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = [
    "01_nmf_basics.ipynb",
    "02_piano_transcription.ipynb",
    "03_differentiable_dictionary_search.ipynb",
    "04_amortized_separation.ipynb",
    "05_bayesian_nmf.ipynb",
]

_CHECK_INTERPRETER = "import sys; print(sys.prefix)"


def _docs_notebooks():
    spec = importlib.util.spec_from_file_location(
        "docs_notebooks", ROOT / "benchmarks" / "docs_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_notebooks = _docs_notebooks()


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "") for output in cell.outputs if output.output_type == "stream"
    )


def test_every_notebook_is_listed() -> None:
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == NOTEBOOKS
    assert [path.name for path in docs_notebooks.notebooks()] == NOTEBOOKS


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
    path = NOTEBOOK_DIR / name
    key = docs_notebooks.execution_key(path)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_CHECK_INTERPRETER))
    try:
        docs_notebooks.execute(notebook)
    except CellExecutionError as error:
        pytest.fail(f"{name} failed:\n{error}", pytrace=False)
    kernel_prefix = _stdout(notebook.cells[-1]).strip()
    assert os.path.abspath(kernel_prefix) == os.path.abspath(sys.prefix), (
        f"{name} ran in the environment {kernel_prefix}, not in the one running the tests "
        f"({sys.prefix}); the python3 kernelspec points elsewhere."
    )
    notebook.cells.pop()
    figures = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs if "image/png" in output.get("data", {})]
    assert figures, f"{name} showed no figure (is `%matplotlib inline` still there?)"
    docs_notebooks.store(path, notebook, key)
