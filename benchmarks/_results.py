"""The JSON every benchmark writes: the machine it ran on, and the writing itself."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine(threads: int | None = None) -> dict[str, Any]:
    """CPUs, processor, Python and torch versions (and the torch threads, when given)."""
    import torch

    described: dict[str, Any] = {"cpus": os.cpu_count()}
    if threads is not None:
        described["threads"] = threads
    described.update(processor=platform.processor(), python=platform.python_version(),
                     torch=torch.__version__)
    return described


def write_results(path: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` as indented JSON to ``path`` (nothing when None) and say so."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {path}")
