import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from decomp.engine import beta_divergence, beta_loss_to_float

matrices = arrays(np.float64, (3, 4), elements=st.floats(0, 100, allow_nan=False))


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0, 0.5, 3.0])
@settings(max_examples=40, deadline=None)
@given(X=matrices, Y=matrices)
def test_zero_at_equality_and_nonnegative(beta, X, Y):
    X, Y = torch.from_numpy(X), torch.from_numpy(Y)
    assert float(beta_divergence(X, X, beta)) == pytest.approx(0.0, abs=1e-9)
    assert float(beta_divergence(X, Y, beta)) >= -1e-9


def test_hand_computed_values():
    X = torch.tensor([[1.0, 2.0], [0.0, 4.0]], dtype=torch.float64)
    Y = torch.tensor([[2.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    # Euclidean: 0.5 * ((1-2)^2 + 0 + (0-1)^2 + (4-1)^2) = 0.5 * 11
    assert float(beta_divergence(X, Y, 2)) == pytest.approx(5.5)
    # KL: sum x log(x/y) - x + y, with 0 log 0 = 0
    expected_kl = (1 * np.log(1 / 2) - 1 + 2) + 0 + (0 - 0 + 1) + (4 * np.log(4) - 4 + 1)
    assert float(beta_divergence(X, Y, 1)) == pytest.approx(expected_kl)
    # IS on positive entries: x/y - log(x/y) - 1
    Xp = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    Yp = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    expected_is = (0.5 - np.log(0.5) - 1) + (3 - np.log(3) - 1)
    assert float(beta_divergence(Xp, Yp, 0)) == pytest.approx(expected_is, rel=1e-9)


def test_general_beta_matches_limits():
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.random((5, 6)) + 0.1)
    Y = torch.from_numpy(rng.random((5, 6)) + 0.1)
    assert float(beta_divergence(X, Y, 1 + 1e-6)) == pytest.approx(
        float(beta_divergence(X, Y, 1)), rel=1e-4)
    assert float(beta_divergence(X, Y, 1e-6)) == pytest.approx(
        float(beta_divergence(X, Y, 0)), rel=1e-4)


def test_safe_at_zero_model_output():
    X = torch.tensor([[1.0, 0.0]])
    Y = torch.zeros(1, 2)
    for beta in (1, 0):
        assert torch.isfinite(beta_divergence(X, Y, beta))


def test_per_item_reduction():
    X = torch.rand(4, 5, 6)
    Y = torch.rand(4, 5, 6)
    values = beta_divergence(X, Y, 1)
    assert values.shape == (4,)
    assert float(values[2]) == pytest.approx(float(beta_divergence(X[2], Y[2], 1)), rel=1e-5)


def test_beta_loss_names():
    assert beta_loss_to_float("frobenius") == 2
    assert beta_loss_to_float("kullback-leibler") == 1
    assert beta_loss_to_float("IS") == 0
    assert beta_loss_to_float(0.5) == 0.5
    with pytest.raises(ValueError, match="beta_loss must be one of"):
        beta_loss_to_float("manhattan")


def test_precomputed_kl_target_terms_give_the_same_divergence():
    from decomp.engine.divergences import kl_target_terms

    generator = torch.Generator().manual_seed(0)
    X = torch.rand(3, 7, 5, generator=generator, dtype=torch.float64)
    Y = torch.rand(3, 7, 5, generator=generator, dtype=torch.float64)
    terms = kl_target_terms(X)
    assert terms.shape == (3,)
    np.testing.assert_allclose(beta_divergence(X, Y, 1, target_terms=terms),
                               beta_divergence(X, Y, 1), rtol=1e-12)
    reference = (X * torch.log(X / Y) - X + Y).sum(dim=(1, 2))
    np.testing.assert_allclose(beta_divergence(X, Y, 1), reference, rtol=1e-10)
