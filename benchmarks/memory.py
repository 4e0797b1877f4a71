"""Peak memory of ``decomp transcribe`` against the length of the recording.

Long recordings are streamed chunk by chunk (issue 9): the peak resident set size (RSS)
of a transcription must not grow with the recording beyond the per-pitch activity it
keeps (n_frames x 88 float32, under 7 MB per 10 minutes at the default hop). Target:
a two-hour 16 kHz recording in at most 1.5 GB.

The recordings are a piano piece rendered with the held-out test SoundFont (cached),
tiled to 1, 10 and 60 minutes (``--minutes``) and written as 16-bit 16 kHz WAV block by
block, so making them costs no memory. Each is transcribed by ``decomp transcribe`` (the
default NMF transcriber, or ``--method``) in a child process; the child's peak RSS comes
from ``os.wait4`` (the kernel's ``ru_maxrss`` of that child alone). The default
transcriber is fitted and cached by a first, unmeasured run on a short file, and the
peak RSS of a child that only loads it is measured as the fixed cost.

The growth per minute is the slope between the two longest runs, and two hours are
extrapolated from it (PASS/FAIL against the target). Prints a table and writes the
results as JSON (``--json``, default
``memory-results.json``): the machine, the settings and, per length, the peak RSS (MB),
the growth over the fixed cost, the wall time and the real-time factor.

``--job separate`` measures ``decomp separate`` instead (issue 9: separation streams
file to file too): a tiny MHUNet (or ``--separator nmf``, an NMFSeparator; ``--separator
ensemble``, a SeparatorEnsemble of two such MHUNets) on the default 16 kHz separation
front end is fitted for one epoch on random spectrograms, for memory purposes only (its
weights do not matter), saved, and run on the same tiled recordings (``--separator
instruments``: the shipped ``instruments`` by name instead, three members refining);
each writes one 32-bit float WAV per source. The fixed cost is a child that only imports
decomp and loads the saved separator.

Run: ``python benchmarks/memory.py --minutes 1 10 60`` (``--job separate`` for
separation).
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

import numpy as np
import soundfile
from _results import machine

SAMPLE_RATE = 16000
TARGET_MB_FOR_TWO_HOURS = 1500


def write_recording(path: Path, seconds: float, piece: np.ndarray) -> Path:
    """A WAV of ``seconds`` of ``piece`` repeated, written one repetition at a time."""
    n_samples = int(round(seconds * SAMPLE_RATE))
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as file:
        written = 0
        while written < n_samples:
            block = piece[:n_samples - written]
            file.write(block)
            written += block.size
    return path


def run_child(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command``; return its peak RSS in MB, its wall time in s and its output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        output.seek(0)
        text = output.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{text}")
    # ru_maxrss is in kilobytes on Linux.
    return usage.ru_maxrss / 1024, wall, text


def save_tiny_separator(kind: str, folder: Path) -> Path:
    """A tiny separator for memory measurements only (weights do not matter); its path."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    if kind == "nmf":
        from decomp.audio import Spectrogram
        from decomp.separation import NMFSeparator

        stems = {label: [(0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)]
                 for label in ("a", "b")}
        model = NMFSeparator(n_components_per_source=8, max_iter=50, device="cpu",
                             front_end=Spectrogram(sample_rate=SAMPLE_RATE, kind="linear"),
                             random_state=0).fit(stems)
    else:
        from decomp.estimators.amortized import MHUNet, SeparatorEnsemble

        sources = rng.gamma(0.5, 1.0, size=(8, 2, 64, 257)).astype(np.float32)
        members = [MHUNet(n_levels=2, base_channels=4, chunk_frames=64, max_epochs=1,
                          device="cpu", random_state=seed).fit(sources.sum(axis=1), sources)
                   for seed in range(2 if kind == "ensemble" else 1)]
        model = SeparatorEnsemble(members).fit() if kind == "ensemble" else members[0]
    return model.save(folder / f"separator-{kind}.decomp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", nargs="+", type=float, default=[1, 10, 60])
    parser.add_argument("--job", default="transcribe", choices=["transcribe", "separate"])
    parser.add_argument("--method", default="nmf", choices=["nmf", "dds1", "dds2", "dds3"],
                        help="transcriber of --job transcribe")
    parser.add_argument("--separator", default="mhunet",
                        choices=["mhunet", "nmf", "ensemble", "instruments"],
                        help="separator of --job separate (ensemble: a SeparatorEnsemble of "
                             "two tiny MHUNets; instruments: the shipped one, by name)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/MKL/torch threads of the child (default 1)")
    parser.add_argument("--workdir", default=None,
                        help="where the WAVs and outputs go (default: a temporary folder)")
    parser.add_argument("--json", default="memory-results.json", help="results file")
    args = parser.parse_args()

    from decomp import __version__
    from decomp.data import DEFAULT_PROTOCOL, random_piece

    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(args.threads)
    decomp_command = [sys.executable, "-m", "decomp.cli"]

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        piece = random_piece(DEFAULT_PROTOCOL.test_soundfont, n_bars=16, random_state=0)
        audio = np.asarray(piece.audio, dtype=np.float32)
        print(f"piece: {audio.size / SAMPLE_RATE:.1f} s, tiled to {args.minutes} minutes")

        warm = write_recording(workdir / "warm-up.wav", 5.0, audio)
        out = workdir / "out"
        if args.job == "separate":
            shipped = args.separator == "instruments"
            model = args.separator if shipped else save_tiny_separator(args.separator, workdir)

            def job_command(path: Path) -> list[str]:
                return [*decomp_command, "separate", str(path), "--model", str(model),
                        "--out", str(out), "--no-progress"]

            load_code = f"import sys, decomp; decomp.{'pretrained' if shipped else 'load'}" \
                        "(sys.argv[1])"
            fixed_command = [sys.executable, "-c", load_code, str(model)]
            what = f"the {'shipped' if shipped else 'tiny'} {args.separator} separator"
        else:
            def job_command(path: Path) -> list[str]:
                return [*decomp_command, "transcribe", str(path), "--method", args.method,
                        "--out", str(out), "--no-progress"]

            load_code = ("import sys; from decomp.transcription import default_transcriber; "
                         "default_transcriber(sys.argv[1])")
            fixed_command = [sys.executable, "-c", load_code, args.method]
            what = f"the {args.method} transcriber"
        # Fit and cache the default model (warm up), unmeasured; then the fixed cost of
        # loading it.
        run_child(job_command(warm), env)
        fixed_mb, _, _ = run_child(fixed_command, env)
        print(f"fixed cost (import + load {what}): {fixed_mb:.0f} MB")

        rows = []
        for minutes in args.minutes:
            path = write_recording(workdir / f"piano-{minutes:g}min.wav", 60 * minutes, audio)
            peak_mb, wall, _ = run_child(job_command(path), env)
            rows.append({"minutes": minutes, "peak_rss_mb": round(peak_mb, 1),
                         "growth_mb": round(peak_mb - fixed_mb, 1), "wall_s": round(wall, 1),
                         "real_time_factor": round(wall / (60 * minutes), 4)})
            print(f"{minutes:g} min: peak RSS {peak_mb:.0f} MB ({wall:.0f} s)", flush=True)
            path.unlink()
            for written in out.glob(f"{path.stem}*"):
                written.unlink()

    print("\n| minutes | peak RSS (MB) | over fixed cost (MB) | wall (s) | RTF |\n"
          "|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['minutes']:g} | {row['peak_rss_mb']:.0f} | {row['growth_mb']:.0f} | "
              f"{row['wall_s']:.0f} | {row['real_time_factor']:.3f} |")
    if len(rows) >= 2:
        # The two longest runs: a short one may not fill a batch of chunks, so its peak
        # says less about growth. A negative slope (noise) extrapolates as flat.
        first, last = sorted(rows, key=lambda row: row["minutes"])[-2:]
        slope = (last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["minutes"] - first["minutes"])
        two_hours = last["peak_rss_mb"] + max(slope, 0.0) * (120 - last["minutes"])
        verdict = "PASS" if two_hours <= TARGET_MB_FOR_TWO_HOURS else "FAIL"
        print(f"\ngrowth {slope:.2f} MB per minute; two hours extrapolated: {two_hours:.0f} MB "
              f"(target <= {TARGET_MB_FOR_TWO_HOURS} MB): {verdict}")
    else:
        slope = two_hours = None
    results = {
        "benchmark": "memory",
        "decomp_version": __version__,
        "machine": machine(),
        "settings": {"job": args.job,
                     **({"separator": args.separator} if args.job == "separate"
                        else {"method": args.method}),
                     "threads": args.threads,
                     "sample_rate": SAMPLE_RATE},
        "fixed_cost_mb": round(fixed_mb, 1),
        "results": rows,
        "growth_mb_per_minute": None if slope is None else round(slope, 3),
        "two_hours_extrapolated_mb": None if two_hours is None else round(two_hours, 1),
        "target_mb_two_hours": TARGET_MB_FOR_TWO_HOURS,
    }
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
