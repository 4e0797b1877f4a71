"""Train the piano DDS transcribers shipped inside the package (DDS-2 and DDS-3).

    python benchmarks/train_default_models.py [--methods dds2 dds3] [--out DIR]

For each method: render the default protocol's isolated training notes (MIDI 36-95,
velocities 40/64/96, fonts fluidr3 and timgm6mb), compute the DDS front end
(``default_dds_front_end``: log1p(100 |CQT|), 24 bins/octave from 55 Hz), train the
flow(s) with an 80/20 split, model selection on validation NLL and early stopping,
choose the threshold cross-font as for the NMF default (flows from one training font,
validation chords and a piece from the other; the test font musescore-lite is never
used), train the final flows on both fonts, and write
``decomp/models/piano-<method>.decomp`` with the flow weights stored in float16 (they
are cast back to float32 on loading) so that each file stays a few MB.

Each method trains its flows three times (once per training font for the threshold, once
on both). Training time on the 2-core reference machine is printed at the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from decomp.data import DEFAULT_PROTOCOL
from decomp.transcription import (
    PianoTranscriber,
    default_dds_decomposer,
    default_dds_front_end,
    fit_transcriber,
    pretrained_path,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["dds2", "dds3"],
                        choices=["dds2", "dds3"])
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the model files (default: inside the package)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    protocol = DEFAULT_PROTOCOL
    front_end = default_dds_front_end()
    started = time.perf_counter()
    for method in args.methods:
        begun = time.perf_counter()
        decomposer = default_dds_decomposer(method).set_params(progress=True)
        if args.max_epochs is not None:
            decomposer.set_params(max_epochs=args.max_epochs)
        # Cross-font threshold, as for the NMF default: flows trained on one training font
        # choose the threshold on material of the other, then the final flows are trained
        # on both fonts.
        transcriber = fit_transcriber(
            PianoTranscriber(decomposer, front_end=front_end, chunk_frames=4096), protocol)
        history = transcriber.decomposer_.training_history_
        print(f"{method}: {history['n_epochs']} epochs, best {history['best_epoch']}, "
              f"validation NLL {history['validation_loss'][0]:.1f} -> "
              f"{history['best_validation_loss']:.1f} nats/frame, final flow training "
              f"{history['seconds']:.0f} s; threshold {transcriber.threshold_:.3f}, "
              f"cross-font validation F1 {transcriber.validation_f1_:.3f}; total "
              f"{time.perf_counter() - begun:.0f} s", flush=True)
        for model in (transcriber.decomposer, transcriber.decomposer_):
            model.set_params(progress=False)
        transcriber.decomposer_.flow_.half()
        path = (args.out / f"piano-{method}.decomp") if args.out else pretrained_path(method)
        path.parent.mkdir(parents=True, exist_ok=True)
        transcriber.save(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    print(f"all done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
