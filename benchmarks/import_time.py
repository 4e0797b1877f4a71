"""Time of ``import decomp`` against ``import torch``, each in a fresh interpreter.

``import decomp`` loads torch and the model loader only; the subpackages and estimators
(and with them scikit-learn, SciPy, librosa, pretty_midi, mir_eval) are imported on first
use. Each statement runs ``--repeats`` times in a new ``python -c`` process, the two
alternating so that the disk cache and load of the machine hit both alike; the median
wall time of each and their ratio are printed, with the target (packaging issue:
``import decomp`` at most 1.2x ``import torch``) as PASS/FAIL. ``--json`` writes them.

Run: ``python benchmarks/import_time.py --json docs/results/import_time.json``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 1.2
STATEMENTS = {"torch": "import torch", "decomp": "import decomp",
              "decomp + NMF": "import decomp; decomp.NMF"}


def seconds(statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    for statement in STATEMENTS.values():  # warm the disk cache
        seconds(statement)
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for _ in range(args.repeats):
        for name, statement in STATEMENTS.items():
            times[name].append(seconds(statement))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["decomp"] / medians["torch"]
    for name, value in medians.items():
        print(f"  {STATEMENTS[name]:28s} {value:6.3f} s (median of {args.repeats})")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"TARGET import decomp <= {TARGET}x import torch: {ratio:.2f}x {verdict}")
    if args.json:
        payload = {"benchmark": "import_time", "python": platform.python_version(),
                   "platform": platform.platform(), "repeats": args.repeats,
                   "seconds": times, "median_seconds": medians, "ratio": ratio,
                   "target": TARGET, "verdict": verdict}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
