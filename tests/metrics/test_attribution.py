"""Tests for decomp.metrics.attribution: PSA and epsilon-sparsity."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from decomp.metrics import epsilon_sparsity, precision_of_source_attribution, psa

SETTINGS = settings(max_examples=40, deadline=None)

shapes_2d = st.tuples(st.integers(1, 6), st.integers(1, 5))
activation_values = st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def activations_and_roll(draw):
    shape = draw(shapes_2d)
    activations = draw(arrays(np.float64, shape, elements=activation_values))
    roll = draw(arrays(np.bool_, shape))
    return activations, roll


# --- precision of source attribution ---------------------------------------------------


def test_psa_hand_computed():
    activations = np.array([[3.0, 1.0], [0.0, 4.0], [2.0, 0.0]])
    roll = np.array([[True, False], [True, True], [False, True]])
    # mass on active cells: 3 + 0 + 4 = 7; total mass: 3 + 1 + 4 + 2 = 10
    assert precision_of_source_attribution(activations, roll) == pytest.approx(0.7)


def test_psa_accepts_zero_one_reference_and_alias():
    activations = np.array([[1.0, 3.0]])
    assert psa is precision_of_source_attribution
    assert psa(activations, np.array([[0, 1]])) == pytest.approx(0.75)
    assert psa(activations, np.array([[1.0, 0.0]])) == pytest.approx(0.25)


def test_psa_batch_gives_one_value_per_item():
    activations = np.array([[[1.0, 1.0]], [[1.0, 3.0]], [[0.0, 0.0]]])
    roll = np.array([[[True, False]], [[False, True]], [[True, True]]])
    result = psa(activations, roll)
    assert isinstance(result, np.ndarray)
    assert result.shape == (3,)
    np.testing.assert_allclose(result[:2], [0.5, 0.75])
    assert math.isnan(result[2])


def test_psa_zero_mass_is_nan_without_warning():
    with np.errstate(all="raise"):
        result = psa(np.zeros((4, 2)), np.ones((4, 2), dtype=bool))
    assert isinstance(result, float)
    assert math.isnan(result)


def test_psa_numpy_in_float_out_and_tensor_in_tensor_out():
    activations = np.array([[2.0, 6.0]])
    roll = np.array([[True, False]])
    result = psa(activations, roll)
    assert type(result) is float
    assert result == pytest.approx(0.25)
    tensor_result = psa(torch.tensor(activations, dtype=torch.float32), torch.tensor(roll))
    assert isinstance(tensor_result, torch.Tensor)
    assert tensor_result.shape == ()
    assert tensor_result.dtype == torch.float32
    assert tensor_result.device == torch.device("cpu")
    assert float(tensor_result) == pytest.approx(0.25)
    batch = psa(torch.ones(3, 2, 2, dtype=torch.float64), torch.eye(2).repeat(3, 1, 1) > 0)
    assert batch.dtype == torch.float64
    torch.testing.assert_close(batch, torch.full((3,), 0.5, dtype=torch.float64))


@SETTINGS
@given(activations_and_roll())
def test_psa_in_unit_interval(case):
    activations, roll = case
    result = psa(activations, roll)
    if activations.sum() == 0:
        assert math.isnan(result)
    else:
        assert 0.0 <= result <= 1.0 + 1e-12


@SETTINGS
@given(activations_and_roll())
def test_psa_is_one_when_mass_only_on_active_sources(case):
    activations, roll = case
    activations = np.where(roll, activations, 0.0)
    if activations.sum() == 0:
        activations = roll.astype(float)
    if roll.any():
        assert psa(activations, roll) == pytest.approx(1.0)


@SETTINGS
@given(activations_and_roll())
def test_psa_of_complement_sums_to_one(case):
    activations, roll = case
    if activations.sum() > 0:
        assert psa(activations, roll) + psa(activations, ~roll) == pytest.approx(1.0)


def test_psa_shape_mismatch_message():
    with pytest.raises(
        ValueError,
        match=r"reference_roll has shape \(10, 3\) but source_activations has shape "
        r"\(10, 4\); they must match",
    ):
        psa(np.ones((10, 4)), np.ones((10, 3), dtype=bool))


def test_psa_negative_activations_message():
    with pytest.raises(ValueError, match=r"source_activations must be non-negative; got a minimum"):
        psa(np.array([[1.0, -0.5]]), np.array([[True, False]]))


def test_psa_non_binary_reference_message():
    with pytest.raises(ValueError, match=r"reference_roll must be boolean or hold only 0 and 1"):
        psa(np.ones((2, 2)), np.full((2, 2), 0.5))


def test_psa_wrong_rank_message():
    with pytest.raises(ValueError, match=r"source_activations must have shape \(n_frames, "):
        psa(np.ones(4), np.ones(4))


def test_psa_nan_message():
    with pytest.raises(ValueError, match=r"source_activations contains NaN or infinity \(1 "):
        psa(np.array([[np.nan, 1.0]]), np.array([[True, False]]))


def test_psa_empty_message():
    with pytest.raises(ValueError, match=r"source_activations is empty"):
        psa(np.ones((0, 2)), np.ones((0, 2)))


def test_psa_type_message():
    with pytest.raises(TypeError, match=r"source_activations must be a NumPy array or a torch"):
        psa("activations", np.ones((2, 2)))


# --- epsilon-sparsity -------------------------------------------------------------------


def test_sparsity_hand_computed():
    activations = np.array([[10.0, 0.05, 0.1], [0.0, 2.0, -0.09]])
    # threshold 0.01 * 10 = 0.1: 0.05, 0.1, 0.0 and |-0.09| count -> 4 of 6
    assert epsilon_sparsity(activations) == pytest.approx(4 / 6)
    # threshold 0: only the exact zero counts
    assert epsilon_sparsity(activations, epsilon=0.0) == pytest.approx(1 / 6)
    # threshold 0.5 * 10 = 5: everything but 10
    assert epsilon_sparsity(activations, 0.5) == pytest.approx(5 / 6)


def test_sparsity_all_zero_is_one():
    assert epsilon_sparsity(np.zeros((3, 4))) == 1.0
    np.testing.assert_array_equal(epsilon_sparsity(np.zeros((2, 3, 4))), [1.0, 1.0])


def test_sparsity_batch_uses_each_items_maximum():
    activations = np.array([[[1.0, 0.001]], [[100.0, 0.5]]])
    # item 0: 0.001 <= 0.01; item 1: 0.5 <= 1.0 -> both items 1 of 2
    np.testing.assert_allclose(epsilon_sparsity(activations), [0.5, 0.5])
    # the same values pooled into one matrix: 1.0, 0.001 and 0.5 are all <= 1.0
    assert epsilon_sparsity(activations.reshape(1, 4)) == pytest.approx(0.75)


def test_sparsity_numpy_and_tensor_outputs():
    result = epsilon_sparsity(np.array([[1.0, 0.0]]))
    assert type(result) is float and result == 0.5
    tensor_result = epsilon_sparsity(torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]]))
    assert isinstance(tensor_result, torch.Tensor)
    assert tensor_result.dtype == torch.float32
    torch.testing.assert_close(tensor_result, torch.tensor([0.5, 0.0]))


@SETTINGS
@given(
    arrays(np.float64, shapes_2d, elements=st.floats(-1e3, 1e3)),
    st.floats(0.0, 0.999),
    st.floats(0.0, 0.999),
)
def test_sparsity_in_unit_interval_and_monotone(activations, first, second):
    low, high = sorted((first, second))
    sparse_low = epsilon_sparsity(activations, low)
    sparse_high = epsilon_sparsity(activations, high)
    assert 0.0 <= sparse_low <= sparse_high <= 1.0


@SETTINGS
@given(
    arrays(np.float64, shapes_2d, elements=st.floats(-1e3, 1e3)),
    st.sampled_from([2.0, 8.0, 1024.0]),
)
def test_sparsity_is_scale_invariant(activations, scale):
    # Scaling up by a power of two is exact in floating point, so no entry crosses the
    # threshold by rounding.
    assert epsilon_sparsity(activations * scale) == epsilon_sparsity(activations)


@pytest.mark.parametrize("epsilon", [1.0, -0.1, 2.0])
def test_sparsity_epsilon_range_message(epsilon):
    with pytest.raises(ValueError, match=r"The 'epsilon' parameter of epsilon_sparsity must be "
                                         r"a float in the range \[0.0, 1.0\). Got"):
        epsilon_sparsity(np.ones((2, 2)), epsilon)


def test_sparsity_epsilon_type_message():
    with pytest.raises(TypeError, match=r"'epsilon' parameter .* Got '0.1' instead"):
        epsilon_sparsity(np.ones((2, 2)), "0.1")


def test_sparsity_wrong_rank_message():
    with pytest.raises(ValueError, match=r"activations must have shape \(n_frames, n_components"):
        epsilon_sparsity(np.ones((2, 2, 2, 2)))


def test_sparsity_nan_message():
    with pytest.raises(ValueError, match=r"activations contains NaN or infinity"):
        epsilon_sparsity(np.array([[np.inf, 1.0]]))
