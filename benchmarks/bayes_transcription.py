"""Note probabilities from BayesianNMF's activity mode against the default NMF transcriber.

Cross-font, as every transcription setting is chosen: the default NMF decomposer's
dictionary (24 isolated-note frames per note) is built from one training font
(``--dictionary-font``) and decomposes the validation recordings of the other (chords of
polyphony 1-4 and an 8-bar piece; the test font is never used). The NMF transcriber
thresholds its normalised activity at the shipped transcriber's threshold (itself chosen
cross-font); the Bayesian one thresholds each note's
posterior probability of being active at 0.5, for a grid of ``inactive_scale`` (the
"off" prior) and count scales (the features multiplied by a factor before the Poisson
likelihood reads them as counts). Both use the transcriber's median filter. Frame
precision, recall and F1 are printed side by side, with seconds per recording.

``--test``: instead, the shipped transcribers ``nmf`` and ``bayes-nmf``
(:func:`decomp.transcription.default_transcriber`, settings
:data:`decomp.transcription.BAYESIAN_SETTINGS` chosen by the validation stage) on the
held-out font: chords of polyphony 2-5 and three 8-bar pieces, frame and note scores
(onset, onset-offset F1), PSA and real-time factor side by side.

Run: ``python benchmarks/bayes_transcription.py [--dictionary-font fluidr3] [--json out.json]``
(about 5 minutes on one thread with the defaults). NMF's roll uses the shipped
hysteresis and minimum note length; the Bayesian roll the same minimum note length.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import scipy.ndimage
import torch

from decomp import BayesianNMF
from decomp.data import DEFAULT_PROTOCOL
from decomp.metrics import frame_scores
from decomp.transcription import (
    BAYESIAN_SETTINGS,
    activity_to_roll,
    default_settings,
    default_transcriber,
    evaluate_transcriber,
    protocol_features,
)
from decomp.transcription.defaults import training_frames_per_font, validation_recordings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dictionary-font", default="fluidr3",
                        choices=DEFAULT_PROTOCOL.train_soundfonts,
                        help="training font of the dictionary; the other one validates")
    parser.add_argument("--n-chords", type=int, default=5)
    parser.add_argument("--piece-bars", type=int, default=4)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--inactive-scales", type=float, nargs="+", default=[3.0, 10.0, 30.0])
    parser.add_argument("--activation-shapes", type=float, nargs="+", default=[1.0])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--test", action="store_true",
                        help="score the shipped nmf and bayes-nmf on the held-out font")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.test:
        test(args)
        return

    fonts = DEFAULT_PROTOCOL.train_soundfonts
    validation_font = next(font for font in fonts if font != args.dictionary_font)
    shipped_threshold = default_transcriber("nmf").threshold_
    settings = default_settings().set_params(threshold=shipped_threshold)
    front_end = settings._front_end()
    frames, labels = training_frames_per_font(DEFAULT_PROTOCOL, front_end)[
        fonts.index(args.dictionary_font)]
    nmf = settings.fit(frames, labels)
    recordings = validation_recordings(validation_font, DEFAULT_PROTOCOL, n_chords=args.n_chords,
                                       n_piece_bars=args.piece_bars, random_state=0)
    material = [protocol_features(recording, front_end, nmf.pitches_)
                for recording in recordings]
    features = np.concatenate([feature for feature, _ in material]).astype(np.float32)
    reference = np.concatenate([roll for _, roll in material])
    print(f"dictionary from {args.dictionary_font}; validation font {validation_font}: "
          f"{len(recordings)} recordings, "
          f"{features.shape[0]} frames; torch threads {torch.get_num_threads()}")

    rows = []
    started = time.perf_counter()
    activity = nmf._activity_batch(features)
    roll = activity_to_roll(activity, nmf.threshold_, sustain_ratio=nmf.sustain_ratio,
                            min_note_frames=nmf.min_note_frames)
    scores = frame_scores(roll, reference)
    rows.append({"method": "nmf (shipped settings)", "count_scale": None,
                 "inactive_scale": None, "activation_shape": None,
                 **{key: float(scores[key]) for key in ("precision", "recall", "f1")},
                 "seconds": time.perf_counter() - started})

    decomposer = nmf.decomposer_
    dictionary = np.asarray(decomposer.components_, dtype=np.float32)
    sources = np.asarray(decomposer.component_sources_)
    first_rows = np.unique(sources, return_index=True)[1]
    for count_scale, inactive_scale, activation_shape in itertools.product(
            args.scales, args.inactive_scales, args.activation_shapes):
        started = time.perf_counter()
        model = BayesianNMF(dictionary=dictionary, component_sources=sources,
                            count_scale=count_scale, inactive_scale=inactive_scale,
                            activation_shape=activation_shape, max_iter=args.max_iter,
                            tol=1e-5, random_state=0)
        model.fit(dictionary[first_rows])
        probabilities = np.concatenate([
            model.activity_probabilities(feature.astype(np.float32)) for feature, _ in material])
        probabilities = scipy.ndimage.median_filter(
            probabilities, size=(nmf.median_filter, 1), mode="nearest")
        scores = frame_scores(activity_to_roll(probabilities, 0.5,
                                               min_note_frames=nmf.min_note_frames), reference)
        rows.append({"method": "bayes-nmf (p >= 0.5)", "count_scale": count_scale,
                     "inactive_scale": inactive_scale, "activation_shape": activation_shape,
                     **{key: float(scores[key]) for key in ("precision", "recall", "f1")},
                     "seconds": time.perf_counter() - started})

    print(f"{'method':24s} {'counts x':>8s} {'off /':>6s} {'shape':>6s} {'P':>6s} {'R':>6s} "
          f"{'F1':>6s} {'s':>6s}")
    for row in rows:
        print(f"{row['method']:24s} {row['count_scale'] or '':>8} "
              f"{row['inactive_scale'] or '':>6} {row['activation_shape'] or '':>6} "
              f"{row['precision']:6.3f} {row['recall']:6.3f} {row['f1']:6.3f} "
              f"{row['seconds']:6.1f}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"dictionary_font": args.dictionary_font,
                       "validation_font": validation_font, "frames": int(features.shape[0]),
                       "rows": rows}, file, indent=2)


def test(args: argparse.Namespace) -> None:
    """The shipped nmf and bayes-nmf transcribers on the held-out font, side by side."""
    protocol = DEFAULT_PROTOCOL
    sets = [(f"chords polyphony {polyphony}",
             protocol.test_chords(polyphony=polyphony, n_chords=args.n_chords * 4,
                                  random_state=polyphony))
            for polyphony in (2, 3, 4, 5)]
    sets += [(f"piece seed {seed}", protocol.test_piece(random_state=seed, n_bars=8))
             for seed in range(3)]
    keys = ("precision", "recall", "f1", "note_onset_f1", "note_onset_offset_f1", "psa",
            "real_time_factor")
    print(f"held-out font {protocol.test_soundfont}; torch threads {torch.get_num_threads()}")
    print(f"  {'method':10s} {'test set':22s} {'P':>6s} {'R':>6s} {'F1':>6s} {'onset':>6s} "
          f"{'on+off':>6s} {'PSA':>6s} {'RTF':>6s}")
    results: dict[str, list[dict]] = {}
    for method in ("nmf", "bayes-nmf"):
        transcriber = default_transcriber(method)
        rows = results.setdefault(method, [])
        for label, rendered in sets:
            scores = evaluate_transcriber(transcriber, rendered)
            rows.append({"set": label, **{key: float(getattr(scores, key)) for key in keys}})
            print(f"  {method:10s} {label:22s} "
                  + " ".join(f"{rows[-1][key]:6.3f}" for key in keys), flush=True)
        means = {key: float(np.mean([row[key] for row in rows])) for key in keys}
        print(f"  {method:10s} {'mean':22s} " + " ".join(f"{means[key]:6.3f}" for key in keys))
        rows.append({"set": "mean", **means})
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"test_font": protocol.test_soundfont, "settings": BAYESIAN_SETTINGS,
                       "results": results}, file, indent=2)


if __name__ == "__main__":
    main()
