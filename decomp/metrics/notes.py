"""Note-level transcription scores: onset and onset-offset precision, recall and F1."""

from __future__ import annotations

import os
import warnings
from numbers import Real
from typing import Any

import mir_eval
import numpy as np
import pretty_midi

from decomp._validation import StrictInterval, check_params
from decomp.metrics._common import as_float64, check_finite
from decomp.metrics.multipitch import midi_to_hz

__all__ = ["note_scores", "as_notes", "ZERO_LENGTH_DURATION"]

ZERO_LENGTH_DURATION = 1e-3
"""Seconds given to a note whose offset equals its onset before scoring (mir_eval refuses
zero-length intervals; the note is kept so that it still counts)."""

_NOTES_LAYOUT = "(n_notes, 3) with columns (onset_s, offset_s, midi_pitch)"


def _midi_notes(midi: pretty_midi.PrettyMIDI) -> np.ndarray:
    # Drum tracks hold no pitches, as in decomp.audio.midi_to_roll.
    rows = [(note.start, note.end, note.pitch)
            for instrument in midi.instruments if not instrument.is_drum
            for note in instrument.notes]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def as_notes(notes: Any, name: str = "notes") -> np.ndarray:
    """Notes as a float64 array of (onset_s, offset_s, midi_pitch) rows, checked.

    Parameters
    ----------
    notes : array-like of shape (n_notes, 3), pretty_midi.PrettyMIDI, path, or an object \
with a ``midi`` attribute
        Rows ``(onset, offset, pitch)``: times in seconds, pitch a MIDI number (fractional
        values allowed), as :func:`decomp.audio.roll_to_notes` returns them. An empty
        sequence means no notes. A ``PrettyMIDI`` (or a path to a MIDI file) gives the
        notes of its non-drum instruments; an object with a ``midi`` attribute
        (:class:`~decomp.transcription.Transcription`,
        :class:`~decomp.data.RenderedPiano`) gives the notes of that MIDI.
    name : str
        The argument's name, for error messages.

    Returns
    -------
    notes : ndarray of shape (n_notes, 3), float64
        Sorted as given (not re-sorted); zero-length notes are kept as they are.

    Raises
    ------
    TypeError
        If ``notes`` is none of the above or holds non-numbers.
    ValueError
        If the shape is wrong, a value is NaN or infinite, an onset is negative, a note
        ends before it starts, or a pitch lies outside [0, 127].
    FileNotFoundError
        If ``notes`` is a path that does not exist.
    """
    if isinstance(notes, (str, os.PathLike)):
        if not os.path.isfile(notes):
            raise FileNotFoundError(f"{name}: no MIDI file at {os.fspath(notes)!r}.")
        notes = pretty_midi.PrettyMIDI(os.fspath(notes))
    midi = getattr(notes, "midi", None)
    if isinstance(midi, pretty_midi.PrettyMIDI):
        notes = midi
    if isinstance(notes, pretty_midi.PrettyMIDI):
        values = _midi_notes(notes)
    else:
        values = as_float64(notes, name).detach().cpu().numpy()
        if values.size == 0 and values.ndim <= 2:
            values = values.reshape(0, 3)
    if values.ndim != 2 or values.shape[1] != 3:
        raise ValueError(f"{name} must have shape {_NOTES_LAYOUT}; got shape {values.shape}.")
    check_finite(values, name)
    onsets, offsets, pitches = values.T
    if (onsets < 0).any():
        index = int(np.argmax(onsets < 0))
        raise ValueError(
            f"{name} must have onsets >= 0 s; got {onsets[index]:g} s at note {index}."
        )
    if (offsets < onsets).any():
        index = int(np.argmax(offsets < onsets))
        raise ValueError(
            f"{name} must have offsets >= onsets; note {index} starts at "
            f"{onsets[index]:g} s and ends at {offsets[index]:g} s."
        )
    if (pitches < 0).any() or (pitches > 127).any():
        index = int(np.argmax((pitches < 0) | (pitches > 127)))
        raise ValueError(
            f"{name} must have MIDI pitches in [0, 127]; got {pitches[index]:g} at note {index}."
        )
    return values


