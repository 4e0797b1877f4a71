"""Tests for decomp.separation.evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decomp.metrics import si_sdr
from decomp.separation import SeparationScores, evaluate_separation


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    references = rng.standard_normal((3, 2, 600))
    mixtures = references.sum(axis=1)
    return references, mixtures, rng


def test_near_perfect_estimates_score_high(batch):
    references, mixtures, rng = batch
    estimates = references + 1e-4 * rng.standard_normal(references.shape)
    scores = evaluate_separation(estimates, references, mixtures, 16000, filter_length=16)
    assert isinstance(scores, SeparationScores)
    assert scores.sdr.shape == scores.si_sdr.shape == (3, 2)
    assert np.all(scores.sdr > 60) and np.all(scores.si_sdr > 60) and np.all(scores.sir > 60)
    expected = scores.si_sdr - si_sdr(np.repeat(mixtures[:, None], 2, axis=1), references)
    np.testing.assert_allclose(scores.si_sdr_improvement, expected, atol=1e-9)
    np.testing.assert_allclose(scores.si_sdr_improvement, scores.si_sdr - scores.mixture_si_sdr)
    summary = scores.summary()
    assert set(summary) >= {"sdr", "sir", "sar", "si_sdr", "si_sdr_improvement"}
    assert summary["n_items"] == 3 and summary["n_sources"] == 6
    assert summary["si_sdr"] == pytest.approx(scores.si_sdr.mean())
    assert scores.sample_rate == 16000


def test_permuted_estimates_are_matched_back(batch):
    references, mixtures, rng = batch
    noisy = references + 0.05 * rng.standard_normal(references.shape)
    direct = evaluate_separation(noisy, references, mixtures, filter_length=16)
    swapped = evaluate_separation(torch.from_numpy(noisy[:, ::-1].copy()), references,
                                  mixtures, filter_length=16)
    np.testing.assert_array_equal(direct.permutation, [[0, 1]] * 3)
    np.testing.assert_array_equal(swapped.permutation, [[1, 0]] * 3)
    for name in ("sdr", "sir", "sar", "si_sdr", "si_sdr_improvement"):
        np.testing.assert_allclose(getattr(swapped, name), getattr(direct, name), atol=1e-8)


def _padded(batch):
    """The batch with item 1's second source padding (silent): estimates, references,
    mixtures and their scores."""
    references, _, rng = batch
    references = references.copy()
    references[1, 1] = 0.0
    mixtures = references.sum(axis=1)
    estimates = references + 0.01 * rng.standard_normal(references.shape)
    scores = evaluate_separation(estimates, references, mixtures, n_sources=[2, 1, 2],
                                 filter_length=16)
    return estimates, references, mixtures, scores


def test_padded_sources_are_ignored(batch):
    estimates, references, mixtures, scores = _padded(batch)
    assert np.isnan(scores.sdr[1, 1]) and scores.permutation[1, 1] == -1
    assert np.isfinite(scores.sdr[[0, 1, 2], [0, 0, 0]]).all()
    assert scores.summary()["n_sources"] == 5
    assert scores.item_means()["si_sdr"].shape == (3,)
    with pytest.raises(ValueError, match="silent"):
        evaluate_separation(estimates, references, mixtures, filter_length=16)


def test_bad_inputs(batch):
    references, mixtures, _ = batch
    with pytest.raises(ValueError, match="estimates must have shape"):
        evaluate_separation(references[0], references, mixtures)
    with pytest.raises(ValueError, match="number of samples"):
        evaluate_separation(references[..., :500], references, mixtures)
    with pytest.raises(ValueError, match="number of items"):
        evaluate_separation(references, references, mixtures[:2])
    with pytest.raises(ValueError, match="needs an estimate"):
        evaluate_separation(references[:, :1], references, mixtures)
    bad = references.copy()
    bad[0, 0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_separation(bad, references, mixtures)
    with pytest.raises(ValueError, match="n_sources"):
        evaluate_separation(references, references, mixtures, n_sources=[3, 1, 1])
    with pytest.raises(TypeError, match="real numbers"):
        evaluate_separation(references.astype(complex), references, mixtures)


def test_scores_by_label_average_each_labels_sources(batch):
    scores = _padded(batch)[-1]
    # The padded reference's label must not count, whatever it says.
    labels = np.array([["violin", "cello"], ["cello", "violin"], ["violin", "violin"]])
    groups = scores.by_label(labels)
    assert list(groups) == ["cello", "violin"]
    assert groups["cello"]["n_sources"] == 2 and groups["violin"]["n_sources"] == 3
    for name in ("sdr", "sir", "sar", "si_sdr", "si_sdr_improvement"):
        values = getattr(scores, name)
        assert groups["cello"][name] == pytest.approx(np.mean([values[0, 1], values[1, 0]]))
        assert groups["violin"][name] == pytest.approx(
            np.mean([values[0, 0], values[2, 0], values[2, 1]]))
    total = sum(group["si_sdr_improvement"] * group["n_sources"] for group in groups.values())
    assert total / 5 == pytest.approx(scores.summary()["si_sdr_improvement"])
    with pytest.raises(ValueError, match="labels must have shape"):
        scores.by_label(labels[:, :1])
