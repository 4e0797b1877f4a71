"""Unordered outputs: the cosine match, merging split slots, refinement by the rest."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp.estimators.amortized.unordered import (
    cosine_assignment,
    merge_groups,
    merge_slots,
    refine_by_rest,
)


def _cosine_inputs(first, second):
    return first @ second.T, first.square().sum(1), second.square().sum(1)


@given(st.integers(1, 6), st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_cosine_assignment_finds_a_permuted_scaled_copy(n_outputs, seed):
    rng = np.random.default_rng(seed)
    first = torch.as_tensor(rng.random((n_outputs, 12)) ** 4, dtype=torch.float32)
    permutation = rng.permutation(n_outputs)
    scales = torch.as_tensor(rng.uniform(0.01, 100, (n_outputs, 1)), dtype=torch.float32)
    second = first[permutation] * scales  # cosine ignores the scale
    order = cosine_assignment(*_cosine_inputs(first, second))
    np.testing.assert_array_equal(second[order], first * scales[np.argsort(permutation)])
    assert sorted(order.tolist()) == list(range(n_outputs))


def test_cosine_assignment_sums_evidence_and_takes_silent_and_extra_outputs():
    first = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    second = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.1, 0.9, 0.0]])
    assert cosine_assignment(*_cosine_inputs(first, second)).tolist() == [1, 2]
    # Evidence summed over two stretches decides as the stretches joined would.
    early, late = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 5.0], [5.0, 0.0]])
    other_early, other_late = early.flip(0), late.flip(0)
    summed = [a + b for a, b in zip(_cosine_inputs(early, other_early),
                                    _cosine_inputs(late, other_late), strict=True)]
    joined = _cosine_inputs(torch.cat([early, late], 1), torch.cat([other_early, other_late], 1))
    assert cosine_assignment(*summed).tolist() == cosine_assignment(*joined).tolist() == [1, 0]
    silent = torch.zeros(2, 3)  # zero norms: no NaN, some permutation
    assert sorted(cosine_assignment(*_cosine_inputs(silent, silent)).tolist()) == [0, 1]


@given(st.integers(2, 5), st.integers(1, 5), st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_merge_groups_partition_the_slots(n_slots, n_groups, seed):
    n_groups = min(n_groups, n_slots)
    descriptors = torch.as_tensor(np.random.default_rng(seed).random((n_slots, 6)))
    groups = merge_groups(descriptors @ descriptors.T, n_groups)
    assert len(groups) == n_groups
    assert sorted(slot for group in groups for slot in group) == list(range(n_slots))
    assert all(group == sorted(group) for group in groups)
    assert [group[0] for group in groups] == sorted(group[0] for group in groups)


def test_merge_groups_join_the_parts_of_one_source():
    # Slots 0 and 2 are two parts of one source (the same descriptor up to scale).
    descriptors = torch.tensor([[1.0, 0.0, 0.1], [0.0, 1.0, 0.0], [0.3, 0.0, 0.03]])
    assert merge_groups(descriptors @ descriptors.T, 2) == [[0, 2], [1]]
    assert merge_groups(descriptors @ descriptors.T, 3) == [[0], [1], [2]]
    assert merge_groups(descriptors @ descriptors.T, 1) == [[0, 1, 2]]


def test_merge_slots_sums_the_groups_and_silences_the_rest():
    rng = np.random.default_rng(0)
    values = torch.as_tensor(rng.random((3, 4, 5)), dtype=torch.float32)
    descriptors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    merged = merge_slots(values, descriptors @ descriptors.T, 2)
    assert merged.shape == values.shape
    torch.testing.assert_close(merged[0], values[0] + values[2])
    torch.testing.assert_close(merged[1], values[1])
    assert not merged[2].any()
    assert merge_slots(values, descriptors @ descriptors.T, 3) is values


def _three_sources(n_items=2, n_samples=64, seed=0):
    """Mixtures of three sources of distinct loudness (source 0 loudest, 2 quietest)."""
    rng = np.random.default_rng(seed)
    sources = torch.as_tensor(rng.standard_normal((n_items, 3, n_samples)), dtype=torch.float32)
    sources = sources * torch.tensor([3.0, 2.0, 1.0])[:, None]
    return sources.sum(dim=1), sources


def test_refine_by_rest_replaces_the_rest_by_its_separation_and_keeps_the_anchor():
    mixtures, sources = _three_sources()
    # First estimates: the loudest right, the other two leaking into each other.
    first = sources.clone()
    first[:, 1], first[:, 2] = (0.7 * sources[:, 1] + 0.3 * sources[:, 2],
                                0.3 * sources[:, 1] + 0.7 * sources[:, 2])
    residuals = []

    def oracle_rest(residual):  # separates a residual perfectly, in another order, with
        residuals.append(residual)  # its silent output first (as a counting MHUNet may)
        return torch.stack([torch.zeros_like(residual), sources[:, 2], sources[:, 1]], dim=1)

    refined = refine_by_rest(mixtures, first, 1, oracle_rest)
    torch.testing.assert_close(residuals[0], mixtures - sources[:, 0])  # anchor: loudest
    torch.testing.assert_close(refined, sources)  # matched back into the sources' order
    torch.testing.assert_close(refine_by_rest(mixtures, first, 0, oracle_rest), first)


def test_refine_by_rest_averages_each_sources_estimates_over_two_passes():
    mixtures, sources = _three_sources(n_items=1)
    first = sources.clone()
    rests = [torch.stack([sources[:, 1] + 0.1, sources[:, 2] - 0.1], dim=1),
             torch.stack([sources[:, 0] + 0.2, sources[:, 2] - 0.2], dim=1)]
    calls = []

    def rest(residual):
        calls.append(residual)
        return rests[len(calls) - 1]

    refined = refine_by_rest(mixtures, first, 2, rest)
    # Pass 1 anchors source 0 (loudest) and replaces 1 and 2; pass 2 anchors source 1,
    # the loudest of those left, and re-estimates 0 and 2; each source is the mean of the
    # two partitions.
    torch.testing.assert_close(calls[1], mixtures - (sources[:, 1] + 0.1))
    torch.testing.assert_close(refined[:, 0], sources[:, 0] + 0.1)  # mean of 0 and +0.2
    torch.testing.assert_close(refined[:, 1], sources[:, 1] + 0.1)  # its pass-1 estimate
    torch.testing.assert_close(refined[:, 2], sources[:, 2] - 0.15)  # mean of -0.1, -0.2


@given(n_passes=st.integers(0, 3), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_refined_sources_still_sum_to_the_mixture(n_passes, seed):
    # When the first estimates and every separation of a rest sum to what they separate,
    # so do the refined sources (each pass's estimates of the rest sum to the rest).
    mixtures, sources = _three_sources(seed=seed)
    generator = torch.Generator().manual_seed(seed)

    def rest(residual):
        share = torch.rand(residual.shape, generator=generator)
        return torch.stack([share * residual, (1 - share) * residual], dim=1)

    share = torch.rand(sources.shape, generator=generator)
    first = mixtures[:, None] * share / share.sum(dim=1, keepdim=True)
    refined = refine_by_rest(mixtures, first, n_passes, rest)
    torch.testing.assert_close(refined.sum(dim=1), mixtures, rtol=1e-5, atol=1e-5)
