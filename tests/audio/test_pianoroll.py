"""Tests for decomp.audio.pianoroll."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from decomp.audio.pianoroll import midi_to_roll, roll_to_midi, roll_to_notes

HOP, SR = 512, 16000
PERIOD = HOP / SR


def _grid(n_frames: int) -> np.ndarray:
    """librosa center=True frame times."""
    return np.arange(n_frames) * HOP / SR


def _midi(*notes, is_drum=False):
    pm = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=0, is_drum=is_drum)
    for pitch, start, end in notes:
        instrument.notes.append(pretty_midi.Note(80, pitch, start, end))
    pm.instruments.append(instrument)
    return pm


# ------------------------------------------------------------------------ midi_to_roll


def test_note_boundaries_follow_start_le_t_lt_end():
    times = _grid(10)
    roll = midi_to_roll(_midi((60, times[2], times[5])), times, pitches=[60])
    assert np.flatnonzero(roll[:, 0]).tolist() == [2, 3, 4]
    # Just after a frame time: that frame is not yet active; just after the end: active.
    roll = midi_to_roll(_midi((60, times[2] + 1e-6, times[5] + 1e-6)), times, pitches=[60])
    assert np.flatnonzero(roll[:, 0]).tolist() == [3, 4, 5]


def test_columns_follow_pitches_and_others_are_ignored():
    pm = _midi((64, 0.0, 0.1), (60, 0.1, 0.2), (100, 0.0, 0.3))
    pm.instruments.append(_midi((64, 0.2, 0.3), is_drum=True).instruments[0])
    times = np.array([0.0, 0.1, 0.2])
    roll = midi_to_roll(pm, times, pitches=[64, 60])
    assert roll.dtype == bool and roll.shape == (3, 2)
    assert roll.tolist() == [[True, False], [False, True], [False, False]]


def test_default_pitches_are_the_88_keys():
    roll = midi_to_roll(_midi((21, 0, 1), (108, 0, 1), (20, 0, 1)), [0.5])
    assert roll.shape == (1, 88)
    assert roll[0, 0] and roll[0, -1] and roll.sum() == 2


def test_overlapping_notes_and_notes_outside_the_grid():
    pm = _midi((60, 0.0, 0.25), (60, 0.15, 0.45), (60, 5.0, 6.0), (60, -1.0, -0.5))
    roll = midi_to_roll(pm, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], pitches=[60])
    assert roll[:, 0].tolist() == [True, True, True, True, True, False]


def test_midi_from_path(tmp_path):
    path = tmp_path / "a.mid"
    _midi((60, 0.0, 0.5)).write(str(path))
    assert midi_to_roll(path, [0.0, 0.25, 0.5], pitches=[60])[:, 0].tolist() == [1, 1, 0]
    assert midi_to_roll(str(path), [0.0], pitches=[60])[0, 0]


def test_empty_grid():
    assert midi_to_roll(_midi((60, 0, 1)), [], pitches=[60, 61]).shape == (0, 2)


# ------------------------------------------------------------------------ roll_to_notes / midi


def test_roll_to_notes_runs_and_last_frame():
    roll = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=bool)
    times = _grid(4)
    notes = roll_to_notes(roll, times, [60, 72])
    assert notes == [
        (0.0, times[2], 60),
        (times[2], times[3] + PERIOD, 72),
        (times[3], times[3] + PERIOD, 60),
    ]
    assert roll_to_notes(np.zeros((4, 2), bool), times, [60, 72]) == []


def test_roll_to_notes_accepts_zero_one_numbers():
    notes = roll_to_notes(np.array([[0], [1]]), [0.0, 1.0], [60])
    assert notes == [(1.0, 2.0, 60)]


def test_roll_to_midi_velocities_program_and_min_duration():
    roll = np.zeros((6, 3), dtype=bool)
    roll[0:2, 0] = True  # 2 frames
    roll[1:5, 1] = True  # 4 frames
    roll[3, 2] = True  # 1 frame
    velocities = np.zeros((6, 3))
    velocities[0:2, 0] = [0.0, 1.0]
    velocities[1:5, 1] = 1.0
    pm = roll_to_midi(roll, _grid(6), [40, 50, 60], velocities=velocities, program=5)
    (instrument,) = pm.instruments
    assert instrument.program == 5 and not instrument.is_drum
    assert [(n.pitch, n.velocity) for n in instrument.notes] == [(40, 64), (50, 127), (60, 1)]
    assert [
        n.velocity for n in roll_to_midi(roll, _grid(6), [40, 50, 60]).instruments[0].notes
    ] == [
        100,
        100,
        100,
    ]
    short = roll_to_midi(roll, _grid(6), [40, 50, 60], min_duration=2 * PERIOD)
    assert [n.pitch for n in short.instruments[0].notes] == [40, 50]


@settings(max_examples=60, deadline=None)
@given(
    roll=arrays(bool, st.tuples(st.integers(2, 40), st.integers(1, 6))),
    first_pitch=st.integers(0, 100),
)
def test_roll_midi_roll_round_trip(roll, first_pitch):
    pitches = list(range(first_pitch, first_pitch + roll.shape[1]))[::-1]
    times = _grid(roll.shape[0])
    pm = roll_to_midi(roll, times, pitches)
    np.testing.assert_array_equal(midi_to_roll(pm, times, pitches), roll)
    # One note per run of active frames.
    padded = np.pad(roll.astype(np.int8), ((1, 1), (0, 0)))
    n_runs = int((np.diff(padded, axis=0) == 1).sum())
    assert len(pm.instruments[0].notes) == n_runs == len(roll_to_notes(roll, times, pitches))


@settings(max_examples=30, deadline=None)
@given(
    starts=st.lists(st.floats(0, 2), min_size=1, max_size=8),
    lengths=st.lists(st.floats(0.01, 1), min_size=8, max_size=8),
)
def test_midi_roll_midi_roll_is_stable(starts, lengths):
    # MIDI -> roll quantises to the grid; after that the round trip is exact.
    pm = _midi(
        *[
            (60 + i % 3, s, s + d)
            for i, (s, d) in enumerate(zip(starts, lengths[: len(starts)], strict=True))
        ]
    )
    times = _grid(100)
    roll = midi_to_roll(pm, times, [60, 61, 62])
    again = midi_to_roll(roll_to_midi(roll, times, [60, 61, 62]), times, [60, 61, 62])
    np.testing.assert_array_equal(again, roll)


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("frame_times", "error", "message"),
    [
        ([0.0, 0.2, 0.1], ValueError, r"frame_times must be strictly increasing; got 0.2 then 0.1"),
        ([0.0, 0.0], ValueError, "frame_times must be strictly increasing"),
        ([[0.0, 0.1]], ValueError, r"frame_times must be 1-d \(n_frames,\); got shape \(1, 2\)"),
        ([0.0, np.nan], ValueError, "frame_times contains NaN or infinity"),
        (["a", "b"], TypeError, "frame_times must be a 1-d array of times in seconds"),
    ],
)
def test_bad_frame_times(frame_times, error, message):
    with pytest.raises(error, match=message):
        midi_to_roll(_midi((60, 0, 1)), frame_times, pitches=[60])


@pytest.mark.parametrize(
    ("pitches", "error", "message"),
    [
        ([60, 128], ValueError, r"pitches must lie in \[0, 127\].*got values from 60 to 128"),
        ([-1], ValueError, r"pitches must lie in \[0, 127\]"),
        ([60, 60], ValueError, "pitches must not repeat a pitch"),
        ([], ValueError, "pitches must be a non-empty 1-d sequence"),
        ([60.5], TypeError, "pitches must hold integer MIDI pitch numbers"),
        ("C4", TypeError, "pitches must be an iterable of MIDI pitch numbers; got str"),
        (60, TypeError, "pitches must be an iterable of MIDI pitch numbers; got int"),
    ],
)
def test_bad_pitches(pitches, error, message):
    with pytest.raises(error, match=message):
        midi_to_roll(_midi((60, 0, 1)), [0.0], pitches=pitches)


def test_float_integer_pitches_are_accepted():
    assert midi_to_roll(_midi((60, 0, 1)), [0.0], pitches=np.array([60.0]))[0, 0]


def test_bad_midi(tmp_path):
    with pytest.raises(TypeError, match="midi must be a pretty_midi.PrettyMIDI or a path.*int"):
        midi_to_roll(3, [0.0])
    with pytest.raises(FileNotFoundError, match="no MIDI file at"):
        midi_to_roll(tmp_path / "absent.mid", [0.0])


def test_bad_rolls():
    times = _grid(3)
    with pytest.raises(ValueError, match=r"roll must have shape .* \(3, 2\).*got \(3, 1\)"):
        roll_to_notes(np.zeros((3, 1), bool), times, [60, 61])
    with pytest.raises(ValueError, match=r"roll must be 2-d \(n_frames, n_pitches\)"):
        roll_to_notes(np.zeros(3, bool), times, [60])
    with pytest.raises(TypeError, match="roll must be a bool array .* got dtype float64"):
        roll_to_notes(np.full((3, 1), 0.5), times, [60])
    with pytest.raises(ValueError, match="at least 2 entries"):
        roll_to_notes(np.ones((1, 1), bool), [0.0], [60])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"velocities": np.full((3, 1), 1.5)}, ValueError,
         r"velocities must be finite and lie in \[0, 1\]; got values from 1.5 to 1.5"),
        ({"velocities": np.zeros((2, 1))}, ValueError,
         r"velocities must have the roll's shape \(3, 1\); got \(2, 1\)"),
        ({"program": 128}, ValueError,
         r"'program' parameter of roll_to_midi must be an int in the range \[0, 127\]. Got 128"),
        ({"program": "piano"}, TypeError, "'program' parameter .* Got 'piano' instead"),
        ({"program": np.int64(128)}, ValueError, "'program' parameter"),
        ({"min_duration": -1}, ValueError,
         r"'min_duration' parameter of roll_to_midi must be a float in the range \[0.0, inf\)"),
        ({"min_duration": None}, TypeError, "'min_duration' parameter"),
    ],
)  # fmt: skip
def test_bad_roll_to_midi_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        roll_to_midi(np.ones((3, 1), bool), _grid(3), [60], **kwargs)