def _intervals_and_hz(notes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    intervals = notes[:, :2].copy()
    zero_length = intervals[:, 1] <= intervals[:, 0]
    intervals[zero_length, 1] = intervals[zero_length, 0] + ZERO_LENGTH_DURATION
    return intervals, midi_to_hz(notes[:, 2])


def _ratio(numerator: int, denominator: int) -> float:
    # 0 for an empty denominator, as mir_eval and frame_scores do.
    return numerator / denominator if denominator > 0 else 0.0


def _scores(n_matches: int, n_estimated: int, n_reference: int) -> tuple[float, float, float]:
    precision = _ratio(n_matches, n_estimated)
    recall = _ratio(n_matches, n_reference)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def note_scores(
    estimated_notes: Any,
    reference_notes: Any,
    *,
    onset_tolerance: float = 0.05,
    offset_ratio: float = 0.2,
    offset_min_tolerance: float = 0.05,
) -> dict[str, Any]:
    """Note-level precision, recall and F1, onset-only and onset-offset, by mir_eval.

    An estimated note matches a reference note when their pitches lie within half a
    semitone (mir_eval's 50 cents: the same MIDI number for integer pitches) and their
    onsets within ``onset_tolerance`` seconds; for the onset-offset scores their offsets
    must also lie within ``max(offset_min_tolerance, offset_ratio * reference duration)``.
    Each note is matched at most once (a maximum bipartite matching, by
    :func:`mir_eval.transcription.match_notes`; distances are rounded to 0.1 ms and
    compared with ``<=``). With ``M`` matches, ``precision = M / n_estimated``,
    ``recall = M / n_reference`` and F1 is their harmonic mean. A score whose denominator
    is 0 is 0 (no estimated notes: precision 0; no reference notes: recall 0), as in
    mir_eval and :func:`frame_scores`, so two empty lists score 0, not NaN.

    A zero-length note (offset equal to onset, which MIDI files can hold) is kept and
    scored as lasting :data:`ZERO_LENGTH_DURATION` (1 ms), since mir_eval refuses
    intervals that are not strictly positive.

    Parameters
    ----------
    estimated_notes : array-like of shape (n_notes, 3), pretty_midi.PrettyMIDI, path, or \
an object with a ``midi`` attribute
        The transcribed notes as rows ``(onset_s, offset_s, midi_pitch)``, or a MIDI
        object, file or transcription whose notes to use (see :func:`as_notes`).
    reference_notes : the same kinds
        The ground-truth notes, e.g. a :class:`~decomp.data.RenderedPiano`.
    onset_tolerance : float, default=0.05
        Largest onset difference in seconds for a match (mir_eval's default, 50 ms).
    offset_ratio : float, default=0.2
        Offset tolerance as a share of the reference note's duration (onset-offset
        scores only).
    offset_min_tolerance : float, default=0.05
        Smallest offset tolerance in seconds (onset-offset scores only).

    Returns
    -------
    scores : dict
        ``"onset_precision"``, ``"onset_recall"``, ``"onset_f1"``: matching on pitch and
        onset; ``"onset_offset_precision"``, ``"onset_offset_recall"``,
        ``"onset_offset_f1"``: on pitch, onset and offset (all ``float`` in [0, 1]);
        ``"n_estimated"``, ``"n_reference"``, ``"onset_matches"``,
        ``"onset_offset_matches"``: the counts, as ``int``.

    Raises
    ------
    TypeError
        If notes are not array-like or a MIDI, or a tolerance is not a real number.
    ValueError
        If notes have the wrong shape, hold NaN or infinity, a negative onset, an offset
        before its onset or a pitch outside [0, 127], or a tolerance is negative.

    See Also
    --------
    frame_scores : frame-level scores of piano rolls.

    Notes
    -----
    The onset-only F1 is symmetric: swapping estimate and reference swaps precision and
    recall. The onset-offset scores are not, since the offset tolerance depends on the
    reference note's duration.

    Examples
    --------
    >>> reference = [(0.0, 1.0, 60), (0.5, 1.0, 64)]
    >>> estimate = [(0.02, 0.6, 60), (0.5, 1.01, 64), (0.5, 1.0, 67)]
    >>> scores = note_scores(estimate, reference)
    >>> scores["onset_recall"], scores["onset_offset_recall"]
    (1.0, 0.5)
    >>> round(scores["onset_f1"], 3), scores["onset_offset_f1"]
    (0.8, 0.4)
    """
    estimate = as_notes(estimated_notes, "estimated_notes")
    reference = as_notes(reference_notes, "reference_notes")
    seconds = [StrictInterval(Real, 0, None, closed="left")]  # finite, >= 0
    check_params({"onset_tolerance": seconds, "offset_ratio": seconds,
                  "offset_min_tolerance": seconds},
                 {"onset_tolerance": onset_tolerance, "offset_ratio": offset_ratio,
                  "offset_min_tolerance": offset_min_tolerance}, "note_scores")
    onset_tolerance, offset_ratio = float(onset_tolerance), float(offset_ratio)
    offset_min_tolerance = float(offset_min_tolerance)
    n_estimated, n_reference = len(estimate), len(reference)
    onset_matches = onset_offset_matches = 0
    if n_estimated and n_reference:  # mir_eval's matching needs notes on both sides
        reference_intervals, reference_hz = _intervals_and_hz(reference)
        estimated_intervals, estimated_hz = _intervals_and_hz(estimate)
        common = (reference_intervals, reference_hz, estimated_intervals, estimated_hz)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mir_eval.transcription.validate(*common)
            onset_matches = len(mir_eval.transcription.match_notes(
                *common, onset_tolerance=onset_tolerance, offset_ratio=None))
            onset_offset_matches = len(mir_eval.transcription.match_notes(
                *common, onset_tolerance=onset_tolerance, offset_ratio=offset_ratio,
                offset_min_tolerance=offset_min_tolerance))
    onset = _scores(onset_matches, n_estimated, n_reference)
    onset_offset = _scores(onset_offset_matches, n_estimated, n_reference)
    return {
        "onset_precision": onset[0],
        "onset_recall": onset[1],
        "onset_f1": onset[2],
        "onset_offset_precision": onset_offset[0],
        "onset_offset_recall": onset_offset[1],
        "onset_offset_f1": onset_offset[2],
        "n_estimated": n_estimated,
        "n_reference": n_reference,
        "onset_matches": onset_matches,
        "onset_offset_matches": onset_offset_matches,
    }
