"""The JSON every benchmark writes: the machine it ran on, and the writing itself."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any


def processor_name() -> str:
    """The CPU's model name: ``platform.processor()``, which is empty on Linux, else the
    first ``model name`` of ``/proc/cpuinfo`` (empty when neither says)."""
    if platform.processor():
        return platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine(threads: int | None = None) -> dict[str, Any]:
    """CPUs, processor, the vector instructions torch uses, Python and torch versions (and
    the torch threads, when given). A virtual machine's model name can be generic ("Intel
    Xeon Processor"): a benchmark whose figures depend on the hardware also records a
    measured peak (e.g. ``dds_speed.py``'s 2048² matmul)."""
    import torch

    described: dict[str, Any] = {"cpus": os.cpu_count()}
    if threads is not None:
        described["threads"] = threads
    described.update(platform=platform.platform(), processor=processor_name(),
                     cpu_capability=torch.backends.cpu.get_cpu_capability(),
                     python=platform.python_version(), torch=torch.__version__)
    return described


def json_settings(args: Any, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A command line's parsed arguments (an ``argparse.Namespace``) as JSON values, paths
    as strings, without the names in ``leave_out``."""
    return {key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items() if key not in leave_out}


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that runs ``benchmarks/<script>`` with ``argv`` (the process's own
    arguments when None), quoted for a shell, for a result JSON to say how to rebuild it."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *arguments])


def write_results(path: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` as indented JSON to ``path`` (nothing when None) and say so."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {path}")
