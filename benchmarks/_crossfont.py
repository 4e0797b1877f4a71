"""Scoring a transcriber fitted on one training font on the other font's validation set.

What ``dds_budget.py`` and ``dds_levers.py`` both measure per direction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.metrics import epsilon_sparsity, precision_of_source_attribution
from decomp.transcription import PianoTranscriber, choose_threshold


def validation_scores(transcriber: PianoTranscriber, features: np.ndarray, roll: np.ndarray,
                      sustain_ratios: Sequence[float]) -> dict[str, Any]:
    """Transcribe ``features`` (n_frames, n_bins) with the fitted ``transcriber``.

    Returns ``seconds`` (the decomposition), ``psa`` and ``sparsity`` of the raw activity on
    the frames where ``roll`` (n_frames, n_pitches) sounds, and ``thresholds``: per sustain
    ratio, the F1-maximising ``(threshold, frame F1)`` of the smoothed activity.
    """
    begun = time.perf_counter()
    raw = transcriber._source_activity(transcriber._feature_chunks(features))
    seconds = time.perf_counter() - begun
    activity = transcriber._postprocess(raw)  # normalised, smoothed
    sounding = roll.any(axis=1)
    return {
        "seconds": seconds,
        "psa": float(precision_of_source_attribution(raw[sounding], roll[sounding])),
        "sparsity": float(epsilon_sparsity(raw[sounding])),
        "thresholds": {sustain: tuple(float(value) for value in choose_threshold(
            activity, roll, sustain_ratio=sustain, min_note_frames=transcriber.min_note_frames))
            for sustain in sustain_ratios},
    }
