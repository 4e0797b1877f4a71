"""Transcription speed, alone and on a shared CPU: each method alone, then two at once.

    python benchmarks/shared_cpu.py [--methods nmf dds2 dds3] [--bars 8] [--threads N] \\
        [--json PATH]

Renders one test piece of the default protocol with the held-out SoundFont (``--bars 8``
at its tempo: about 20 s) and, for each method, times ``transcriber.transcribe(path)`` of
it in a separate process (the shipped model loaded and one warm-up transcription of the
same file done before the clock starts, so imports, model loading and first-call
compilation are not counted): once alone, then in two processes released together. The
ratio of the slower of the pair to the single run is what the issue on DDS speed bounds
(two at once take at most 2.5x the time of one alone); the real-time factor is the
single run's seconds over the piece's length, printed against the issue's targets
(:data:`TARGET_RTF`), with the frame F1 of that transcription beside it so that speed is
never reported without the accuracy it kept.

Without ``--threads`` each transcriber runs with its own ``n_threads`` (the default, 1),
which is what a user gets; ``--threads N`` sets ``n_threads=N`` in every worker, and
``--threads 0`` sets ``n_threads=None`` (torch's default: one thread per core, the
behaviour before the default became 1). The workers print one JSON line each; the
summary is printed as a table and, with ``--json``, written with the machine's
description.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import machine, write_results

TARGET_RATIO = 2.5
#: Real-time factors a transcription of a ~20-s piece must reach alone (the DDS issue).
TARGET_RTF = {"nmf": 0.03, "dds2": 0.05, "dds3": 0.1}


def worker(method: str, path: str, go_file: str, threads: int | None) -> None:
    """Load, warm up, wait for ``go_file``, transcribe once, print the seconds as JSON."""
    import torch

    from decomp.audio.pianoroll import load_midi, midi_to_roll
    from decomp.metrics import frame_scores
    from decomp.transcription import default_transcriber

    transcriber = default_transcriber(method)
    if threads is not None:
        transcriber.set_params(n_threads=threads or None)
    transcriber.transcribe(path)  # warm-up: first-call compilation and caches
    print("ready", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.005)
    started = time.perf_counter()
    result = transcriber.transcribe(path)
    seconds = time.perf_counter() - started
    reference = load_midi(str(Path(path).with_suffix(".mid")))
    roll = midi_to_roll(reference, result.times, result.pitches)
    print(json.dumps({"seconds": seconds, "f1": frame_scores(result.roll, roll)["f1"],
                      "threads": transcriber.n_threads or torch.get_num_threads()}),
          flush=True)


def run_together(method: str, path: Path, n_processes: int, threads: int | None,
                 scratch: Path) -> list[dict]:
    """Start ``n_processes`` workers, release them together once all are ready."""
    go_file = scratch / f"go-{method}-{n_processes}"
    command = [sys.executable, __file__, "--worker", method, str(path), str(go_file)]
    if threads is not None:
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
    parser.add_argument("--threads", type=int, help="n_threads of every worker's "
                        "transcriber (default: its own, 1; 0: torch's default)")
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
        piece.midi.write(str(path.with_suffix(".mid")))
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
                   "frame_f1": alone["f1"], "threads_per_process": alone["threads"]}
            target = TARGET_RTF.get(method)
            row["rtf_verdict"] = ("–" if target is None else
                                  f"{'PASS' if row['real_time_factor'] <= target else 'FAIL'}"
                                  f" (≤ {target})")
            row["ratio_verdict"] = "PASS" if row["ratio"] <= TARGET_RATIO else "FAIL"
            rows.append(row)
            print(f"{method}: alone {alone['seconds']:.2f} s (RTF "
                  f"{row['real_time_factor']:.3f}: {row['rtf_verdict']}; frame F1 "
                  f"{alone['f1']:.3f}), two at once {slower:.2f} s: {row['ratio']:.2f}x "
                  f"({row['ratio_verdict']}, target <= {TARGET_RATIO}x; {alone['threads']} "
                  "torch threads each)", flush=True)
    result = {
        "benchmark": "shared_cpu",
        "machine": machine(),
        "settings": {"methods": args.methods, "bars": args.bars, "seed": args.seed,
                     "threads": args.threads, "audio_seconds": seconds_of_audio},
        "rows": rows,
        "target_ratio": TARGET_RATIO,
    }
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
