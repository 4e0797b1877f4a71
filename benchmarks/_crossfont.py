"""Scoring a transcriber fitted on one training font on the other font's validation set.

What ``dds_budget.py`` and ``dds_levers.py`` both measure per direction, and the flags of
the experimental DDS recipes that ``dds_budget.py`` and ``train_default_models.py``
share.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.audio import Spectrogram
from decomp.metrics import epsilon_sparsity, precision_of_source_attribution
from decomp.transcription import (
    DDS_NORMALIZATION,
    DDS_TIMBRE_AUGMENTATION,
    PianoTranscriber,
    choose_threshold,
    default_dds_front_end,
)
from decomp.transcription.defaults import VALIDATION_POLYPHONIES

#: The flags of an experimental DDS recipe, as ``argparse`` destinations.
RECIPE_FLAGS = {"--stft-bins": "stft_bins", "--flow-learning-rate": "flow_learning_rate",
                "--flow-noise": "flow_noise", "--timbre-copies": "timbre_copies",
                "--partial-range": "partial_range", "--normalization": "normalization"}


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :data:`RECIPE_FLAGS`: a DDS method trained on another front end, with
    other flow settings, on augmented frames or thresholded on another normalisation than
    it ships with (all default to the shipped recipe)."""
    parser.add_argument("--stft-bins", type=int, default=None,
                        help="DDS methods on the log STFT cut at this many bins instead of "
                             "their shipped front end")
    parser.add_argument("--flow-learning-rate", type=float, default=None,
                        help="train the DDS flows at this learning rate")
    parser.add_argument("--flow-noise", type=float, default=None,
                        help="train the DDS flows on the frames plus noisy copies of this "
                             "standard deviation (flow_noise)")
    parser.add_argument("--timbre-copies", type=int, default=None,
                        help="train the DDS flows on the frames plus this many copies under "
                             "random equalisers (n_timbre_copies; 0: no augmentation)")
    parser.add_argument("--partial-range", type=float, nargs=2, default=None,
                        metavar=("LOW_DB", "HIGH_DB"),
                        help="the copies' equaliser: random gains per partial in this dB "
                             "range and no smooth curve (timbre_copies' partial_range; "
                             "--timbre-copies defaults to 1 with it)")
    parser.add_argument("--normalization", type=float, default=None, metavar="Q",
                        help="DDS transcribers divide each recording's activity by its "
                             "Q-quantile (PianoTranscriber's normalization; the threshold is "
                             "chosen under it; 1 divides by the maximum)")


def partials_only(partial_range: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """``timbre_copies`` options for gains per partial in ``partial_range`` (dB) alone,
    the smooth curve off: the ``-partials`` levers and ``--partial-range``."""
    return {"tilt_range": (0.0, 0.0), "band_range": (0.0, 0.0),
            "partial_range": (float(partial_range[0]), float(partial_range[1]))}


def recipe_timbre_arguments(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``training_frames_per_font`` / ``fit_transcriber`` arguments (``n_timbre_copies``,
    ``timbre_options``) of ``method``'s training frames: the shipped augmentation
    (``DDS_TIMBRE_AUGMENTATION``) unless ``--timbre-copies`` or ``--partial-range`` is
    given; copies alone are under smooth equalisers (``--timbre-copies 0``: none); with a
    partial range, gains per partial alone, one copy unless told otherwise."""
    if args.partial_range is not None:
        return {"n_timbre_copies": 1 if args.timbre_copies is None else args.timbre_copies,
                "timbre_options": partials_only(args.partial_range)}
    if args.timbre_copies is not None:
        return {"n_timbre_copies": args.timbre_copies, "timbre_options": None}
    return dict(DDS_TIMBRE_AUGMENTATION[method])


def recipe_transcriber_params(method: str, args: argparse.Namespace) -> dict[str, float | str]:
    """``method``'s :class:`~decomp.transcription.PianoTranscriber` normalisation: the
    shipped one (``DDS_NORMALIZATION``) unless ``--normalization`` is given (1: ``"max"``)."""
    if args.normalization is None:
        return {"normalization": DDS_NORMALIZATION[method]}
    return {"normalization": "max" if args.normalization == 1 else args.normalization}


def recipe_front_end(method: str, args: argparse.Namespace) -> Spectrogram:
    """The method's shipped front end, or the log STFT cut at ``--stft-bins`` bins."""
    if args.stft_bins is None:
        return default_dds_front_end(method)
    return default_dds_front_end("dds2").replace(n_bins=args.stft_bins)


def recipe_flow_params(args: argparse.Namespace) -> dict[str, float]:
    """The decomposer parameters ``--flow-learning-rate`` and ``--flow-noise`` set."""
    return {name: getattr(args, name) for name in ("flow_learning_rate", "flow_noise")
            if getattr(args, name) is not None}


#: How :func:`validation_scores` scores, as the benchmarks' JSON records it: results
#: written before 2026-12-05 pooled the validation recordings of polyphony 1-4 under one
#: normalisation and say ``"pooled"``.
VALIDATION_SCORING = (f"per recording, polyphony {min(VALIDATION_POLYPHONIES)}-"
                      f"{max(VALIDATION_POLYPHONIES)}")


def validation_scores(transcriber: PianoTranscriber,
                      recordings: Sequence[tuple[np.ndarray, np.ndarray]],
                      sustain_ratios: Sequence[float]) -> dict[str, Any]:
    """Transcribe validation recordings with the fitted ``transcriber``.

    ``recordings`` holds one ``(features, roll)`` pair per recording (features of shape
    (n_frames, n_bins), bool roll of shape (n_frames, n_pitches); what
    :func:`~decomp.transcription.defaults.validation_features` gives). Each recording's
    activity is normalised alone, as ``transcribe`` and ``fit_transcriber`` normalise it,
    and the recordings' frames are then pooled.

    Returns ``seconds`` (the decompositions), ``psa`` and ``sparsity`` of the raw activity
    on the frames where the roll sounds, and ``thresholds``: per sustain ratio, the
    F1-maximising ``(threshold, frame F1)`` of the smoothed activity.
    """
    begun = time.perf_counter()
    raws = [transcriber._source_activity(transcriber._feature_chunks(features))
            for features, _ in recordings]
    seconds = time.perf_counter() - begun
    activity = np.concatenate([transcriber._postprocess(raw) for raw in raws])
    raw = np.concatenate(raws)
    roll = np.concatenate([roll for _, roll in recordings])
    sounding = roll.any(axis=1)
    return {
        "seconds": seconds,
        "psa": float(precision_of_source_attribution(raw[sounding], roll[sounding])),
        "sparsity": float(epsilon_sparsity(raw[sounding])),
        "thresholds": {sustain: tuple(float(value) for value in choose_threshold(
            activity, roll, sustain_ratio=sustain, min_note_frames=transcriber.min_note_frames))
            for sustain in sustain_ratios},
    }
