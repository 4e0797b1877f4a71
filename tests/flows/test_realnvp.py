"""Tests for decomp.flows.realnvp: round trip, log-det, stacked == looped, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp.exceptions import DecompError
from decomp.flows import (
    ConditionedDictionary,
    DictionaryFlow,
    InverseNotAvailable,
    StackedRealNVP,
)


def make_flow(
    n_sources: int = 4,
    n_features: int = 7,
    n_blocks: int = 3,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    scale: float = 0.1,
) -> StackedRealNVP:
    """A small flow with random, non-identity parameters (the zero last layers perturbed)."""
    flow = StackedRealNVP(
        n_sources, n_features, n_blocks=n_blocks, hidden_features=16, n_hidden_layers=2,
        random_state=seed,
    ).to(dtype)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return flow


def mixed_labels(n: int, n_sources: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, n_sources, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_round_trip_is_exact(dtype, atol):
    flow = make_flow(dtype=dtype)
    z = torch.randn(50, 7, dtype=dtype, generator=torch.Generator().manual_seed(3))
    labels = mixed_labels(50, 4)
    W, log_det = flow.forward_and_log_det(z, labels)
    assert not torch.allclose(W, z, atol=1e-2)  # the parameters really are non-identity
    z_back, inverse_log_det = flow.inverse_and_log_det(W, labels)
    torch.testing.assert_close(z_back, z, atol=atol, rtol=0)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=atol * 10, rtol=0)
    torch.testing.assert_close(flow.inverse(flow.sample(z, labels), labels), z, atol=atol, rtol=0)


def test_log_det_matches_autograd_jacobian():
    flow = make_flow(n_sources=3, n_features=6, n_blocks=3)
    z = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    _, log_det = flow.forward_and_log_det(z, labels)
    for row in range(z.shape[0]):
        label = labels[row : row + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda x, label=label: flow.sample(x[None], label)[0], z[row]
        )
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(log_det[row], expected, atol=1e-10, rtol=0)
        # and the inverse's log-det, taken at w = f(z)
        w = flow.sample(z[row : row + 1], label)[0].detach()
        inverse_jacobian = torch.autograd.functional.jacobian(
            lambda x, label=label: flow.inverse(x[None], label)[0], w
        )
        _, inverse_log_det = flow.inverse_and_log_det(w[None], label)
        torch.testing.assert_close(
            inverse_log_det[0], torch.linalg.slogdet(inverse_jacobian).logabsdet,
            atol=1e-10, rtol=0,
        )


def test_identity_at_init_and_standard_normal_log_prob():
    flow = StackedRealNVP(5, 9, n_blocks=4, hidden_features=8, random_state=1).double()
    W = torch.randn(20, 9, dtype=torch.float64)
    labels = mixed_labels(20, 5)
    torch.testing.assert_close(flow.sample(W, labels), W, atol=0, rtol=0)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(W).sum(-1)
    torch.testing.assert_close(flow.log_prob(W, labels), expected, atol=1e-12, rtol=0)


def test_log_prob_is_change_of_variables_and_integrates_to_one_in_1d_slices():
    # log p(f(z)) = log N(z) - log|det J_f(z)|, for a non-identity flow
    flow = make_flow()
    z = torch.randn(30, 7, dtype=torch.float64)
    labels = mixed_labels(30, 4, seed=2)
    W, log_det = flow.forward_and_log_det(z, labels)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - log_det
    torch.testing.assert_close(flow.log_prob(W, labels), expected, atol=1e-10, rtol=0)

    # A 2-feature flow is a proper density: a grid sum over R^2 is about 1 per source.
    small = make_flow(n_sources=2, n_features=2, n_blocks=2)
    axis = torch.linspace(-25, 25, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    cell = float(axis[1] - axis[0]) ** 2
    for source in range(2):
        labels = torch.full((grid.shape[0],), source)
        with torch.no_grad():
            mass = small.log_prob(grid, labels).exp().sum() * cell
        assert math.isclose(float(mass), 1.0, abs_tol=1e-3)


def test_stacked_equals_looped_per_source():
    flow = make_flow(n_sources=5, n_features=11, n_blocks=3)
    z = torch.randn(40, 11, dtype=torch.float64)
    labels = mixed_labels(40, 3)  # sources 3 and 4 absent: exercises the gather path
    labels[:4] = 4
    W, log_det = flow.forward_and_log_det(z, labels)
    log_prob = flow.log_prob(W, labels)
    for source in labels.unique().tolist():
        rows = labels == source
        reference = flow.per_source_module(source)
        W_ref, log_det_ref = reference.forward_and_log_det(z[rows])
        torch.testing.assert_close(W[rows], W_ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(log_det[rows], log_det_ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(log_prob[rows], reference.log_prob(W_ref), atol=1e-12, rtol=0)


@pytest.mark.parametrize("sources", [[0, 1, 2, 3], [1, 3]])
def test_rows_grouped_by_source_take_the_view_path_and_match_shuffled_rows(sources):
    """Rows already in source order, as many per source (DDS-2's dictionary), skip the
    gather and scatter; values, log-dets and gradients equal those of shuffled rows."""
    flow = make_flow(n_sources=4)
    labels = torch.tensor(sources).repeat_interleave(3)
    shuffle = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))
    z = torch.randn(labels.numel(), 7, dtype=torch.float64, requires_grad=True)
    W, log_det = flow.forward_and_log_det(z, labels)
    (W.square().sum() + log_det.sum()).backward()
    z_shuffled = z.detach()[shuffle].requires_grad_()
    W_s, log_det_s = flow.forward_and_log_det(z_shuffled, labels[shuffle])
    (W_s.square().sum() + log_det_s.sum()).backward()
    torch.testing.assert_close(W[shuffle], W_s, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_det[shuffle], log_det_s, atol=1e-12, rtol=0)
    torch.testing.assert_close(z.grad[shuffle], z_shuffled.grad, atol=1e-12, rtol=0)
    back, _ = flow.inverse_and_log_det(W, labels)
    torch.testing.assert_close(back, z.detach(), atol=1e-10, rtol=0)


def test_all_sources_present_and_single_row():
    flow = make_flow(n_sources=3)
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    z = torch.randn(7, 7, dtype=torch.float64)
    W = flow.sample(z, labels)
    for row in range(7):
        single = flow.sample(z[row : row + 1], labels[row : row + 1])
        torch.testing.assert_close(single[0], W[row], atol=1e-12, rtol=0)


def test_gradients_flow_to_z_and_parameters():
    flow = make_flow(dtype=torch.float32)
    z = torch.zeros(12, 7, requires_grad=True)
    labels = mixed_labels(12, 4)
    W = flow.sample(z, labels)
    loss = (W.relu() - 1.0).pow(2).sum() - flow.log_prob(W, labels).sum()
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


def test_conditioned_dictionary_matches_methods():
    flow = make_flow()
    labels = [0, 3, 3, 1]
    z = torch.randn(4, 7, dtype=torch.float64)
    conditioned = flow(labels)
    assert isinstance(conditioned, ConditionedDictionary)
    W = conditioned.sample(z)
    torch.testing.assert_close(W, flow.sample(z, torch.tensor(labels)))
    torch.testing.assert_close(conditioned.log_prob(W), flow.log_prob(W, np.array(labels)))
    torch.testing.assert_close(conditioned.inverse(W), z, atol=1e-10, rtol=0)


def test_empty_batch():
    flow = make_flow()
    W, log_det = flow.forward_and_log_det(torch.zeros(0, 7, dtype=torch.float64), [])
    assert W.shape == (0, 7) and log_det.shape == (0,)


def test_random_state_is_reproducible():
    a = StackedRealNVP(2, 6, n_blocks=2, hidden_features=8, random_state=7)
    b = StackedRealNVP(2, 6, n_blocks=2, hidden_features=8, random_state=7)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=0, rtol=0)
    assert len(a.weights) == 2 and len(a.weights[0]) == 5  # 4 hidden layers + output
    assert a.weights[0][0].shape == (2, 3, 8)
    assert a.weights[1][-1].shape == (2, 8, 6)
    assert a.biases[1][-1].shape == (2, 6)


@pytest.mark.parametrize(
    ("z_shape", "labels", "match"),
    [
        ((4,), [0, 0, 0, 0], r"z must have shape \(n, n_features=7\); got \(4,\)"),
        ((4, 6), [0, 0, 0, 0], r"z must have shape \(n, n_features=7\); got \(4, 6\)"),
        ((4, 7), [0, 0, 0], r"labels must have one entry per row: shape \(4,\); got \(3,\)"),
        ((4, 7), [[0, 0, 0, 0]], r"labels must have shape \(n,\); got \(1, 4\)"),
        ((4, 7), [0, 1, 4, 0], r"labels must hold ints in \[0, n_sources=4\); got 4"),
        ((4, 7), [0, -1, 2, 0], r"labels must hold ints in \[0, n_sources=4\); got -1"),
        ((4, 7), [0.0, 1.0, 2.0, 0.0], r"labels must hold ints in \[0, 4\); got dtype"),
        ((4, 7), [True, False, True, True], r"labels must hold ints.*torch.bool"),
    ],
)
def test_bad_shapes_and_labels(z_shape, labels, match):
    flow = make_flow()
    z = torch.zeros(z_shape, dtype=torch.float64)
    for method in (flow.sample, flow.log_prob, flow.inverse, flow.forward_and_log_det):
        with pytest.raises(ValueError, match=match.replace("z must", "(z|W) must")):
            method(z, labels)


def test_bad_dtype_and_type():
    flow = make_flow()
    with pytest.raises(ValueError, match=r"z must have the flow's dtype torch.float64; got"):
        flow.sample(torch.zeros(2, 7, dtype=torch.float32), [0, 1])
    with pytest.raises(TypeError, match="W must be a torch.Tensor; got ndarray"):
        flow.log_prob(np.zeros((2, 7)), [0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_sources": 0}, r"'n_sources' parameter of StackedRealNVP must be an int in the range "
                           r"\[1, inf\). Got 0 instead"),
        ({"n_features": 1}, r"'n_features' .* must be an int in the range \[2, inf\). Got 1"),
        ({"n_blocks": 2.0}, r"'n_blocks' .* must be an int .* Got 2.0"),
        ({"n_blocks": False}, r"'n_blocks' .* Got False"),
        ({"activation": "gelu"}, r"'activation' .* must be a str among .*Got 'gelu'"),
        ({"log_scale_bound": 0}, r"'log_scale_bound' .* must be a float in the range "
                                 r"\(0.0, inf\). Got 0"),
        ({"random_state": "0"}, r"'random_state' .* Got '0'"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    arguments = {"n_sources": 2, "n_features": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        StackedRealNVP(**arguments)


def test_per_source_module_checks_source():
    flow = make_flow()
    with pytest.raises(ValueError, match=r"'source' parameter of StackedRealNVP.per_source_module "
                                         r"must be an int in the range \[0, 3\]. Got 4"):
        flow.per_source_module(4)
    assert flow.per_source_module(np.int64(3)) is not None


def test_missing_inverse_raises_named_error():
    class ForwardOnly(DictionaryFlow):
        n_sources, n_features = 2, 3

        def _forward_and_log_det(self, z, labels):
            return z, z.new_zeros(z.shape[0])

    flow = ForwardOnly()
    z = torch.zeros(2, 3)
    assert flow.sample(z, [0, 1]) is z
    with pytest.raises(InverseNotAvailable, match="ForwardOnly has no inverse"):
        flow.log_prob(z, [0, 1])
    assert issubclass(InverseNotAvailable, DecompError)


_PROPERTY_FLOW = make_flow(n_sources=6, n_features=5, n_blocks=4, seed=11)


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=25),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(labels, seed):
    z = torch.randn(
        len(labels), 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    W, log_det = _PROPERTY_FLOW.forward_and_log_det(z, labels)
    z_back, inverse_log_det = _PROPERTY_FLOW.inverse_and_log_det(W, labels)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=1e-10, rtol=0)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "empty", "2-d"])
def test_permutation_gradient_is_the_inverse_permutation(layout):
    from decomp.flows.realnvp import _permute

    order = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    shape = {"contiguous": (3, 2, 6), "transposed": (2, 3, 6), "empty": (0, 2, 6),
             "2-d": (5, 6)}[layout]
    x = torch.randn(*shape, dtype=torch.float64)
    if layout == "transposed":
        x = x.transpose(0, 1)  # a non-contiguous input
    x.requires_grad_(True)
    permuted = _permute(x, order, torch.argsort(order))
    assert permuted.shape == x.shape
    assert torch.equal(permuted, x[..., order])
    if x.numel():
        assert torch.autograd.gradcheck(lambda t: _permute(t, order, torch.argsort(order)),
                                        (x,))


def autograd_nodes(tensor: torch.Tensor) -> set[str]:
    """Names of the autograd nodes that produced ``tensor``."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(parent for parent, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


@pytest.mark.parametrize("activation", ["selu", "relu", "elu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("grouped", [True, False])
def test_frozen_forward_matches_autograd(activation, grouped):
    """With frozen parameters the forward pass runs the hand-written input-gradient
    backward (the DDS search's case); values and gradients equal autograd's."""
    flow = StackedRealNVP(5, 11, n_blocks=3, hidden_features=8, n_hidden_layers=2,
                          activation=activation, random_state=0).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator,
                                             dtype=torch.float64))
    labels = (torch.arange(5).repeat_interleave(3) if grouped
              else torch.tensor([3, 1, 1, 0, 4, 3, 3]))
    z = torch.randn(labels.numel(), 11, dtype=torch.float64, generator=generator,
                    requires_grad=True)

    def loss(W, log_det):  # uses both outputs, non-linearly
        return (W * torch.cos(W)).sum() + (log_det**2).sum()

    W, log_det = flow.forward_and_log_det(z, labels)
    gradient = torch.autograd.grad(loss(W, log_det), z)[0]
    flow.requires_grad_(False)
    W_frozen, log_det_frozen = flow.forward_and_log_det(z, labels)
    assert "_FrozenForwardBackward" in autograd_nodes(W_frozen)
    torch.testing.assert_close(W_frozen, W, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_det_frozen, log_det, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.autograd.grad(loss(W_frozen, log_det_frozen), z)[0],
                               gradient, atol=1e-10, rtol=0)
    assert torch.autograd.gradcheck(lambda codes: flow.forward_and_log_det(codes, labels), (z,))


def test_frozen_forward_only_when_no_parameter_learns():
    flow = make_flow()
    z = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    labels = mixed_labels(6, 4)
    flow.output_loc.requires_grad_(False)  # one parameter still learns: autograd's path
    W = flow.sample(z, labels)
    assert "_FrozenForwardBackward" not in autograd_nodes(W)
    W.sum().backward()
    assert flow.weights[0][0].grad is not None


@settings(max_examples=40, deadline=None)
@given(raw=st.lists(st.floats(-50, 50), min_size=1, max_size=20),
       bound=st.floats(0.1, 5.0))
def test_bounded_log_scale_is_bound_tanh(raw, bound):
    from decomp.flows.base import bounded_log_scale

    raw = torch.tensor(raw, dtype=torch.float64)
    log_scale, gate = bounded_log_scale(raw, bound)
    torch.testing.assert_close(log_scale, bound * torch.tanh(raw / bound), atol=1e-12, rtol=0)
    assert torch.all(log_scale.abs() <= bound)
    torch.testing.assert_close(4 * gate * (1 - gate), 1 - torch.tanh(raw / bound) ** 2,
                               atol=1e-12, rtol=0)
