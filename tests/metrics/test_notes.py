"""Tests for decomp.metrics.notes: note-level onset and onset-offset scores."""

import warnings

import mir_eval
import numpy as np
import pretty_midi
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp.metrics import as_notes, midi_to_hz, note_scores
from decomp.metrics.notes import ZERO_LENGTH_DURATION

REFERENCE = np.array([[0.0, 0.5, 60], [0.5, 1.0, 64], [1.0, 2.0, 67]])
SCORE_KEYS = ("precision", "recall", "f1")


def _all_scores(scores):
    return {key: value for key, value in scores.items() if not key.startswith("n_")
            and not key.endswith("matches")}


def test_perfect_match_scores_one():
    scores = note_scores(REFERENCE, REFERENCE)
    assert _all_scores(scores) == dict.fromkeys(_all_scores(scores), 1.0)
    assert scores["n_estimated"] == scores["n_reference"] == 3
    assert scores["onset_matches"] == scores["onset_offset_matches"] == 3
    assert all(type(value) is float for value in _all_scores(scores).values())


def test_onset_beyond_tolerance_is_a_miss():
    late = REFERENCE.copy()
    late[:, :2] += 0.06  # 60 ms > 50 ms
    scores = note_scores(late, REFERENCE)
    assert _all_scores(scores) == dict.fromkeys(_all_scores(scores), 0.0)
    # within the tolerance it is a hit; a wider tolerance also accepts 60 ms
    near = REFERENCE.copy()
    near[:, :2] += 0.04
    assert note_scores(near, REFERENCE)["onset_offset_f1"] == 1.0
    assert note_scores(late, REFERENCE, onset_tolerance=0.07)["onset_f1"] == 1.0


def test_wrong_offset_keeps_onset_f1_only():
    long = REFERENCE.copy()
    long[:, 1] += 0.3  # beyond max(50 ms, 20 % of durations 0.5, 0.5, 1.0 s)
    scores = note_scores(long, REFERENCE)
    assert scores["onset_precision"] == scores["onset_recall"] == scores["onset_f1"] == 1.0
    assert scores["onset_offset_f1"] == 0.0 and scores["onset_offset_matches"] == 0
    # the offset tolerance grows with the reference duration: 20 % of 1 s is 0.2 s
    long = REFERENCE.copy()
    long[:, 1] += 0.15
    assert note_scores(long, REFERENCE)["onset_offset_matches"] == 1
    assert note_scores(long, REFERENCE, offset_ratio=0.4)["onset_offset_f1"] == 1.0
    assert note_scores(long, REFERENCE, offset_min_tolerance=0.2)["onset_offset_f1"] == 1.0


def test_hand_computed_partial_case():
    estimate = [(0.02, 0.65, 60), (0.5, 1.01, 64), (0.5, 1.0, 66), (1.0, 1.5, 67)]
    # onsets: 60, 64 and 67 match (66 is a wrong pitch): P = 3/4, R = 3/3
    # offsets: 60 off by 0.15 > max(0.05, 0.2 * 0.5); 64 by 0.01; 67 by 0.5 > 0.2: 1 match
    scores = note_scores(estimate, REFERENCE)
    assert scores["onset_precision"] == pytest.approx(3 / 4)
    assert scores["onset_recall"] == pytest.approx(1.0)
    assert scores["onset_f1"] == pytest.approx(2 * 3 / (4 + 3))
    assert scores["onset_offset_precision"] == pytest.approx(1 / 4)
    assert scores["onset_offset_recall"] == pytest.approx(1 / 3)
    assert scores["onset_offset_f1"] == pytest.approx(2 * 1 / (4 + 3))


def test_a_reference_note_matches_once():
    doubled = np.concatenate([REFERENCE, REFERENCE])
    scores = note_scores(doubled, REFERENCE)
    assert scores["onset_matches"] == 3
    assert scores["onset_precision"] == 0.5 and scores["onset_recall"] == 1.0


