"""Piano transcription with NMF on the default protocol: choose the defaults, then test.

Stage 1 (selection, training fonts only). A dictionary is built from one training
font and decomposes the validation set of the *other* training font (a timbre the
dictionary has not heard), in both directions; a validation set is random chords of
polyphony 1-4 plus one 8-bar piece (``decomp.transcription.defaults.validation_set``). For each
median-filter width the F1-maximising threshold is found; the mean cross-font F1 ranks
the configurations. (The threshold grid is relative to the largest activity, so
normalising activity by its maximum cannot change a validation score; it only makes
the threshold independent of loudness between recordings.) Stage 1a compares front
ends x divergences with a subsampled dictionary (12 frames per note); stage 1b
compares dictionaries (all frames, 24 frames per note, 2/4/8 NMF components per note,
4 NMF components with an L1 penalty) for the best pair. The test font is never touched
in this stage.

Stage 2 (test). The winner and a DDS-paper-style reference configuration (log
front end, all training frames, Euclidean) are fitted with
``decomp.transcription.fit_transcriber`` and evaluated on the held-out font: random
chords of polyphony 2-5 and short pieces. Frame P/R/F1 (mir_eval definitions), PSA,
epsilon-sparsity, note-level onset F1 and onset-offset F1 (mir_eval.transcription:
50 ms onsets, offsets within max(50 ms, 20 % of the note)) and the real-time factor
(decomposition + post-processing time over audio duration, this machine) are printed.

Run: ``python benchmarks/transcription.py`` (about 15-25 minutes on 2 cores);
``--quick`` shrinks every set for a smoke run.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import scipy.ndimage
import torch

from decomp import NMF
from decomp.audio import Spectrogram
from decomp.data import DEFAULT_PROTOCOL, labelled_frames
from decomp.transcription import (
    PianoTranscriber,
    default_settings,
    evaluate_transcriber,
    fit_transcriber,
    protocol_features,
)
from decomp.transcription.defaults import validation_set
from decomp.transcription.piano import choose_threshold

FRONT_ENDS = {
    "linear": Spectrogram(kind="linear"),
    "log": Spectrogram(kind="log"),
    "log-c100": Spectrogram(kind="log", compression=100.0),
    "cqt": Spectrogram(kind="cqt"),
}
DIVERGENCES = {"euclidean": "frobenius", "kl": "kullback-leibler", "is": "itakura-saito"}


DICTIONARIES = {
    "frames-12": {"dictionary": "frames", "n_components_per_source": 12},
    "frames-all": {"dictionary": "frames", "n_components_per_source": None},
    "frames-24": {"dictionary": "frames", "n_components_per_source": 24},
    "nmf-2": {"dictionary": "nmf", "n_components_per_source": 2},
    "nmf-4": {"dictionary": "nmf", "n_components_per_source": 4},
    "nmf-8": {"dictionary": "nmf", "n_components_per_source": 8},
    "nmf-4-l1": {"dictionary": "nmf", "n_components_per_source": 4, "alpha": 1e-4},
}


POSTPROCESSING = [("max", width) for width in (1, 3, 5, 7, 9, 13, 17)]


def _postprocess(activity: np.ndarray, normalization: str, width: int) -> np.ndarray:
    if normalization == "max" and activity.max() > 0:
        activity = activity / activity.max()
    if width > 1:
        activity = scipy.ndimage.median_filter(activity, size=(width, 1), mode="nearest")
    return activity


def selection(args: argparse.Namespace) -> list[dict]:
    rows = _select(args, FRONT_ENDS, DIVERGENCES, {"frames-12": DICTIONARIES["frames-12"]})
    best = max(rows, key=lambda row: row["f1"])
    print(f"stage 1b: dictionaries for {best['front_end']} + {best['divergence']}", flush=True)
    others = {name: value for name, value in DICTIONARIES.items() if name != "frames-12"}
    if args.quick:
        others = {"nmf-4": DICTIONARIES["nmf-4"]}
    rows += _select(args, {best["front_end"]: FRONT_ENDS[best["front_end"]]},
                    {best["divergence"]: DIVERGENCES[best["divergence"]]}, others)
    return rows


def _select(args: argparse.Namespace, front_ends: dict, divergences: dict,
            dictionary_choices: dict) -> list[dict]:
    protocol = DEFAULT_PROTOCOL
    fonts = protocol.train_soundfonts
    rows = []
    polyphonies = (1, 2, 3, 4)
    n_chords = 4 if args.quick else 12
    for front_name, front_end in front_ends.items():
        notes = {font: protocol_features(rendered, front_end, protocol.pitches)
                 for font, rendered in zip(fonts, protocol.training_notes(), strict=True)}
        training = {font: labelled_frames(*notes[font], protocol.pitches) for font in fonts}
        validation = {font: validation_set(font, protocol, front_end, n_chords=n_chords,
                                           polyphonies=polyphonies,
                                           n_piece_bars=4 if args.quick else 8,
                                           random_state=100)
                      for font in fonts}
        for (divergence_name, beta_loss), (dictionary_name, dictionary) in itertools.product(
                divergences.items(), dictionary_choices.items()):
            started = time.perf_counter()
            per_rule: dict[tuple, list[float]] = {rule: [] for rule in POSTPROCESSING}
            for dictionary_font, validation_font in itertools.permutations(fonts, 2):
                model = NMF(beta_loss=beta_loss, max_iter=args.max_iter, random_state=0,
                            **dictionary).fit(*training[dictionary_font])
                features, roll = validation[validation_font]
                activity = np.asarray(model.source_activations(features))
                for rule in POSTPROCESSING:
                    _, f1 = choose_threshold(_postprocess(activity, *rule), roll)
                    per_rule[rule].append(f1)
            seconds = time.perf_counter() - started
            for rule, scores in per_rule.items():
                rows.append({"front_end": front_name, "divergence": divergence_name,
                             "dictionary": dictionary_name, "normalization": rule[0],
                             "median_filter": rule[1], "f1": float(np.mean(scores)),
                             "seconds": seconds})
            best = max(per_rule, key=lambda rule: np.mean(per_rule[rule]))
            print(f"  {front_name:7s} {divergence_name:10s} {dictionary_name:11s} best rule "
                  f"{best}: cross-font F1 {np.mean(per_rule[best]):.3f}  ({seconds:.0f} s)",
                  flush=True)
    return rows


def evaluate(name: str, transcriber: PianoTranscriber, args: argparse.Namespace) -> None:
    protocol = DEFAULT_PROTOCOL
    n_chords = 5 if args.quick else 20
    print(f"\n{name}: threshold {transcriber.threshold_:.4g} ({transcriber.normalization}), "
          f"cross-font validation F1 {transcriber.validation_f1_:.3f}")
    print("  P, R, F1: frames; onset F1: notes by pitch and onset (50 ms); on+off F1: and "
          "offset (mir_eval)")
    print(f"  {'test set':22s} {'P':>6s} {'R':>6s} {'F1':>6s} {'onset':>6s} {'on+off':>6s} "
          f"{'PSA':>6s} {'eps-sp':>7s} {'RTF':>6s}")
    sets = [(f"chords polyphony {p}", protocol.test_chords(polyphony=p, n_chords=n_chords,
                                                           random_state=p))
            for p in (2, 3, 4, 5)]
    sets += [(f"piece seed {seed}", protocol.test_piece(random_state=seed, n_bars=8))
             for seed in range(1 if args.quick else 3)]
    for label, rendered in sets:
        scores = evaluate_transcriber(transcriber, rendered)
        print(f"  {label:22s} {scores.precision:6.3f} {scores.recall:6.3f} {scores.f1:6.3f} "
              f"{scores.note_onset_f1:6.3f} {scores.note_onset_offset_f1:6.3f} "
              f"{scores.psa:6.3f} {scores.sparsity:7.3f} {scores.real_time_factor:6.3f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sets, for a smoke run")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--skip-selection", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()}")
    best = None
    if not args.skip_selection:
        print("stage 1a: cross-font validation on the training fonts (test font unused)")
        rows = selection(args)
        rows.sort(key=lambda row: row["f1"], reverse=True)
        print("\ntop 10 configurations by cross-font validation F1:")
        for row in rows[:10]:
            print(f"  F1 {row['f1']:.3f}  {row['front_end']:7s} {row['divergence']:10s} "
                  f"{row['dictionary']:11s} normalization={row['normalization']} "
                  f"median_filter={row['median_filter']}")
        best = rows[0]
    print("\nstage 2: held-out font", DEFAULT_PROTOCOL.test_soundfont)
    reference = PianoTranscriber(
        decomposer=NMF(beta_loss="frobenius", dictionary="frames", max_iter=args.max_iter,
                       random_state=0),
        front_end=Spectrogram(kind="log"), median_filter=1)
    candidates = {"the shipped default (decomp.transcription.default_transcriber)":
                  default_settings()}
    if best is not None:
        dictionary = DICTIONARIES[best["dictionary"]]
        candidates["stage-1 winner"] = PianoTranscriber(
            decomposer=NMF(beta_loss=DIVERGENCES[best["divergence"]], max_iter=args.max_iter,
                           random_state=0, **dictionary),
            front_end=FRONT_ENDS[best["front_end"]], normalization=best["normalization"],
            median_filter=best["median_filter"])
    candidates["DDS-paper-style reference (log, all frames, Euclidean)"] = reference
    for name, settings in candidates.items():
        started = time.perf_counter()
        fitted = fit_transcriber(settings, n_validation_chords=4 if args.quick else 15)
        print(f"\n[{name}] fitted in {time.perf_counter() - started:.0f} s")
        evaluate(name, fitted, args)


if __name__ == "__main__":
    main()
