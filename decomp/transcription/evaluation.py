"""Scoring a transcriber on rendered piano with known notes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from decomp.metrics import (
    as_notes,
    epsilon_sparsity,
    frame_scores,
    note_scores,
    precision_of_source_attribution,
)
from decomp.transcription.piano import PianoTranscriber, Transcription

__all__ = ["TranscriptionScores", "evaluate_transcriber"]


@dataclass
class TranscriptionScores:
    """Frame- and note-level scores of one transcription against its reference.

    Attributes
    ----------
    precision, recall, f1 : float
        Frame-level multi-pitch scores (mir_eval's definitions).
    note_onset_precision, note_onset_recall, note_onset_f1 : float
        Note-level scores, a note counting as found when its pitch matches and its onset
        lies within 50 ms (:func:`decomp.metrics.note_scores`).
    note_onset_offset_precision, note_onset_offset_recall, note_onset_offset_f1 : float
        The same, with the offset also within ``max(50 ms, 20 % of the reference
        note's duration)``.
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
    note_onset_precision: float
    note_onset_recall: float
    note_onset_f1: float
    note_onset_offset_precision: float
    note_onset_offset_recall: float
    note_onset_offset_f1: float
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

    Notes
    -----
    Frame scores compare ``transcription.roll`` with the reference roll on the same
    frames; note scores compare the notes of ``transcription.midi`` with the rendered
    MIDI's notes. Both leave out reference notes whose pitch the transcriber does not
    know (not in ``transcription.pitches``), so the two levels score the same notes.
    """
    started = time.perf_counter()
    transcription = transcriber.transcribe(rendered.audio)
    seconds = time.perf_counter() - started
    reference = rendered.roll(transcription.times, transcription.pitches)
    scores = frame_scores(transcription.roll, reference)
    reference_notes = as_notes(rendered.midi, "rendered.midi")
    known = np.isin(reference_notes[:, 2], transcription.pitches)
    notes = note_scores(transcription.midi, reference_notes[known])
    return TranscriptionScores(
        precision=float(scores["precision"]),
        recall=float(scores["recall"]),
        f1=float(scores["f1"]),
        note_onset_precision=notes["onset_precision"],
        note_onset_recall=notes["onset_recall"],
        note_onset_f1=notes["onset_f1"],
        note_onset_offset_precision=notes["onset_offset_precision"],
        note_onset_offset_recall=notes["onset_offset_recall"],
        note_onset_offset_f1=notes["onset_offset_f1"],
        psa=float(precision_of_source_attribution(transcription.activations, reference)),
        sparsity=float(epsilon_sparsity(transcription.activations)),
        real_time_factor=seconds / rendered.duration,
        transcription=transcription,
        reference_roll=reference,
    )
