"""The NMF transcriber's budget: dictionary frames per note x iterations, chosen cross-font.

    python benchmarks/nmf_budget.py [--per-note 8 12 16 24] [--iterations 20 30 40 50 100 200] \\
        [--threads 1] [--json PATH]

For every pair (frames per note, multiplicative-update iterations) the default NMF
transcriber's settings (:func:`decomp.transcription.default_settings`, with the
decomposer's ``n_components_per_source`` and ``max_iter`` replaced) go through
:func:`decomp.transcription.fit_transcriber`: a dictionary from one training font, the
threshold chosen on validation recordings (chords of polyphony 1-4 and an 8-bar piece) of
the other training font, both directions; ``validation_f1_`` is the mean of the two
cross-font frame F1s. The held-out font is not used to choose: it only supplies the
timing piece, a 20-s test piece (``DEFAULT_PROTOCOL.test_piece``, 8 bars) transcribed
from its WAV file with ``--threads`` torch threads after one warm-up (seconds and the
real-time factor; the piece's frame F1 is printed too, for information only).

The Euclidean multiplicative update against a fixed dictionary of K frames costs about
n_frames x K^2 per iteration (the Gram form), so halving K quarters the work. The
results decide ``default_decomposer()``: the pair with the best validation F1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _results import machine, write_results

from decomp import NMF
from decomp.audio import write_audio
from decomp.data import DEFAULT_PROTOCOL
from decomp.metrics import frame_scores
from decomp.transcription import default_settings, fit_transcriber


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-note", nargs="+", type=int, default=[8, 12, 16, 24])
    parser.add_argument("--iterations", nargs="+", type=int,
                        default=[20, 30, 40, 50, 100, 200])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    piece = DEFAULT_PROTOCOL.test_piece(random_state=0, n_bars=8)
    seconds_of_audio = piece.audio.shape[-1] / piece.sample_rate
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "piece.wav"
        write_audio(path, piece.audio, piece.sample_rate)
        for per_note in args.per_note:
            for iterations in args.iterations:
                settings = default_settings().set_params(
                    decomposer=NMF(beta_loss="frobenius", dictionary="frames",
                                   n_components_per_source=per_note, max_iter=iterations,
                                   random_state=0),
                    n_threads=args.threads)
                begun = time.perf_counter()
                fitted = fit_transcriber(settings)
                fit_seconds = time.perf_counter() - begun
                fitted.transcribe(path)  # warm-up
                begun = time.perf_counter()
                transcription = fitted.transcribe(path)
                seconds = time.perf_counter() - begun
                reference = piece.roll(transcription.times, transcription.pitches)
                piece_f1 = frame_scores(transcription.roll, reference)["f1"]
                row = {"frames_per_note": per_note, "iterations": iterations,
                       "dictionary_rows": int(fitted.decomposer_.n_components_),
                       "validation_f1": float(fitted.validation_f1_),
                       "threshold": float(fitted.threshold_),
                       "seconds": seconds, "real_time_factor": seconds / seconds_of_audio,
                       "piece_f1": float(piece_f1), "fit_seconds": fit_seconds}
                rows.append(row)
                print(f"{per_note:3d} frames/note x {iterations:4d} iterations: validation F1 "
                      f"{row['validation_f1']:.4f} (threshold {row['threshold']:.3f}); "
                      f"{seconds:.2f} s for {seconds_of_audio:.1f} s (RTF "
                      f"{row['real_time_factor']:.4f}); piece F1 {piece_f1:.3f}", flush=True)
    best = max(rows, key=lambda row: row["validation_f1"])
    print(f"best on validation: {best['frames_per_note']} frames per note, "
          f"{best['iterations']} iterations (F1 {best['validation_f1']:.4f}, RTF "
          f"{best['real_time_factor']:.4f})")
    result = {
        "benchmark": "nmf_budget",
        "machine": machine(args.threads),
        "settings": {"per_note": args.per_note, "iterations": args.iterations,
                     "audio_seconds": seconds_of_audio},
        "rows": rows,
        "best": {"frames_per_note": best["frames_per_note"], "iterations": best["iterations"]},
    }
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
