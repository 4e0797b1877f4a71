"""Transcription on a shared CPU: each method alone, then two processes at once, in one run.

    python benchmarks/shared_cpu.py [--methods nmf dds2 dds3] [--bars 8] [--threads N] \\
        [--json PATH]

Renders one test piece of the default protocol with the held-out SoundFont (``--bars 8``
at its tempo: about 20 s) and, for each method, times ``transcriber.transcribe(path)`` of
it in a separate process (the shipped model loaded and one warm-up transcription of the
same file done before the clock starts, so imports, model loading and first-call
compilation are not counted): once alone, then in two processes released together. The
ratio of the slower of the pair to the single run is what the issue on DDS speed bounds
(two at once take at most 2.5x the time of one alone); the real-time factor is the
single run's seconds over the piece's length.

``--threads N`` calls ``torch.set_num_threads(N)`` in every worker; without it the workers
keep torch's default (one thread per core), which is what a user gets. The workers print
one JSON line each; the summary is printed as a table and, with ``--json``, written with
the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 2.5


def worker(method: str, path: str, go_file: str, threads: int | None) -> None:
    """Load, warm up, wait for ``go_file``, transcribe once, print the seconds as JSON."""
    import torch

    from decomp.transcription import default_transcriber

    if threads:
        torch.set_num_threads(threads)
    transcriber = default_transcriber(method)
    transcriber.transcribe(path)  # warm-up: first-call compilation and caches
    print("ready", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.005)
    started = time.perf_counter()
    transcriber.transcribe(path)
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "threads": torch.get_num_threads()}), flush=True)


def run_together(method: str, path: Path, n_processes: int, threads: int | None,
                 scratch: Path) -> list[dict]:
    """Start ``n_processes`` workers, release them together once all are ready."""
    go_file = scratch / f"go-{method}-{n_processes}"
    command = [sys.executable, __file__, "--worker", method, str(path), str(go_file)]
    if threads:
        command += ["--threads", str(threads)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
               for _ in range(n_processes)]
    for process in workers:
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"a {method} worker failed before the start ({line!r})")
    go_file.touch()
    results = []
    for process in workers:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a {method} worker exited with {process.returncode}")
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["nmf", "dds2", "dds3"])
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads per worker "
                        "(default: torch's own choice)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "WAV", "GO_FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.threads)
        return {}

    from decomp.audio import write_audio
    from decomp.data import DEFAULT_PROTOCOL

    piece = DEFAULT_PROTOCOL.test_piece(random_state=args.seed, n_bars=args.bars)
    seconds_of_audio = piece.audio.shape[-1] / piece.sample_rate
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        path = scratch / "piece.wav"
        write_audio(path, piece.audio, piece.sample_rate)
        print(f"piece: {seconds_of_audio:.1f} s, held-out font; cores: {os.cpu_count()}",
              flush=True)
        for method in args.methods:
            (alone,) = run_together(method, path, 1, args.threads, scratch)
            pair = run_together(method, path, 2, args.threads, scratch)
            slower = max(result["seconds"] for result in pair)
            row = {"method": method, "alone_seconds": alone["seconds"],
                   "pair_seconds": [result["seconds"] for result in pair],
                   "ratio": slower / alone["seconds"],
                   "real_time_factor": alone["seconds"] / seconds_of_audio,
                   "threads_per_process": alone["threads"]}
            rows.append(row)
            print(f"{method}: alone {alone['seconds']:.2f} s (RTF "
                  f"{row['real_time_factor']:.3f}), two at once {slower:.2f} s: "
                  f"{row['ratio']:.2f}x ({'PASS' if row['ratio'] <= TARGET_RATIO else 'FAIL'}"
                  f", target <= {TARGET_RATIO}x; {alone['threads']} torch threads each)",
                  flush=True)
    result = {
        "benchmark": "shared_cpu",
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "settings": {"methods": args.methods, "bars": args.bars, "seed": args.seed,
                     "threads": args.threads, "audio_seconds": seconds_of_audio},
        "rows": rows,
        "target_ratio": TARGET_RATIO,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    return result


if __name__ == "__main__":
    main()
