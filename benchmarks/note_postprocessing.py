"""Note post-processing: hysteresis (``sustain_ratio``) measured on validation only.

For each ``sustain_ratio`` the threshold is re-chosen by frame F1
(:func:`decomp.transcription.choose_threshold`, as ``threshold="auto"`` does), then the
roll it gives is scored at the frame level and, through its MIDI notes, at the note level
(onset F1 and onset-offset F1, :func:`decomp.metrics.note_scores`).

``--method nmf`` (default): the default NMF transcriber's settings, cross-font exactly as
:func:`decomp.transcription.fit_transcriber` chooses its threshold: a dictionary from
one training font decomposes the validation set of the other
(:func:`decomp.transcription.defaults.validation_set`: 15 chords of each polyphony 1-4 and an
8-bar piece, seed 0), in both directions; the scores are the mean of the two directions.

``--method dds2`` / ``dds3``: the shipped DDS transcriber on the validation recordings of
both training fonts, each font's recordings normalised together as one. Its flows were
trained on both fonts, so this is not cross-font (it is optimistic for every ratio alike);
it compares ratios only. ``--n-chords`` and ``--piece-bars`` shrink the sets.

The test font is never used. Run: ``python benchmarks/note_postprocessing.py``
(about 2 minutes on one thread for NMF).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from sklearn.base import clone

from decomp.audio import roll_to_midi
from decomp.data import DEFAULT_PROTOCOL
from decomp.metrics import as_notes, note_scores
from decomp.transcription import (
    PianoTranscriber,
    activity_to_roll,
    choose_threshold,
    default_settings,
    default_transcriber,
    protocol_features,
)
from decomp.transcription.defaults import training_frames_per_font, validation_recordings

RATIOS = (1.0, 0.7, 0.5, 0.3)


def validation_material(font: str, front_end, args: argparse.Namespace) -> dict:
    """One font's validation recordings, concatenated: features, roll, notes, times."""
    protocol = DEFAULT_PROTOCOL
    recordings = validation_recordings(font, protocol, n_chords=args.n_chords,
                                       n_piece_bars=args.piece_bars, random_state=0)
    parts = [protocol_features(recording, front_end, protocol.pitches)
             for recording in recordings]
    n_frames = [features.shape[0] for features, _ in parts]
    times = front_end.frame_times(sum(n_frames))
    starts = np.concatenate([[0], np.cumsum(n_frames)[:-1]])
    notes = np.concatenate([as_notes(recording.midi, "midi") + [times[start], times[start], 0]
                            for recording, start in zip(recordings, starts, strict=True)])
    return {"features": np.concatenate([features for features, _ in parts]),
            "roll": np.concatenate([roll for _, roll in parts]),
            "notes": notes, "times": times}


def score_ratios(transcriber: PianoTranscriber, material: dict) -> dict[float, dict]:
    """Scores of every ratio on one validation set (threshold re-chosen per ratio)."""
    # Normalised and smoothed as at transcription time and as threshold="auto" sees it.
    activity = transcriber._activity_batch(material["features"])
    velocities = np.clip(activity / max(float(activity.max()), 1e-12), 0, 1)
    results = {}
    for ratio in RATIOS:
        threshold, frame_f1 = choose_threshold(
            activity, material["roll"], sustain_ratio=ratio,
            min_note_frames=transcriber.min_note_frames)
        roll = activity_to_roll(activity, threshold, sustain_ratio=ratio,
                                min_note_frames=transcriber.min_note_frames)
        midi = roll_to_midi(roll, material["times"], transcriber.pitches_,
                            velocities=velocities)
        notes = note_scores(midi, material["notes"])
        results[ratio] = {"threshold": threshold, "frame_f1": frame_f1,
                          "onset_f1": notes["onset_f1"],
                          "onset_precision": notes["onset_precision"],
                          "onset_recall": notes["onset_recall"],
                          "onset_offset_f1": notes["onset_offset_f1"]}
    return results


def print_table(title: str, runs: list[dict[float, dict]]) -> None:
    print(f"\n{title}")
    print(f"  {'sustain_ratio':>13s} {'threshold':>9s} {'frame F1':>8s} {'onset P':>7s} "
          f"{'onset R':>7s} {'onset F1':>8s} {'on+off F1':>9s}")
    for ratio in RATIOS:
        mean = {key: float(np.mean([run[ratio][key] for run in runs]))
                for key in runs[0][ratio]}
        print(f"  {ratio:13.1f} {mean['threshold']:9.4f} {mean['frame_f1']:8.3f} "
              f"{mean['onset_precision']:7.3f} {mean['onset_recall']:7.3f} "
              f"{mean['onset_f1']:8.3f} {mean['onset_offset_f1']:9.3f}", flush=True)


def nmf(args: argparse.Namespace) -> None:
    protocol = DEFAULT_PROTOCOL
    settings = default_settings()  # its sustain_ratio is overridden by each ratio below
    front_end = settings.front_end
    fonts = protocol.train_soundfonts
    per_font = dict(zip(fonts, training_frames_per_font(protocol, front_end), strict=True))
    material = {font: validation_material(font, front_end, args) for font in fonts}
    runs = []
    for dictionary_font, validation_font in itertools.permutations(fonts, 2):
        started = time.perf_counter()
        partial = clone(settings).set_params(threshold=1.0).fit(*per_font[dictionary_font])
        runs.append(score_ratios(partial, material[validation_font]))
        print(f"  dictionary {dictionary_font} -> validation {validation_font}: "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        print_table(f"  {dictionary_font} -> {validation_font}", runs[-1:])
    print_table("NMF default, cross-font validation (mean of both directions)", runs)


def shipped_dds(method: str, args: argparse.Namespace) -> None:
    transcriber = default_transcriber(method)
    name = f"shipped {method.upper().replace('DDS', 'DDS-')}"
    runs = []
    for font in DEFAULT_PROTOCOL.train_soundfonts:
        started = time.perf_counter()
        runs.append(score_ratios(transcriber, validation_material(
            font, transcriber.front_end, args)))
        print(f"  {name} on {font}: {time.perf_counter() - started:.0f} s", flush=True)
    print_table(f"{name} on both training fonts (not cross-font)", runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("nmf", "dds2", "dds3"), default="nmf")
    parser.add_argument("--n-chords", type=int, default=15, help="chords per polyphony")
    parser.add_argument("--piece-bars", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    if args.method == "nmf":
        nmf(args)
    else:
        shipped_dds(args.method, args)


if __name__ == "__main__":
    main()
