"""Tests for decomp.metrics.multipitch: frame-level multi-pitch scores."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from decomp.metrics import frame_scores, midi_to_hz, multipitch_scores

PIANO = np.arange(21, 109)


def _times(n_frames):
    return np.arange(n_frames) * 0.032


def test_midi_to_hz_reference_points():
    np.testing.assert_allclose(midi_to_hz([69, 81, 57, 60]), [440.0, 880.0, 220.0, 261.6255653])


def test_frame_scores_hand_computed():
    estimate = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    reference = np.array([[1, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=bool)
    # TP = 1 + 2 = 3, FP = 1, FN = 1 + 1 = 2
    scores = frame_scores(estimate, reference)
    assert scores["true_positives"] == 3
    assert scores["false_positives"] == 1
    assert scores["false_negatives"] == 2
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # 2TP / (2TP + FP + FN)
    assert scores["accuracy"] == pytest.approx(3 / 6)


def test_multipitch_scores_hand_computed():
    estimate = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    reference = np.array([[1, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=bool)
    scores = multipitch_scores(estimate, reference, _times(3), [48, 60, 64, 67])
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(1 / 2)
    assert all(type(value) is float for value in scores.values())


def test_octave_error_is_a_miss():
    estimate = np.array([[1, 0]], dtype=bool)
    reference = np.array([[0, 1]], dtype=bool)
    scores = multipitch_scores(estimate, reference, [0.0], [60, 72])
    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}


def test_empty_estimate_and_reference():
    reference = np.zeros((5, 88), dtype=bool)
    reference[2, 40] = True
    empty = np.zeros((5, 88), dtype=bool)
    times = _times(5)
    # empty estimate: precision 0 by definition, recall 0/1
    expected = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    assert multipitch_scores(empty, reference, times, PIANO) == expected
    # empty reference: recall 0 by definition, precision 0/1
    assert multipitch_scores(reference, empty, times, PIANO) == expected
    assert multipitch_scores(empty, empty, times, PIANO) == expected
    for estimate, ref in ((empty, reference), (reference, empty), (empty, empty)):
        direct = frame_scores(estimate, ref)
        assert {key: direct[key] for key in expected} == expected
    assert frame_scores(reference, reference)["f1"] == 1.0


def test_perfect_estimate():
    rng = np.random.default_rng(0)
    roll = rng.random((20, 88)) < 0.1
    scores = multipitch_scores(roll, roll, _times(20), PIANO)
    assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0}


@pytest.mark.parametrize("seed", range(5))
def test_frame_scores_agree_with_mir_eval_on_random_rolls(seed):
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.02, 0.3)
    reference = rng.random((50, 88)) < density
    # an estimate correlated with the reference, with misses and false alarms
    estimate = np.where(rng.random((50, 88)) < 0.3, ~reference, reference)
    direct = frame_scores(estimate, reference)
    via_mir_eval = multipitch_scores(estimate, reference, _times(50), PIANO)
    for key in ("precision", "recall", "f1", "accuracy"):
        assert direct[key] == pytest.approx(via_mir_eval[key], abs=1e-12)
    assert 0.0 < direct["f1"] < 1.0


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 8).flatmap(
        lambda n_frames: st.tuples(
            arrays(np.bool_, (n_frames, 12)), arrays(np.bool_, (n_frames, 12))
        )
    )
)
def test_frame_scores_agree_with_mir_eval_property(rolls):
    estimate, reference = rolls
    pitches = np.arange(60, 72)
    direct = frame_scores(estimate, reference)
    via_mir_eval = multipitch_scores(estimate, reference, _times(len(reference)), pitches)
    for key in ("precision", "recall", "f1", "accuracy"):
        assert direct[key] == pytest.approx(via_mir_eval[key], abs=1e-12)
        assert 0.0 <= direct[key] <= 1.0


def test_frame_scores_batch_is_per_item():
    estimate = np.array([[[1, 0]], [[1, 1]]], dtype=bool)
    reference = np.array([[[1, 0]], [[0, 1]]], dtype=bool)
    scores = frame_scores(estimate, reference)
    np.testing.assert_allclose(scores["precision"], [1.0, 0.5])
    np.testing.assert_allclose(scores["recall"], [1.0, 1.0])
    np.testing.assert_allclose(scores["f1"], [1.0, 2 / 3])
    np.testing.assert_array_equal(scores["false_positives"], [0, 1])
    assert scores["false_positives"].dtype == np.int64


def test_frame_scores_tensor_in_tensor_out():
    estimate = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    reference = torch.tensor([[1, 0, 1]], dtype=torch.float32)
    scores = frame_scores(estimate, reference)
    assert isinstance(scores["f1"], torch.Tensor)
    assert scores["f1"].dtype == torch.float64
    assert scores["f1"].device == estimate.device
    assert float(scores["f1"]) == pytest.approx(0.5)
    assert scores["true_positives"].dtype == torch.int64
    assert int(scores["true_positives"]) == 1


def test_multipitch_scores_accepts_tensors():
    estimate = torch.tensor([[True, False]])
    scores = multipitch_scores(estimate, estimate, torch.tensor([0.5]), torch.tensor([60, 61]))
    assert scores["f1"] == 1.0


def test_shape_mismatch_message():
    with pytest.raises(
        ValueError,
        match=r"reference_roll has shape \(4, 3\) but estimated_roll has shape \(4, 2\)",
    ):
        frame_scores(np.zeros((4, 2), bool), np.zeros((4, 3), bool))
    with pytest.raises(ValueError, match=r"reference_roll has shape \(4, 3\) but estimated_roll"):
        multipitch_scores(np.zeros((4, 2), bool), np.zeros((4, 3), bool), _times(4), [60, 61])


def test_non_binary_roll_message():
    with pytest.raises(ValueError, match=r"estimated_roll must be boolean or hold only 0 and 1"):
        frame_scores(np.full((2, 2), 0.7), np.zeros((2, 2), bool))


def test_roll_rank_message():
    with pytest.raises(ValueError, match=r"estimated_roll must have shape \(n_frames, n_pitches\)"):
        multipitch_scores(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2), bool), [0.0], [60, 61])


def test_empty_roll_message():
    with pytest.raises(ValueError, match=r"estimated_roll is empty"):
        frame_scores(np.zeros((0, 88), bool), np.zeros((0, 88), bool))


def test_frame_times_shape_message():
    with pytest.raises(ValueError, match=r"frame_times must have shape \(n_frames,\) = \(3,\)"):
        multipitch_scores(np.zeros((3, 2), bool), np.zeros((3, 2), bool), [0.0, 0.1], [60, 61])


def test_frame_times_order_message():
    with pytest.raises(ValueError, match=r"frame_times must be strictly increasing; got 0.2 then"):
        multipitch_scores(
            np.zeros((3, 2), bool), np.zeros((3, 2), bool), [0.0, 0.2, 0.2], [60, 61]
        )


def test_frame_times_range_message():
    with pytest.raises(ValueError, match=r"frame_times must be finite seconds in \[0, 30000\]"):
        multipitch_scores(np.zeros((2, 2), bool), np.zeros((2, 2), bool), [-1.0, 0.0], [60, 61])


def test_pitches_shape_message():
    with pytest.raises(ValueError, match=r"pitches must have shape \(n_pitches,\) = \(2,\)"):
        multipitch_scores(np.zeros((2, 2), bool), np.zeros((2, 2), bool), [0.0, 0.1], [60])


def test_pitches_repeated_message():
    with pytest.raises(ValueError, match=r"pitches must be distinct MIDI numbers"):
        multipitch_scores(np.zeros((2, 2), bool), np.zeros((2, 2), bool), [0.0, 0.1], [60, 60])


def test_pitches_range_message():
    with pytest.raises(ValueError, match=r"pitches must map to frequencies within mir_eval's"):
        multipitch_scores(np.zeros((2, 2), bool), np.zeros((2, 2), bool), [0.0, 0.1], [60, 120])


def test_pitches_nan_message():
    with pytest.raises(ValueError, match=r"pitches contains NaN or infinity"):
        multipitch_scores(
            np.zeros((2, 2), bool), np.zeros((2, 2), bool), [0.0, 0.1], [60, np.nan]
        )