@pytest.mark.parametrize("empty", [[], np.zeros((0, 3)), torch.zeros(0, 3)])
def test_empty_notes_score_zero(empty):
    zero = {key: 0.0 for key in _all_scores(note_scores(REFERENCE, REFERENCE))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mir_eval's empty-notes warnings are silenced
        for estimate, reference in ((empty, REFERENCE), (REFERENCE, empty), (empty, empty)):
            scores = note_scores(estimate, reference)
            assert _all_scores(scores) == zero
            assert scores["n_estimated"] == len(estimate)
            assert scores["n_reference"] == len(reference)


def _random_notes(rng, n_notes):
    onsets = np.round(rng.uniform(0, 5, n_notes), 3)
    durations = np.round(rng.uniform(0.02, 1.0, n_notes), 3)
    pitches = rng.integers(60, 66, n_notes)
    return np.column_stack([onsets, onsets + durations, pitches]).astype(float)


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_mir_eval(seed):
    rng = np.random.default_rng(seed)
    reference = _random_notes(rng, 40)
    # a jittered copy with misses, wrong pitches and false alarms
    estimate = reference[rng.random(40) < 0.8].copy()
    estimate[:, :2] += rng.normal(0, 0.04, (len(estimate), 1))
    estimate[:, 1] += rng.normal(0, 0.1, len(estimate))
    estimate[:, 1] = np.maximum(estimate[:, 1], estimate[:, 0] + 0.01)
    estimate[:, :2] = np.abs(estimate[:, :2])
    estimate[rng.random(len(estimate)) < 0.1, 2] += 1
    estimate = np.concatenate([estimate, _random_notes(rng, 5)])
    scores = note_scores(estimate, reference)
    arguments = (reference[:, :2], midi_to_hz(reference[:, 2]),
                 estimate[:, :2], midi_to_hz(estimate[:, 2]))
    onset = mir_eval.transcription.precision_recall_f1_overlap(*arguments, offset_ratio=None)
    both = mir_eval.transcription.precision_recall_f1_overlap(*arguments)
    for index, key in enumerate(SCORE_KEYS):
        assert scores[f"onset_{key}"] == pytest.approx(onset[index], abs=1e-12)
        assert scores[f"onset_offset_{key}"] == pytest.approx(both[index], abs=1e-12)
    assert 0 < scores["onset_offset_f1"] < scores["onset_f1"] < 1


def _notes_strategy():
    note = st.tuples(st.integers(0, 40), st.integers(1, 20), st.integers(60, 63))
    # times on a 10-ms grid, so that rounding never decides a match
    return st.lists(note, max_size=8).map(
        lambda rows: np.array([(start / 100, (start + length) / 100, pitch)
                               for start, length, pitch in rows]).reshape(-1, 3))


@settings(max_examples=40, deadline=None)
@given(_notes_strategy(), _notes_strategy())
def test_scores_in_unit_interval_and_onset_f1_symmetric(estimate, reference):
    scores = note_scores(estimate, reference)
    swapped = note_scores(reference, estimate)
    for value in _all_scores(scores).values():
        assert 0.0 <= value <= 1.0
    assert scores["onset_f1"] == pytest.approx(swapped["onset_f1"])
    assert scores["onset_precision"] == pytest.approx(swapped["onset_recall"])
    assert scores["onset_offset_matches"] <= scores["onset_matches"]
    assert scores["onset_offset_f1"] <= scores["onset_f1"]


def test_zero_length_notes_are_kept():
    reference = np.array([[0.5, 0.5, 60], [1.0, 1.5, 62]])
    estimate = np.array([[0.51, 0.52, 60], [1.0, 1.0, 62]])
    scores = note_scores(estimate, reference)
    # both onsets match; 60's offset is within 50 ms of 0.5 s + 1 ms, 62's is 0.5 s off
    assert scores["onset_f1"] == 1.0
    assert scores["onset_offset_matches"] == 1
    assert ZERO_LENGTH_DURATION == 1e-3


def _midi(notes, drum_pitch=None):
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [pretty_midi.Note(80, int(pitch), start, end) for start, end, pitch in notes]
    midi.instruments.append(piano)
    if drum_pitch is not None:
        drums = pretty_midi.Instrument(program=0, is_drum=True)
        drums.notes.append(pretty_midi.Note(80, drum_pitch, 0.0, 0.1))
        midi.instruments.append(drums)
    return midi


def test_accepts_midi_files_and_objects_with_midi(tmp_path):
    midi = _midi(REFERENCE, drum_pitch=36)
    np.testing.assert_array_equal(as_notes(midi), REFERENCE)  # drums left out
    path = tmp_path / "reference.mid"
    midi.write(str(path))

    class WithMidi:  # like Transcription and RenderedPiano
        pass

    holder = WithMidi()
    holder.midi = midi
    for notes in (midi, holder, path, str(path), torch.tensor(REFERENCE)):
        assert note_scores(notes, REFERENCE)["onset_offset_f1"] == 1.0
    with pytest.raises(FileNotFoundError, match="estimated_notes: no MIDI file at"):
        note_scores(tmp_path / "missing.mid", REFERENCE)


@pytest.mark.parametrize(
    ("notes", "message"),
    [
        (np.zeros((2, 2)), r"estimated_notes must have shape \(n_notes, 3\) with columns "
                           r"\(onset_s, offset_s, midi_pitch\); got shape \(2, 2\)"),
        (np.zeros(3), r"estimated_notes must have shape \(n_notes, 3\)"),
        ([[0.0, np.nan, 60]], r"estimated_notes contains NaN or infinity \(1 entries\)"),
        ([[0.0, 1.0, 60], [-0.1, 1.0, 60]],
         r"estimated_notes must have onsets >= 0 s; got -0.1 s at note 1"),
        ([[1.0, 0.9, 60]], r"estimated_notes must have offsets >= onsets; note 0 starts at "
                           r"1 s and ends at 0.9 s"),
        ([[0.0, 1.0, 128]], r"estimated_notes must have MIDI pitches in \[0, 127\]; got 128"),
    ],
)
def test_bad_notes_messages(notes, message):
    with pytest.raises(ValueError, match=message):
        note_scores(notes, REFERENCE)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"reference_notes must have shape \(n_notes, 3\)"):
        note_scores(REFERENCE, np.zeros((1, 4)))
    with pytest.raises(TypeError, match="reference_notes must be a NumPy array"):
        note_scores(REFERENCE, {})
    with pytest.raises(TypeError, match="estimated_notes must be a NumPy array"):
        note_scores(None, REFERENCE)
    with pytest.raises(ValueError, match=r"'onset_tolerance' parameter of note_scores .*"
                                         r"\[0.0, inf\). Got -0.01"):
        note_scores(REFERENCE, REFERENCE, onset_tolerance=-0.01)
    with pytest.raises(TypeError, match="'offset_ratio' parameter of note_scores .* Got None"):
        note_scores(REFERENCE, REFERENCE, offset_ratio=None)
