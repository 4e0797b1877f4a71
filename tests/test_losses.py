"""Tests for decomp.losses: pairwise losses, the assignment search, apply_permutation, PITLoss."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decomp.losses as losses_module
from decomp.losses import (
    PITLoss,
    apply_permutation,
    pairwise_l1,
    pairwise_mse,
    pairwise_neg_si_sdr,
    permutation_invariant_loss,
)
from decomp.metrics import si_sdr

SETTINGS = settings(max_examples=25, deadline=None)
PAIRWISE = {"mse": pairwise_mse, "l1": pairwise_l1, "neg_si_sdr": pairwise_neg_si_sdr}


def random_inputs(seed, batch, n_estimates, n_targets, n_samples=6):
    generator = torch.Generator().manual_seed(seed)
    estimates = torch.randn(batch, n_estimates, n_samples, generator=generator, dtype=torch.float64)
    targets = torch.randn(batch, n_targets, n_samples, generator=generator, dtype=torch.float64)
    return estimates, targets


def brute_force(costs, silence=None):
    """Per item, the smallest loss over all assignments, by explicit Python loops.

    costs: (batch, n_estimates, n_targets); silence: (batch, n_estimates) or None.
    """
    batch, n_estimates, n_targets = costs.shape
    best = []
    for item in range(batch):
        values = []
        for chosen in itertools.permutations(range(n_estimates), n_targets):
            total = sum(float(costs[item, chosen[j], j]) for j in range(n_targets))
            if silence is None:
                values.append(total / n_targets)
            else:
                rest = [i for i in range(n_estimates) if i not in chosen]
                total += sum(float(silence[item, i]) for i in rest)
                values.append(total / n_estimates)
        best.append(min(values))
    return np.array(best)


def assert_is_assignment(permutation, batch, n_estimates, n_targets):
    assert permutation.dtype == torch.long
    assert permutation.shape == (batch, n_targets)
    for row in permutation.tolist():
        assert len(set(row)) == n_targets
        assert all(0 <= index < n_estimates for index in row)


sizes = st.tuples(
    st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 4), st.integers(0, 2)
)  # seed, batch, n_targets, extra estimates


# --- the search is optimal ------------------------------------------------------------------
@SETTINGS
@given(sizes=sizes, method=st.sampled_from(["exact", "hungarian", "auto"]))
def test_matches_brute_force_on_random_costs(sizes, method):
    seed, batch, n_targets, extra = sizes
    n_estimates = n_targets + extra
    generator = torch.Generator().manual_seed(seed)
    costs = torch.rand(batch, n_estimates, n_targets, generator=generator, dtype=torch.float64)
    estimates, targets = random_inputs(seed, batch, n_estimates, n_targets, n_samples=1)

    loss, permutation = permutation_invariant_loss(
        estimates, targets, pairwise=lambda e, t: costs, method=method, reduction="none"
    )
    expected = brute_force(costs)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    assert_is_assignment(permutation, batch, n_estimates, n_targets)
    chosen = costs.gather(1, permutation.unsqueeze(1)).squeeze(1).mean(dim=-1)
    np.testing.assert_allclose(chosen.numpy(), expected, rtol=1e-12)


@SETTINGS
@given(sizes=sizes, method=st.sampled_from(["exact", "hungarian"]))
def test_silence_matches_brute_force(sizes, method):
    seed, batch, n_targets, extra = sizes
    n_estimates = n_targets + extra
    estimates, targets = random_inputs(seed, batch, n_estimates, n_targets)
    loss, permutation = permutation_invariant_loss(
        estimates, targets, method=method, unmatched="silence", reduction="none"
    )
    costs = torch.empty(batch, n_estimates, n_targets, dtype=torch.float64)
    for item, i, j in itertools.product(range(batch), range(n_estimates), range(n_targets)):
        costs[item, i, j] = ((estimates[item, i] - targets[item, j]) ** 2).mean()
    silence = (estimates**2).mean(dim=-1)
    np.testing.assert_allclose(loss.numpy(), brute_force(costs, silence), rtol=1e-12)
    assert_is_assignment(permutation, batch, n_estimates, n_targets)


# --- invariances ----------------------------------------------------------------------------
invariance_options = st.sampled_from(
    [
        ("mse", "exact", "ignore"),
        ("mse", "hungarian", "silence"),
        ("l1", "hungarian", "ignore"),
        ("l1", "exact", "silence"),
        ("neg_si_sdr", "exact", "ignore"),
        ("neg_si_sdr", "hungarian", "ignore"),
    ]
)


@SETTINGS
@given(sizes=sizes, options=invariance_options, data=st.data())
def test_invariant_to_permuting_targets(sizes, options, data):
    seed, batch, n_targets, extra = sizes
    pairwise, method, unmatched = options
    estimates, targets = random_inputs(seed, batch, n_targets + extra, n_targets)
    order = torch.tensor(data.draw(st.permutations(range(n_targets))))
    kwargs = dict(pairwise=pairwise, method=method, unmatched=unmatched, reduction="none")

    loss, permutation = permutation_invariant_loss(estimates, targets, **kwargs)
    loss_permuted, permutation_permuted = permutation_invariant_loss(
        estimates, targets[:, order], **kwargs
    )
    torch.testing.assert_close(loss_permuted, loss, rtol=1e-10, atol=1e-12)
    # target order[j] now sits at position j, and keeps its estimate
    torch.testing.assert_close(permutation_permuted, permutation[:, order])


@SETTINGS
@given(sizes=sizes, options=invariance_options, data=st.data())
def test_invariant_to_permuting_estimates(sizes, options, data):
    seed, batch, n_targets, extra = sizes
    pairwise, method, unmatched = options
    n_estimates = n_targets + extra
    estimates, targets = random_inputs(seed, batch, n_estimates, n_targets)
    order = torch.tensor(data.draw(st.permutations(range(n_estimates))))
    kwargs = dict(pairwise=pairwise, method=method, unmatched=unmatched, reduction="none")

    loss, permutation = permutation_invariant_loss(estimates, targets, **kwargs)
    loss_permuted, permutation_permuted = permutation_invariant_loss(
        estimates[:, order], targets, **kwargs
    )
    torch.testing.assert_close(loss_permuted, loss, rtol=1e-10, atol=1e-12)
    # each target is matched to the same estimate, wherever it now sits
    torch.testing.assert_close(
        apply_permutation(estimates[:, order], permutation_permuted),
        apply_permutation(estimates, permutation),
    )


@SETTINGS
@given(
    sizes=sizes,
    method=st.sampled_from(["exact", "hungarian"]),
    pairwise=st.sampled_from(["mse", "l1", "neg_si_sdr"]),
    data=st.data(),
)
def test_permuted_targets_give_zero_loss_and_recover_the_order(sizes, method, pairwise, data):
    seed, batch, n_targets, extra = sizes
    n_estimates = n_targets + extra
    decoys, targets = random_inputs(seed, batch, extra, n_targets)
    # the targets in random slots among `extra` unrelated estimates
    slots = torch.tensor(data.draw(st.permutations(range(n_estimates))))
    estimates = torch.cat([targets, decoys], dim=1)[:, slots]

    loss, permutation = permutation_invariant_loss(
        estimates, targets, pairwise=pairwise, method=method, reduction="none"
    )
    torch.testing.assert_close(apply_permutation(estimates, permutation), targets)
    expected_permutation = torch.argsort(slots)[:n_targets].expand(batch, -1)
    torch.testing.assert_close(permutation, expected_permutation)
    if pairwise == "neg_si_sdr":
        assert bool((loss < -100).all())  # SI-SDR of a perfect estimate is capped, not inf
    else:
        torch.testing.assert_close(loss, torch.zeros(batch, dtype=torch.float64))


# --- gradients --------------------------------------------------------------------------------
def test_gradient_reaches_only_matched_estimates_when_ignoring():
    estimates, targets = random_inputs(0, 3, 5, 2)
    estimates.requires_grad_(True)
    loss, permutation = permutation_invariant_loss(estimates, targets)
    loss.backward()
    matched = torch.zeros(3, 5, dtype=torch.bool).scatter(1, permutation, True)
    gradient_norms = estimates.grad.abs().sum(dim=-1)  # (batch, n_estimates)
    assert bool((gradient_norms[matched] > 0).all())
    assert bool((gradient_norms[~matched] == 0).all())


def test_gradient_reaches_every_estimate_with_silence():
    estimates, targets = random_inputs(1, 3, 5, 2)
    estimates.requires_grad_(True)
    loss, _ = permutation_invariant_loss(estimates, targets, unmatched="silence")
    loss.backward()
    assert bool((estimates.grad.abs().sum(dim=-1) > 0).all())
    # an unmatched slot's gradient is that of its silence loss, mean(e**2) / n_estimates
    _, permutation = permutation_invariant_loss(estimates.detach(), targets, unmatched="silence")
    unmatched = ~torch.zeros(3, 5, dtype=torch.bool).scatter(1, permutation, True)
    expected = 2 * estimates.detach() / (estimates.shape[-1] * 5 * 3)
    torch.testing.assert_close(estimates.grad[unmatched], expected[unmatched])


@pytest.mark.parametrize(
    ("pairwise", "unmatched"),
    [
        ("mse", "ignore"),
        ("mse", "silence"),
        ("l1", "ignore"),
        ("l1", "silence"),
        ("neg_si_sdr", "ignore"),
    ],  # neg_si_sdr with silence is refused (tested below)
)
def test_one_sgd_step_lowers_the_loss(pairwise, unmatched):
    estimates, targets = random_inputs(2, 4, 3, 2, n_samples=32)
    estimates = estimates.float().requires_grad_(True)
    targets = targets.float()
    criterion = PITLoss(pairwise, unmatched=unmatched)
    loss = criterion(estimates, targets)
    assert loss.dtype == torch.float32 and loss.shape == ()
    loss.backward()
    with torch.no_grad():
        stepped = estimates - 1e-2 * estimates.grad
    assert float(criterion(stepped, targets)) < float(loss.detach())


# --- pairwise losses --------------------------------------------------------------------------
def test_pairwise_neg_si_sdr_agrees_with_si_sdr():
    estimates, targets = random_inputs(3, 2, 3, 2, n_samples=40)
    losses = pairwise_neg_si_sdr(estimates, targets)
    assert losses.shape == (2, 3, 2)
    for item, i, j in itertools.product(range(2), range(3), range(2)):
        expected = -si_sdr(estimates[item, i].numpy(), targets[item, j].numpy())
        assert float(losses[item, i, j]) == pytest.approx(expected, abs=1e-9)
    # trailing dims are flattened: (frames, bins) scored as one signal
    grid = pairwise_neg_si_sdr(estimates.reshape(2, 3, 5, 8), targets.reshape(2, 2, 5, 8))
    torch.testing.assert_close(grid, losses)


def test_pairwise_mse_and_l1_against_explicit_values():
    estimates, targets = random_inputs(4, 2, 3, 2)
    estimates, targets = estimates.reshape(2, 3, 2, 3), targets.reshape(2, 2, 2, 3)
    mse, l1 = pairwise_mse(estimates, targets), pairwise_l1(estimates, targets)
    for item, i, j in itertools.product(range(2), range(3), range(2)):
        difference = estimates[item, i] - targets[item, j]
        assert float(mse[item, i, j]) == pytest.approx(float((difference**2).mean()))
        assert float(l1[item, i, j]) == pytest.approx(float(difference.abs().mean()))


# --- options ----------------------------------------------------------------------------------
def test_auto_switches_to_hungarian_beyond_720_assignments(monkeypatch):
    calls = []
    original = losses_module._search_hungarian

    def spy(costs):
        calls.append(tuple(costs.shape))
        return original(costs)

    monkeypatch.setattr(losses_module, "_search_hungarian", spy)
    permutation_invariant_loss(*random_inputs(5, 2, 6, 6))  # 720 assignments: exact
    assert calls == []
    permutation_invariant_loss(*random_inputs(5, 2, 7, 6))  # 5040: Hungarian
    assert calls == [(2, 7, 6)]


def test_reductions_and_callable_pairwise():
    estimates, targets = random_inputs(6, 3, 3, 2)
    per_item, permutation = permutation_invariant_loss(estimates, targets, reduction="none")
    assert per_item.shape == (3,)
    mean, _ = permutation_invariant_loss(estimates, targets)
    total, _ = permutation_invariant_loss(estimates, targets, reduction="sum")
    torch.testing.assert_close(mean, per_item.mean())
    torch.testing.assert_close(total, per_item.sum())
    custom, custom_permutation = permutation_invariant_loss(
        estimates, targets, pairwise=pairwise_mse, reduction="none"
    )
    torch.testing.assert_close(custom, per_item)
    torch.testing.assert_close(custom_permutation, permutation)


def test_pit_loss_module_matches_the_function_and_registers_a_module_pairwise():
    estimates, targets = random_inputs(7, 2, 4, 3)
    expected = permutation_invariant_loss(
        estimates, targets, pairwise="l1", method="hungarian", unmatched="silence"
    )
    criterion = PITLoss("l1", method="hungarian", unmatched="silence")
    loss, permutation = criterion(estimates, targets, return_permutation=True)
    torch.testing.assert_close(loss, expected[0])
    torch.testing.assert_close(permutation, expected[1])
    assert "pairwise='l1'" in repr(criterion)

    class Weighted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, estimates, targets):
            return self.weight * pairwise_mse(estimates, targets)

    weighted = PITLoss(Weighted())
    assert [name for name, _ in weighted.named_parameters()] == ["pairwise.weight"]
    torch.testing.assert_close(
        weighted(estimates, targets).detach(),
        2 * permutation_invariant_loss(estimates, targets)[0],
    )


def test_apply_permutation_is_differentiable_and_keeps_trailing_dims():
    estimates = torch.arange(24.0).reshape(2, 3, 2, 2).requires_grad_(True)
    permutation = torch.tensor([[2, 0], [1, 2]])
    reordered = apply_permutation(estimates, permutation)
    assert reordered.shape == (2, 2, 2, 2)
    torch.testing.assert_close(reordered[0, 0], estimates[0, 2].detach())
    torch.testing.assert_close(reordered[1, 1], estimates[1, 2].detach())
    reordered.sum().backward()
    assert float(estimates.grad[0, 1].sum()) == 0 and float(estimates.grad[1, 0].sum()) == 0


# --- errors -----------------------------------------------------------------------------------
GOOD_ESTIMATES, GOOD_TARGETS = random_inputs(8, 2, 3, 2)


@pytest.mark.parametrize(
    ("estimates", "targets", "error", "match"),
    [
        (GOOD_ESTIMATES.numpy(), GOOD_TARGETS, TypeError, "estimates must be a torch tensor"),
        (GOOD_ESTIMATES, GOOD_TARGETS.long(), TypeError, "targets must be a floating-point"),
        (GOOD_ESTIMATES[0], GOOD_TARGETS, ValueError, r"estimates must have shape \(batch"),
        (GOOD_ESTIMATES, GOOD_TARGETS[..., 0], ValueError, r"targets must have shape \(batch"),
        (GOOD_ESTIMATES, GOOD_TARGETS[:1], ValueError, "targets has a batch of 1 items"),
        (GOOD_ESTIMATES, GOOD_TARGETS[..., :4], ValueError, r"trailing dimensions \(4,\)"),
        (GOOD_ESTIMATES[:, :1], GOOD_TARGETS, ValueError, "n_estimates >= n_targets"),
        (GOOD_ESTIMATES, GOOD_TARGETS[:, :0], ValueError, "targets is empty"),
        (
            GOOD_ESTIMATES.index_fill(1, torch.tensor([1]), float("nan")),
            GOOD_TARGETS,
            ValueError,
            r"estimates contains NaN or infinity \(12 entries\)",
        ),
        (
            GOOD_ESTIMATES,
            GOOD_TARGETS.index_fill(2, torch.tensor([0]), float("inf")),
            ValueError,
            "targets contains NaN or infinity",
        ),
    ],
)
def test_bad_inputs_are_refused(estimates, targets, error, match):
    with pytest.raises(error, match=match):
        permutation_invariant_loss(estimates, targets)
    if "n_estimates" not in match:  # a pairwise matrix needs no more estimates than targets
        with pytest.raises(error, match=match):
            pairwise_mse(estimates, targets)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (dict(pairwise="l2"), ValueError, r"'pairwise' parameter .* or a callable. Got 'l2'"),
        (dict(pairwise=3), TypeError, r"'pairwise' parameter .* Got 3 instead"),
        (dict(method="fast"), ValueError, r"'method' parameter .* Got 'fast' instead"),
        (dict(unmatched="drop"), ValueError, r"\{'ignore', 'silence'\}. Got 'drop'"),
        (dict(reduction="max"), ValueError, r"'reduction' parameter .* Got 'max' instead"),
        (dict(pairwise="neg_si_sdr", unmatched="silence"), ValueError, "scale-invariant"),
    ],
)
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match.replace("parameter", "parameter of PITLoss")):
        PITLoss(**options)
    with pytest.raises(error, match=match):
        permutation_invariant_loss(GOOD_ESTIMATES, GOOD_TARGETS, **options)


def test_bad_pairwise_results_and_too_large_exact_search_are_refused():
    with pytest.raises(ValueError, match=r"must return a tensor of shape .* \(2, 3, 2\)"):
        permutation_invariant_loss(
            GOOD_ESTIMATES, GOOD_TARGETS, pairwise=lambda e, t: torch.zeros(2, 3)
        )
    with pytest.raises(ValueError, match="contain NaN or infinity"):
        permutation_invariant_loss(
            GOOD_ESTIMATES, GOOD_TARGETS, pairwise=lambda e, t: torch.full((2, 3, 2), np.nan)
        )
    with pytest.raises(ValueError, match="limited to 40320; use method='hungarian'"):
        permutation_invariant_loss(*random_inputs(9, 1, 9, 9, n_samples=1), method="exact")


@pytest.mark.parametrize(
    ("permutation", "error", "match"),
    [
        (torch.tensor([[0.0, 1.0]]).expand(2, 2), TypeError, "integer torch tensor"),
        (torch.tensor([[0, 1]]), ValueError, r"shape \(batch, n_targets\) with batch=2"),
        (torch.tensor([[0, 1, 2, 0]]).expand(2, 4), ValueError, "only 3 estimates"),
        (torch.tensor([[0, 3], [1, 0]]), ValueError, r"indices in \[0, 3\)"),
        (torch.tensor([[1, 1], [1, 0]]), ValueError, "repeats an estimate index"),
    ],
)
def test_bad_permutations_are_refused(permutation, error, match):
    with pytest.raises(error, match=match):
        apply_permutation(GOOD_ESTIMATES, permutation)


# ------------------------------------------------------------- separation cost
def test_separation_cost_is_neg_si_sdr_for_present_targets_and_level_for_silent_ones():
    from decomp.losses import pairwise_separation_cost

    rng = np.random.default_rng(0)
    targets = torch.tensor(rng.standard_normal((2, 3, 400)), dtype=torch.float32)
    targets[1, 2] = 0  # an absent source
    mixtures = targets.sum(dim=1)
    estimates = targets + 0.3 * torch.tensor(rng.standard_normal((2, 3, 400)),
                                             dtype=torch.float32)
    estimates.requires_grad_(True)
    costs = pairwise_separation_cost(estimates, targets, mixtures)
    assert costs.shape == (2, 3, 3)
    pairs = torch.broadcast_tensors(estimates[0, :, None].detach(), targets[0, None])
    expected = -si_sdr(*pairs)
    torch.testing.assert_close(costs[0].detach(), expected.to(costs.dtype), rtol=1e-4, atol=1e-4)
    level = estimates[1].detach().square().sum(-1) / mixtures[1].square().sum()
    torch.testing.assert_close(costs[1, :, 2].detach(), 10 * torch.log10(level + 1e-3))
    costs.sum().backward()
    assert torch.isfinite(estimates.grad).all()
    # A silent estimate for the silent target reaches the floor; a loud one pays for it.
    silent = pairwise_separation_cost(torch.zeros(1, 1, 400), torch.zeros(1, 1, 400),
                                      mixtures[:1], silence_floor_db=-20.0)
    assert float(silent) == pytest.approx(-20.0)
    loud = pairwise_separation_cost(mixtures[:1, None], torch.zeros(1, 1, 400), mixtures[:1])
    assert float(loud) == pytest.approx(10 * np.log10(1 + 1e-3), abs=1e-5)


def test_elementwise_separation_cost_is_the_diagonal_of_the_pairwise_one():
    from decomp.losses import pairwise_separation_cost, separation_cost

    rng = np.random.default_rng(1)
    targets = torch.tensor(rng.standard_normal((3, 4, 300)), dtype=torch.float32)
    targets[0, 1] = 0
    mixtures = targets.sum(dim=1)
    estimates = torch.tensor(rng.standard_normal((3, 4, 300)), dtype=torch.float32)
    diagonal = pairwise_separation_cost(estimates, targets, mixtures).diagonal(dim1=1, dim2=2)
    torch.testing.assert_close(separation_cost(estimates, targets, mixtures[:, None]), diagonal)
