"""Piano rolls on a frame grid: MIDI -> roll, roll -> notes -> MIDI.

A roll is a boolean array of shape (n_frames, n_pitches): entry ``[t, j]`` says whether
MIDI pitch ``pitches[j]`` sounds in frame ``t``. Frame ``t`` is the instant
``frame_times[t]`` (for librosa's ``center=True`` grid, ``t * hop_length / sample_rate``
seconds), and a note ``[start, end)`` is active in frame ``t`` iff
``start <= frame_times[t] < end``. With this rule ``roll -> MIDI -> roll`` is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np
import pretty_midi

from decomp._validation import StrictInterval, check_params

__all__ = ["midi_to_roll", "roll_to_midi", "roll_to_notes"]

PIANO_PITCHES = range(21, 109)
"""The 88 keys of a piano, A0 (21) to C8 (108)."""


def check_pitches(pitches: Any, name: str = "pitches") -> np.ndarray:
    """Return ``pitches`` as a 1-d int64 array of distinct MIDI numbers in [0, 127]."""
    if isinstance(pitches, (str, bytes)) or not isinstance(pitches, (Iterable, np.ndarray)):
        raise TypeError(
            f"{name} must be an iterable of MIDI pitch numbers; got {type(pitches).__name__}."
        )
    values = np.asarray(list(pitches))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-d sequence of MIDI pitch numbers; "
            f"got shape {values.shape}."
        )
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        # Accept 60.0 but not 60.5: a fractional pitch is a bug upstream, not a rounding issue.
        if not (
            np.issubdtype(values.dtype, np.floating)
            and np.all(np.isfinite(values))
            and np.all(values == np.round(values))
        ):
            raise TypeError(f"{name} must hold integer MIDI pitch numbers; got {values[:5]}...")
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() > 127:
        raise ValueError(
            f"{name} must lie in [0, 127] (MIDI pitch numbers); "
            f"got values from {values.min()} to {values.max()}."
        )
    if np.unique(values).size != values.size:
        raise ValueError(f"{name} must not repeat a pitch; got {values.size} entries with repeats.")
    return values


def _check_frame_times(frame_times: Any, name: str = "frame_times") -> np.ndarray:
    """Return ``frame_times`` as a 1-d float64 array of finite, strictly increasing seconds."""
    try:
        times = np.asarray(frame_times, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a 1-d array of times in seconds; "
            f"got {type(frame_times).__name__}."
        ) from None
    if times.ndim != 1:
        raise ValueError(f"{name} must be 1-d (n_frames,); got shape {times.shape}.")
    if not np.all(np.isfinite(times)):
        raise ValueError(f"{name} contains NaN or infinity.")
    if times.size > 1 and not np.all(np.diff(times) > 0):
        first = int(np.argmax(np.diff(times) <= 0))
        raise ValueError(
            f"{name} must be strictly increasing; got {times[first]} then "
            f"{times[first + 1]} at frames {first} and {first + 1}."
        )
    return times


def check_roll(roll: Any, n_frames: int, n_pitches: int, name: str = "roll") -> np.ndarray:
    """Return ``roll`` as a bool array of shape (n_frames, n_pitches); 0/1 numbers are accepted."""
    values = np.asarray(roll)
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-d (n_frames, n_pitches); got shape {values.shape}.")
    if values.shape != (n_frames, n_pitches):
        raise ValueError(
            f"{name} must have shape (n_frames, n_pitches) = ({n_frames}, {n_pitches}) to match "
            f"frame_times and pitches; got {values.shape}."
        )
    if values.dtype != bool:
        if not (np.issubdtype(values.dtype, np.number) and np.isin(values, (0, 1)).all()):
            raise TypeError(
                f"{name} must be a bool array (or hold only 0 and 1); got dtype {values.dtype}."
            )
        values = values.astype(bool)
    return values


def load_midi(midi: Any, name: str = "midi") -> pretty_midi.PrettyMIDI:
    """Accept a ``PrettyMIDI`` or a path to a MIDI file."""
    if isinstance(midi, pretty_midi.PrettyMIDI):
        return midi
    if isinstance(midi, (str, os.PathLike)):
        if not os.path.isfile(midi):
            raise FileNotFoundError(f"{name}: no MIDI file at {os.fspath(midi)!r}.")
        return pretty_midi.PrettyMIDI(os.fspath(midi))
    raise TypeError(
        f"{name} must be a pretty_midi.PrettyMIDI or a path to a MIDI file; "
        f"got {type(midi).__name__}."
    )


def midi_to_roll(
    midi: pretty_midi.PrettyMIDI | str | os.PathLike,
    frame_times: Any,
    pitches: Iterable[int] = PIANO_PITCHES,
) -> np.ndarray:
    """Sample the notes of a MIDI file on a frame grid.

    Parameters
    ----------
    midi : pretty_midi.PrettyMIDI or path
        The notes. Drum tracks are ignored, and so are pitches not in ``pitches``.
    frame_times : array-like of shape (n_frames,)
        Strictly increasing frame times in seconds, e.g.
        ``librosa.frames_to_time(np.arange(n_frames), sr=sr, hop_length=hop)``.
    pitches : iterable of int, default range(21, 109)
        MIDI numbers of the roll's columns, in column order.

    Returns
    -------
    roll : ndarray of bool, shape (n_frames, n_pitches)
        ``roll[t, j]`` is True iff a note of pitch ``pitches[j]`` satisfies
        ``start <= frame_times[t] < end``.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type, shape or values.
    FileNotFoundError
        If ``midi`` is a path that does not exist.

    Examples
    --------
    >>> import numpy as np, pretty_midi
    >>> pm = pretty_midi.PrettyMIDI()
    >>> piano = pretty_midi.Instrument(program=0)
    >>> piano.notes.append(pretty_midi.Note(velocity=90, pitch=60, start=0.1, end=0.3))
    >>> pm.instruments.append(piano)
    >>> midi_to_roll(pm, np.arange(5) * 0.1, pitches=[60, 62])[:, 0]
    array([False,  True,  True, False, False])
    """
    pm = load_midi(midi)
    times = _check_frame_times(frame_times)
    pitch_array = check_pitches(pitches)
    column = {int(p): j for j, p in enumerate(pitch_array)}
    roll = np.zeros((times.size, pitch_array.size), dtype=bool)
    for instrument in pm.instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            j = column.get(int(note.pitch))
            if j is None:
                continue
            # 'left' on both ends implements start <= t < end.
            first = np.searchsorted(times, note.start, side="left")
            stop = np.searchsorted(times, note.end, side="left")
            roll[first:stop, j] = True
    return roll


def roll_to_notes(
    roll: Any, frame_times: Any, pitches: Iterable[int]
) -> list[tuple[float, float, int]]:
    """Turn each run of consecutive active frames into one note.

    Parameters
    ----------
    roll : array-like of bool, shape (n_frames, n_pitches)
        The piano roll.
    frame_times : array-like of shape (n_frames,)
        Strictly increasing frame times in seconds.
    pitches : iterable of int
        MIDI numbers of the roll's columns.

    Returns
    -------
    notes : list of (start, end, pitch)
        Sorted by start, then pitch. A run over frames ``s .. e-1`` gives
        ``(frame_times[s], frame_times[e], pitch)``; a run reaching the last frame ends one
        frame period (the last spacing of ``frame_times``) after the last frame time.

    Raises
    ------
    ValueError
        If shapes disagree, or a run reaches the last frame of a one-frame grid (the frame
        period is then unknown).
    """
    return [(start, end, pitch) for start, end, pitch, _, _ in _runs(roll, frame_times, pitches)]


def _runs(
    roll: Any, frame_times: Any, pitches: Iterable[int]
) -> list[tuple[float, float, int, int, int]]:
    """Runs of active frames as ``(start, end, pitch, first_frame, stop_frame)``, sorted."""
    times = _check_frame_times(frame_times)
    pitch_array = check_pitches(pitches)
    active = check_roll(roll, times.size, pitch_array.size)
    n_frames = times.size
    # Pad with inactive frames so every run has a rising and a falling edge.
    padded = np.zeros((n_frames + 2, pitch_array.size), dtype=np.int8)
    padded[1:-1] = active
    edges = np.diff(padded, axis=0)  # (n_frames + 1, n_pitches): +1 at onsets, -1 after offsets
    onset_frames, onset_columns = np.nonzero(edges == 1)
    stop_frames, stop_columns = np.nonzero(edges == -1)
    # np.nonzero scans row-major; sort both by (column, frame) so onsets pair with stops.
    onset_order = np.lexsort((onset_frames, onset_columns))
    stop_order = np.lexsort((stop_frames, stop_columns))
    if stop_frames.size and stop_frames.max() == n_frames and n_frames < 2:
        raise ValueError(
            "frame_times must have at least 2 entries to end a note on the last frame "
            f"(the frame period is unknown); got {n_frames}."
        )
    # The time of the (virtual) frame after the last one.
    end_time = times[-1] + (times[-1] - times[-2]) if n_frames >= 2 else np.inf
    extended = np.append(times, end_time)
    runs = []
    for first, column, stop in zip(
        onset_frames[onset_order], onset_columns[onset_order], stop_frames[stop_order],
        strict=True,
    ):
        runs.append(
            (float(times[first]), float(extended[stop]), int(pitch_array[column]), int(column),
             int(first), int(stop))
        )
    runs.sort(key=lambda run: (run[0], run[2]))
    return [(start, end, pitch, first, stop) for start, end, pitch, _column, first, stop in runs]


def roll_to_midi(
    roll: Any,
    frame_times: Any,
    pitches: Iterable[int],
    *,
    velocities: Any = None,
    program: int = 0,
    min_duration: float = 0.0,
) -> pretty_midi.PrettyMIDI:
    """Write a piano roll as a one-instrument MIDI file.

    Parameters
    ----------
    roll : array-like of bool, shape (n_frames, n_pitches)
        The piano roll.
    frame_times : array-like of shape (n_frames,)
        Strictly increasing frame times in seconds.
    pitches : iterable of int
        MIDI numbers of the roll's columns.
    velocities : array-like of shape (n_frames, n_pitches), optional
        Loudness in [0, 1] per frame and pitch (e.g. normalised activations). A note's
        velocity is ``round(1 + 126 * mean over its run)``, so 0 -> 1 and 1 -> 127.
        Default: every note has velocity 100.
    program : int, default 0
        General-MIDI program (0 is the acoustic grand piano).
    min_duration : float, default 0.0
        Notes shorter than this (seconds) are dropped.

    Returns
    -------
    pretty_midi.PrettyMIDI
        One non-drum instrument; notes as in :func:`roll_to_notes`.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type, shape or values.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.array([[0, 1], [1, 1], [1, 0]], dtype=bool)
    >>> pm = roll_to_midi(roll, [0.0, 0.5, 1.0], pitches=[60, 64])
    >>> [(n.pitch, n.start, n.end) for n in pm.instruments[0].notes]
    [(64, 0.0, 1.0), (60, 0.5, 1.5)]
    """
    check_params({"program": [StrictInterval(Integral, 0, 127, closed="both")],
                  "min_duration": [StrictInterval(Real, 0, None, closed="left")]},
                 {"program": program, "min_duration": min_duration}, "roll_to_midi")
    program, min_duration = int(program), float(min_duration)
    runs = _runs(roll, frame_times, pitches)
    loudness = None
    if velocities is not None:
        loudness = np.asarray(velocities, dtype=np.float64)
        expected = np.shape(np.asarray(roll))
        if loudness.shape != expected:
            raise ValueError(
                f"velocities must have the roll's shape {expected}; got {loudness.shape}."
            )
        if not np.all(np.isfinite(loudness)) or loudness.min() < 0 or loudness.max() > 1:
            raise ValueError(
                "velocities must be finite and lie in [0, 1]; got values from "
                f"{np.nanmin(loudness):.3g} to {np.nanmax(loudness):.3g}."
            )
    pitch_array = check_pitches(pitches)
    column = {int(p): j for j, p in enumerate(pitch_array)}
    pm = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=int(program))
    for start, end, pitch, first, stop in runs:
        if end - start < min_duration:
            continue
        velocity = 100
        if loudness is not None:
            mean = float(loudness[first:stop, column[pitch]].mean())
            velocity = int(round(1 + 126 * mean))
        instrument.notes.append(pretty_midi.Note(velocity, pitch, start, end))
    pm.instruments.append(instrument)
    return pm
