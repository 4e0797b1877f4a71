"""The teaching notebooks as pages of the documentation site, with their outputs.

An MkDocs hook (``hooks:`` in ``mkdocs.yml``): at every build, each notebook of
``notebooks/`` becomes the page ``notebooks/<name>.md`` (Markdown cells as they are, code
in fenced blocks, text outputs in ``text`` blocks, figures as PNG files beside the page)
plus a copy of the ``.ipynb`` to download. The notebooks are committed without outputs
(``tests/test_notebooks.py`` enforces it); the outputs shown are those of an execution of
the current notebook against the current package.

Each notebook is executed once per change, not once per build: ``tests/test_notebooks.py``
executes it (a failing cell fails the test) and stores the executed copy in
:data:`CACHE_DIR` (``build/executed-notebooks/``, ignored by git) under a key, the SHA-256
of the notebook and of every file of the ``decomp`` package (code and shipped models).
The hook takes the stored copy whose key matches; otherwise it executes the notebook
itself, and a failing cell fails the build. So ``make test`` (pytest, then ``mkdocs
build``) executes each notebook once, and a bare ``mkdocs build`` or ``mkdocs serve``
still shows fresh outputs (the first build then takes a few minutes).

``DECOMP_DOCS_NOTEBOOKS=source`` renders the notebooks without executing them (no
outputs, with a note on each page): for quick local edits of the prose only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
PACKAGE_DIR = ROOT / "decomp"
CACHE_DIR = ROOT / "build" / "executed-notebooks"
PAGE_DIR = "notebooks"  # the pages' folder inside the site
CELL_TIMEOUT = 300  # seconds per cell
KEY_FIELD = "decomp_docs_key"
ENVIRONMENT_VARIABLE = "DECOMP_DOCS_NOTEBOOKS"


def notebooks() -> list[Path]:
    """The notebooks the site shows: every ``notebooks/*.ipynb``, in name order."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


# --- the key of an execution ----------------------------------------------------------------
@lru_cache(maxsize=1)
def _package_digest(stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for relative, _, _ in stamp:
        digest.update(relative.encode() + b"\0")
        digest.update((PACKAGE_DIR / relative).read_bytes())
    return digest.hexdigest()


def _package_files() -> tuple[tuple[str, int, int], ...]:
    files = sorted(path for path in PACKAGE_DIR.rglob("*") if path.is_file()
                   and "__pycache__" not in path.parts and path.suffix != ".pyc")
    return tuple((path.relative_to(PACKAGE_DIR).as_posix(), path.stat().st_size,
                  path.stat().st_mtime_ns) for path in files)


def execution_key(path: Path) -> str:
    """SHA-256 of the notebook's bytes and of the package's files (code and models).

    An executed copy stored under this key shows what the notebook gives now.
    """
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(_package_digest(_package_files()).encode())
    return digest.hexdigest()


# --- executing and storing ------------------------------------------------------------------
def execute(notebook: Any, *, timeout: int = CELL_TIMEOUT) -> Any:
    """Execute ``notebook`` (an ``nbformat`` node) in place in a fresh ``python3`` kernel.

    The working directory is ``notebooks/``; a failing cell raises
    ``nbclient.exceptions.CellExecutionError``.
    """
    from nbclient import NotebookClient

    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    return notebook


def store(path: Path, notebook: Any, key: str) -> Path:
    """Keep the executed ``notebook`` of ``path``, made from the inputs of ``key``."""
    import nbformat

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    notebook.metadata[KEY_FIELD] = key
    target = CACHE_DIR / Path(path).name
    partial = target.with_suffix(".part")
    nbformat.write(notebook, partial)
    partial.replace(target)
    return target


def stored(path: Path, key: str | None = None) -> Any | None:
    """The stored executed copy of ``path`` if its key is ``key`` (default: the current)."""
    import nbformat

    target = CACHE_DIR / Path(path).name
    if not target.is_file():
        return None
    try:
        notebook = nbformat.read(target, as_version=4)
    except (OSError, ValueError):
        return None
    wanted = key if key is not None else execution_key(path)
    return notebook if notebook.metadata.get(KEY_FIELD) == wanted else None


def executed(path: Path) -> tuple[Any, bool]:
    """The executed notebook of ``path``: the stored copy, or a new execution (stored).

    Returns the notebook and whether it was executed now.
    """
    import nbformat

    key = execution_key(path)
    notebook = stored(path, key)
    if notebook is not None:
        return notebook, False
    notebook = nbformat.read(path, as_version=4)
    execute(notebook)
    store(path, notebook, key)
    return notebook, True


# --- conversion to Markdown -----------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DOCS_LINK = re.compile(r"\]\(\.\./docs/")


def _fence(text: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _clean_stream(text: str) -> str:
    """Terminal text as a reader would have seen it: no colour codes, progress bars redrawn.

    A carriage return rewrites its line (tqdm), so each line keeps what follows its last
    one.
    """
    text = _ANSI.sub("", text)
    lines = [line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
             for line in text.split("\n")]
    return "\n".join(lines)


def _join(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _markdown_cell(source: str) -> str:
    # Links into the documentation are written for a reader of the repository
    # (notebooks/../docs/guide/x.md); on the site the page sits in notebooks/.
    return _DOCS_LINK.sub("](../", source)


def convert(notebook: Any, stem: str, *, note: str | None = None
            ) -> tuple[str, dict[str, bytes]]:
    """A notebook as Markdown, and its figures: ``(page, {file name: PNG bytes})``.

    The page is meant for ``notebooks/<stem>.md``; figures are named
    ``<stem>/cell<i>-<k>.png`` relative to the page's folder. ``note`` is shown as an
    admonition after the first cell (the title).
    """
    parts: list[str] = []
    figures: dict[str, bytes] = {}
    for index, cell in enumerate(notebook.cells):
        source = _join(cell.source)
        if cell.cell_type == "markdown":
            parts.append(_markdown_cell(source))
        elif cell.cell_type == "code":
            if source.strip():
                parts.append(_fence(source, "python"))
            streams: list[str] = []
            for output in cell.get("outputs", []):
                kind = output.get("output_type")
                if kind == "stream":
                    streams.append(_clean_stream(_join(output.get("text", ""))))
                    continue
                if streams:
                    parts.append(_fence("".join(streams), "text"))
                    streams = []
                data = output.get("data", {})
                if kind == "error":
                    parts.append(_fence(_clean_stream("\n".join(output.get("traceback", []))),
                                        "text"))
                elif "image/png" in data:
                    name = f"{stem}/cell{index}-{len(figures)}.png"
                    figures[name] = base64.b64decode(_join(data["image/png"]))
                    parts.append(f"![output of cell {index}]({name})")
                elif "text/markdown" in data:
                    parts.append(_join(data["text/markdown"]))
                elif "text/plain" in data:
                    parts.append(_fence(_join(data["text/plain"]), "text"))
            if streams:
                parts.append(_fence("".join(streams), "text"))
        if index == 0 and note:
            parts.append(note)
    return "\n\n".join(part.strip("\n") for part in parts if part.strip()) + "\n", figures


def page(path: Path, notebook: Any, *, executed_now: bool | None = None,
         ) -> tuple[str, dict[str, bytes]]:
    """The page of the notebook at ``path`` and its figures (see :func:`convert`)."""
    stem = Path(path).stem
    download = (f"[Download the notebook]({Path(path).name}) (`notebooks/{Path(path).name}` "
                "in the repository).")
    if executed_now is None:
        note = ('!!! note "Not executed"\n    This build was made with '
                f"`{ENVIRONMENT_VARIABLE}=source`: the code is shown without its outputs. "
                + download)
    else:
        note = ('!!! info "Executed for this site"\n    The outputs below come from executing '
                "this notebook, as committed, against the version of the package that this "
                "site documents (timings, and the scores of models trained for a fixed number "
                "of seconds, vary from run to run). " + download)
    return convert(notebook, stem, note=note)


# --- the MkDocs hook ------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    """Add ``notebooks/<name>.md``, its figures and ``notebooks/<name>.ipynb`` to the site."""
    import logging

    import nbformat
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    log = logging.getLogger("mkdocs.hooks.notebooks")
    source_only = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() == "source"
    for path in notebooks():
        if source_only:
            notebook, executed_now = nbformat.read(path, as_version=4), None
        else:
            started = time.perf_counter()
            try:
                notebook, executed_now = executed(path)
            except Exception as error:  # a failing cell, a missing kernel: the build fails
                message = _ANSI.sub("", str(error))
                raise PluginError(f"notebook {path.name} failed to execute:\n{message}"
                                  ) from error
            if executed_now:
                log.info("executed %s in %.0f s", path.name, time.perf_counter() - started)
        text, figures = page(path, notebook, executed_now=executed_now)
        for name, content in [(f"{path.stem}.md", text), *figures.items()]:
            files.append(File.generated(config, f"{PAGE_DIR}/{name}", content=content))
        files.append(File.generated(config, f"{PAGE_DIR}/{path.name}",
                                    abs_src_path=str(path)))
    return files


def main(argv: Iterable[str] | None = None) -> int:
    """Execute the notebooks whose stored copies are stale; print what was done."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", metavar="DIR",
                        help="also write the Markdown pages and figures into DIR")
    args = parser.parse_args(list(argv) if argv is not None else None)
    for path in notebooks():
        started = time.perf_counter()
        notebook, executed_now = executed(path)
        state = "executed" if executed_now else "up to date"
        print(f"{path.name}: {state} ({time.perf_counter() - started:.1f} s)")
        if args.dump:
            text, figures = page(path, notebook, executed_now=executed_now)
            folder = Path(args.dump)
            for name, content in [(f"{path.stem}.md", text), *figures.items()]:
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, str):
                    target.write_text(content, encoding="utf-8")
                else:
                    target.write_bytes(content)
    print(f"executed notebooks are kept in {CACHE_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
