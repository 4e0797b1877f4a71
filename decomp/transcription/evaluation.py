"""Scoring a transcriber on rendered piano with known notes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from decomp.metrics import epsilon_sparsity, frame_scores, precision_of_source_attribution
from decomp.transcription.piano import PianoTranscriber, Transcription

__all__ = ["TranscriptionScores", "evaluate_transcriber"]


@dataclass
class TranscriptionScores:
    """Frame-level scores of one transcription against its reference.

    Attributes
    ----------
    precision, recall, f1 : float
        Frame-level multi-pitch scores (mir_eval's definitions).
    psa : float
        Precision of source attribution of the raw per-pitch activity.
    sparsity : float
        ε-sparsity of the raw per-pitch activity (default ε).
    real_time_factor : float
        Transcription time (decomposition and post-processing) over audio duration.
    transcription : Transcription
    reference_roll : ndarray of bool, shape (n_frames, n_pitches)
    """

    precision: float
    recall: float
    f1: float
    psa: float
    sparsity: float
    real_time_factor: float
    transcription: Transcription
    reference_roll: np.ndarray


def evaluate_transcriber(transcriber: PianoTranscriber, rendered: Any) -> TranscriptionScores:
    """Transcribe a :class:`~decomp.data.RenderedPiano` and score it against its MIDI.

    Parameters
    ----------
    transcriber : PianoTranscriber
        Fitted.
    rendered : RenderedPiano
        Audio at the transcriber's sample rate and the notes it was rendered from.

    Returns
    -------
    TranscriptionScores
    """
    started = time.perf_counter()
    transcription = transcriber.transcribe(rendered.audio)
    seconds = time.perf_counter() - started
    reference = rendered.roll(transcription.times, transcription.pitches)
    scores = frame_scores(transcription.roll, reference)
    return TranscriptionScores(
        precision=float(scores["precision"]),
        recall=float(scores["recall"]),
        f1=float(scores["f1"]),
        psa=float(precision_of_source_attribution(transcription.activations, reference)),
        sparsity=float(epsilon_sparsity(transcription.activations)),
        real_time_factor=seconds / rendered.duration,
        transcription=transcription,
        reference_roll=reference,
    )
