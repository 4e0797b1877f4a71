"""Corpus throughput of ``decomp.batch``: one process against Ray workers, side by side.

A folder of piano pieces rendered with a training SoundFont (``--pieces`` pieces of
``--bars`` bars at 100 bpm, cached; the test font is not needed for a speed measurement)
is transcribed by the default NMF transcriber three ways in one run, each into a fresh
output folder:

- ``jobs=1``: in this process, without Ray, torch with its default threads (both cores
  here);
- ``jobs=2``: a local Ray with two CPUs, one torch thread per worker, the model loaded
  once per worker; the wall time includes starting and stopping Ray, which is printed
  apart (``ray.init`` + ``ray.shutdown`` of an empty run).

For each: wall seconds, files per minute, audio hours per hour, the mean per-file
seconds and real-time factor per worker (from the manifest), and the peak resident
memory of each worker process (``ru_maxrss`` as the manifest records it). ``--json``
writes it all with the machine; the docs turn the per-worker cost into a projection for
a large corpus (docs/guide/corpus.md).

Run: ``python benchmarks/corpus_throughput.py --json docs/results/corpus_throughput.json``
(about 3 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from decomp import batch
from decomp.audio import write_audio
from decomp.data import DEFAULT_PROTOCOL, random_piece


def render(folder: Path, n_pieces: int, n_bars: int) -> list[Path]:
    """Write ``n_pieces`` rendered pieces into ``folder`` (rendering is cached by seed)."""
    protocol = DEFAULT_PROTOCOL
    paths = []
    for seed in range(n_pieces):
        piece = random_piece(protocol.train_soundfonts[0], n_bars=n_bars,
                             pitches=protocol.pitches, random_state=seed,
                             sample_rate=protocol.sample_rate)
        paths.append(write_audio(folder / f"piece-{seed:03d}.wav", piece.audio,
                                 protocol.sample_rate))
    return paths


def measure(folder: Path, out: Path, jobs: int) -> dict:
    started = time.perf_counter()
    result = batch.run(batch.TranscriptionJob(), [folder], out, jobs=jobs, progress=False)
    wall = time.perf_counter() - started
    if result.failed:
        raise RuntimeError(f"{result.failed} file(s) failed: see {result.manifest}")
    records = result.records
    audio_seconds = sum(record["duration_s"] for record in records)
    per_worker: dict[int, float] = {}
    for record in records:
        per_worker[record["pid"]] = max(per_worker.get(record["pid"], 0.0),
                                        record["peak_memory_mb"])
    seconds = [record["seconds"] for record in records]
    return {
        "jobs": jobs,
        "files": len(records),
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "files_per_minute": 60 * len(records) / wall,
        "audio_hours_per_hour": audio_seconds / wall,
        "mean_file_seconds": float(np.mean(seconds)),
        "worker_real_time_factor": float(sum(seconds) / audio_seconds),
        "workers": len(per_worker),
        "peak_memory_mb_per_worker": sorted(per_worker.values()),
    }


def ray_overhead() -> float:
    """Seconds to start and stop a local two-CPU Ray (what jobs=2 pays once per run)."""
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.shutdown()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=12)
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="decomp-corpus-"))
    try:
        folder = work / "corpus"
        folder.mkdir()
        paths = render(folder, args.pieces, args.bars)
        print(f"{len(paths)} pieces of {args.bars} bars in {folder}; {os.cpu_count()} CPUs")
        # Load (and cache) the shipped model once, so no run pays the first read alone.
        batch.preload(batch.TranscriptionJob())
        overhead = ray_overhead() if any(jobs > 1 for jobs in args.jobs) else 0.0
        rows = [measure(folder, work / f"out-{jobs}", jobs) for jobs in args.jobs]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'jobs':>4s} {'files':>5s} {'audio s':>8s} {'wall s':>7s} {'files/min':>9s} "
          f"{'audio h/h':>9s} {'s/file':>7s} {'RTF/worker':>10s}  peak MB per worker")
    for row in rows:
        print(f"{row['jobs']:4d} {row['files']:5d} {row['audio_seconds']:8.1f} "
              f"{row['wall_seconds']:7.1f} {row['files_per_minute']:9.1f} "
              f"{row['audio_hours_per_hour']:9.1f} {row['mean_file_seconds']:7.2f} "
              f"{row['worker_real_time_factor']:10.3f}  "
              f"{', '.join(f'{value:.0f}' for value in row['peak_memory_mb_per_worker'])}")
    if overhead:
        print(f"starting and stopping a local Ray (included in the wall time above): "
              f"{overhead:.1f} s")
    if args.json:
        payload = {"benchmark": "corpus_throughput",
                   "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                               "python": platform.python_version()},
                   "settings": vars(args), "ray_start_stop_seconds": overhead, "rows": rows}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
