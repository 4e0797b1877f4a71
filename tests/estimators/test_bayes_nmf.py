"""BayesianNMF: planted-data correctness, both solvers, the estimator contract, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import decomp
from decomp import NMF, BayesianNMF
from decomp.engine import Block, minimize
from decomp.engine.variational import PoissonGammaObjective, gamma_parameters


def planted(rank: int = 4, n_frames: int = 200, n_bins: int = 60, scale: float = 5.0,
            seed: int = 0) -> np.ndarray:
    """Poisson counts of a planted rank-``rank`` product, mean count about ``2 * scale``."""
    rng = np.random.default_rng(seed)
    activations = rng.gamma(1.0, 1.0, size=(n_frames, rank))
    dictionary = rng.gamma(0.5, 1.0, size=(rank, n_bins))
    return rng.poisson(scale * activations @ dictionary).astype(np.float64)


def drawn_from_model(scale: float, seed: int = 1, n_frames: int = 200, n_bins: int = 40,
                     n_components: int = 6):
    """Dictionary, activations and counts drawn from the model (known dictionary)."""
    rng = np.random.default_rng(seed)
    dictionary = rng.gamma(1.0, 1.0, size=(n_components, n_bins))
    activations = rng.gamma(1.0, 1.0, size=(n_frames, n_components)) * scale
    return dictionary, activations, rng.poisson(activations @ dictionary).astype(np.float64)


# --- the closed-form solver ------------------------------------------------------------
def test_variational_updates_raise_the_elbo_monotonically() -> None:
    X = torch.as_tensor(planted(scale=2.0))[None]
    n_components = 8
    generator = torch.Generator().manual_seed(0)
    mean_H = torch.rand(1, X.shape[1], n_components, generator=generator, dtype=X.dtype) + 0.1
    mean_W = torch.rand(n_components, X.shape[2], generator=generator, dtype=X.dtype) + 0.1
    objective = PoissonGammaObjective(X, activation_shape=0.7, dictionary_shape=0.7,
                                      relevance_shape=1.0, relevance_rate=1.0)
    blocks = [Block("W", gamma_parameters(torch.ones_like(mean_W), 1 / mean_W), per_item=False),
              Block("H", gamma_parameters(torch.ones_like(mean_H), 1 / mean_H)),
              Block("tau", gamma_parameters(torch.ones(n_components, dtype=X.dtype),
                                            torch.ones(n_components, dtype=X.dtype)),
                    per_item=False)]
    result = minimize(objective, blocks, solver="mu", max_iter=300, tol=0, check_every=1)
    losses = result.history[:, 0]
    assert np.all(np.diff(losses) <= 1e-9 * abs(losses[0]))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("scale", "seed"), [(0.5, 0), (2.5, 1), (10.0, 2), (20.0, 3)])
def test_relevance_determination_recovers_the_planted_rank(scale: float, seed: int) -> None:
    X = planted(scale=scale, seed=seed)
    model = BayesianNMF(n_components=16, random_state=0).fit(X)
    assert model.n_effective_components_ == 4
    assert model.components_relevance_.shape == (16,)
    np.testing.assert_allclose(model.components_relevance_.sum(), 1.0)
    # The switched-off components carry (almost) nothing, not merely less.
    assert np.sort(model.components_relevance_)[:-4].sum() < 0.01


def test_without_relevance_determination_the_relevances_stay_fixed() -> None:
    model = BayesianNMF(n_components=8, relevance=False, random_state=0).fit(planted(scale=2.5))
    # A spike at the data's level, the same for every component, never updated.
    assert model.relevance_posterior_[:, 0].min() > 1e5
    assert np.unique(model.relevance_posterior_[:, 1]).size == 1


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_gibbs_credible_intervals_are_calibrated(scale: float) -> None:
    dictionary, activations, X = drawn_from_model(scale)
    model = BayesianNMF(dictionary=dictionary, random_state=0).fit(X)
    lower, upper = model.credible_interval(X, 0.9)  # integer X: Gibbs
    coverage = np.mean((lower <= activations) & (activations <= upper))
    assert 0.85 <= coverage <= 0.95
    # The mean-field intervals are narrower: that is why the sampler is the default.
    lower_q, upper_q = model.credible_interval(X, 0.9, method="variational")
    assert np.mean((lower_q <= activations) & (activations <= upper_q)) < coverage
    assert np.median(upper_q - lower_q) < np.median(upper - lower)


def test_posterior_mean_matches_kl_nmf_on_high_counts() -> None:
    rng = np.random.default_rng(2)
    dictionary = rng.gamma(1.0, 1.0, size=(6, 40))
    X = rng.poisson(rng.gamma(1.0, 1.0, size=(200, 6)) * 1e4 @ dictionary).astype(np.float64)
    bayes = BayesianNMF(dictionary=dictionary, random_state=0, max_iter=5000, tol=1e-10).fit(X)
    kl = NMF(beta_loss="kl", dictionary="frames", max_iter=5000, tol=1e-12,
             dtype="float64").fit(
        dictionary, np.arange(6))
    posterior_mean, fixed_point = bayes.transform(X), kl.transform(X)
    assert np.abs(posterior_mean - fixed_point).max() <= 0.005 * fixed_point.max()


def test_score_chooses_the_true_rank_in_a_grid_search() -> None:
    X = planted(n_frames=300, n_bins=40, scale=3.0, seed=0)
    search = GridSearchCV(BayesianNMF(random_state=0), {"n_components": [2, 3, 4, 6, 8]},
                          cv=KFold(3, shuffle=True, random_state=0)).fit(X)
    assert search.best_params_ == {"n_components": 4}


def test_svi_reaches_the_elbo_of_the_closed_form_solver() -> None:
    rng = np.random.default_rng(0)
    X = rng.poisson(5 * rng.gamma(1, size=(80, 2)) @ rng.gamma(1, size=(2, 30))).astype(float)
    vb = BayesianNMF(n_components=8, random_state=0).fit(X)
    svi = BayesianNMF(n_components=8, solver="svi", random_state=0).fit(X)
    assert svi.n_effective_components_ == vb.n_effective_components_ == 2
    assert abs(svi.elbo_ - vb.elbo_) <= 0.01 * abs(vb.elbo_)
    # Transform by SVI reconstructs X about as well as the closed form.
    errors = [np.abs(model.inverse_transform(model.transform(X)) - X).mean()
              for model in (vb, svi)]
    assert errors[1] <= 1.2 * errors[0]


# --- the estimator contract ------------------------------------------------------------
def test_y_is_ignored_in_a_pipeline() -> None:
    X = planted(scale=2.5)
    y = (np.arange(len(X)) % 2).astype(int)
    pipeline = Pipeline([("nmf", BayesianNMF(n_components=5, random_state=0)),
                         ("classifier", LogisticRegression())]).fit(X, y)
    assert pipeline.named_steps["classifier"].n_features_in_ == 5
    alone = BayesianNMF(n_components=5, random_state=0).fit(X)
    np.testing.assert_array_equal(pipeline.named_steps["nmf"].components_, alone.components_)


def test_shapes_batches_and_tensors() -> None:
    X = planted(scale=2.5, n_frames=60)
    model = BayesianNMF(n_components=6, random_state=0).fit(X)
    batch = np.stack([X[:30], X[30:]])
    assert model.transform(batch).shape == (2, 30, 6)
    single = model.transform(X[:30])
    np.testing.assert_allclose(model.transform(batch)[0], single, rtol=1e-6)
    tensor = model.transform(torch.as_tensor(X[:30]))
    assert isinstance(tensor, torch.Tensor)
    assert model.sample_posterior(X[:30], n_samples=3, method="variational").shape == (3, 30, 6)
    assert model.sample_posterior(batch, n_samples=2).shape == (2, 2, 30, 6)
    reconstruction = model.inverse_transform(model.transform(X))
    assert reconstruction.shape == X.shape
    assert np.corrcoef(reconstruction.ravel(), X.ravel())[0, 1] > 0.9
    assert model.fit_transform(X).shape == (60, 6)
    assert model.source_activations(X).shape == (60, 6)


def test_runs_are_repeatable_and_transform_leaves_the_fit_alone() -> None:
    X = planted(scale=2.5, n_frames=60)
    first = BayesianNMF(n_components=6, random_state=3).fit(X)
    second = BayesianNMF(n_components=6, random_state=3).fit(X)
    np.testing.assert_array_equal(first.components_, second.components_)
    before = first.components_.copy()
    first.transform(X)
    np.testing.assert_array_equal(first.components_, before)
    np.testing.assert_array_equal(first.sample_posterior(X, 4), first.sample_posterior(X, 4))


def test_save_and_load_round_trip(tmp_path) -> None:
    X = planted(scale=2.5, n_frames=60)
    model = BayesianNMF(n_components=6, random_state=0).fit(X)
    loaded = decomp.load(model.save(tmp_path / "bayes.decomp"))
    assert isinstance(loaded, BayesianNMF)
    np.testing.assert_allclose(loaded.transform(X), model.transform(X))
    assert loaded.score(X) == pytest.approx(model.score(X))
    assert clone(model).get_params() == model.get_params()


def test_activity_mode_gives_probabilities_of_the_sources_that_play() -> None:
    rng = np.random.default_rng(0)
    n_sources, per_source, n_bins, n_frames = 5, 3, 50, 120
    dictionary = rng.gamma(0.3, 1.0, size=(n_sources * per_source, n_bins))
    sources = np.repeat(np.arange(n_sources) + 60, per_source)
    playing = rng.random((n_frames, n_sources)) < 0.3
    weights = rng.gamma(2.0, 1.0, size=(n_frames, n_sources * per_source))
    activations = weights * np.repeat(playing, per_source, axis=1) * 10
    X = rng.poisson(activations @ dictionary).astype(np.float64)
    model = BayesianNMF(dictionary=dictionary, component_sources=sources,
                        random_state=0).fit(X)
    np.testing.assert_array_equal(model.sources_, np.arange(n_sources) + 60)
    probabilities = model.activity_probabilities(X)
    assert probabilities.shape == (n_frames, n_sources)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    np.testing.assert_array_equal(model.source_activations(X), probabilities)
    decided = probabilities >= 0.5
    assert np.mean(decided == playing) > 0.95
    with pytest.raises(ValueError, match="activity mode"):
        BayesianNMF(n_components=3).fit(X).activity_probabilities(X)


# --- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "message"), [
    ({"n_components": 0}, "n_components"),
    ({"n_components": True}, "n_components"),
    ({"activation_shape": 0.0}, "activation_shape"),
    ({"relevance_shape": -1.0}, "relevance_shape"),
    ({"inactive_scale": 1.0}, "inactive_scale"),
    ({"solver": "mcmc"}, "solver"),
    ({"n_components": 41}, "at most min"),
    ({"component_sources": [1, 2]}, "pass dictionary"),
])
def test_bad_parameters_are_refused_before_any_work(params: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        BayesianNMF(**params).fit(planted(n_frames=50, n_bins=40))


@pytest.mark.parametrize(("dictionary", "message"), [
    (-np.ones((3, 40)), "non-negative"),
    (np.full((3, 40), np.nan), "NaN"),
    (np.zeros((3, 40)), "all zero"),
    (np.ones(40), "2-d"),
    (np.ones((3, 39)), "bins"),
])
def test_bad_dictionaries_are_refused(dictionary: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BayesianNMF(dictionary=dictionary).fit(planted(n_frames=50, n_bins=40))


@pytest.mark.parametrize(("X", "message"), [
    (-np.ones((10, 5)), "negative"),
    (np.full((10, 5), np.inf), "NaN or inf"),
])
def test_bad_data_is_refused(X: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BayesianNMF(n_components=2).fit(X)


def test_gibbs_needs_counts_and_the_sampler_arguments_are_checked() -> None:
    X = planted(scale=2.5, n_frames=40)
    model = BayesianNMF(n_components=4, random_state=0).fit(X)
    with pytest.raises(ValueError, match="integer counts"):
        model.sample_posterior(X + 0.5, 2, method="gibbs")
    assert model.sample_posterior(X + 0.5, 2).shape == (2, 40, 4)  # auto: variational
    with pytest.raises(ValueError, match="n_samples"):
        model.sample_posterior(X, 0)
    with pytest.raises(ValueError, match="method"):
        model.sample_posterior(X, 2, method="hmc")
    with pytest.raises(ValueError, match="level"):
        model.credible_interval(X, 1.5)
    with pytest.raises(ValueError, match="bins"):
        model.transform(X[:, :10])


@parametrize_with_checks([BayesianNMF(n_components=2, max_iter=50, random_state=0)])
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_activity_mode_samples_from_the_variational_posterior() -> None:
    rng = np.random.default_rng(0)
    dictionary = rng.gamma(1.0, 1.0, size=(4, 20))
    X = rng.poisson(rng.gamma(1.0, 3.0, size=(30, 4)) @ dictionary).astype(np.float64)
    model = BayesianNMF(dictionary=dictionary, component_sources=[0, 0, 1, 1],
                        random_state=0).fit(X)
    assert model.sample_posterior(X, 3).shape == (3, 30, 4)  # auto: variational here
    with pytest.raises(ValueError, match="activity mode"):
        model.sample_posterior(X, 3, method="gibbs")
    with pytest.raises(ValueError, match="one label per dictionary row"):
        BayesianNMF(dictionary=dictionary, component_sources=[0, 1, 2]).fit(X)


def test_all_zero_data_has_no_relevant_component() -> None:
    model = BayesianNMF(n_components=3, random_state=0).fit(np.zeros((20, 10)))
    assert model.n_effective_components_ == 0
    assert np.isfinite(model.elbo_)


def test_count_scale_keeps_the_units_of_x_and_narrows_the_posterior() -> None:
    dictionary, _, X = drawn_from_model(10.0)
    plain = BayesianNMF(dictionary=dictionary, random_state=0).fit(X)
    scaled = BayesianNMF(dictionary=dictionary, count_scale=4.0, random_state=0).fit(X)
    # Same units: the same totals and pattern (small entries move with the prior's weight).
    np.testing.assert_allclose(scaled.transform(X).sum(), plain.transform(X).sum(), rtol=0.02)
    assert np.corrcoef(scaled.transform(X).ravel(), plain.transform(X).ravel())[0, 1] > 0.99
    widths = [np.median(np.subtract(*model.credible_interval(X, method="variational")[::-1]))
              for model in (plain, scaled)]
    assert widths[1] < 0.7 * widths[0]


def test_the_pyro_model_prior_density_is_the_gamma_density() -> None:
    import pyro.distributions as dist

    from decomp.estimators._pyro_nmf import _gamma_log_density

    generator = torch.Generator().manual_seed(0)
    shape = torch.tensor(0.7, dtype=torch.float64)
    rate = torch.rand(4, generator=generator, dtype=torch.float64) + 0.5
    activations = torch.rand(3, 5, 4, generator=generator, dtype=torch.float64) + 0.1
    dictionary = torch.rand(4, 6, generator=generator, dtype=torch.float64) + 0.1
    np.testing.assert_allclose(
        _gamma_log_density(activations, shape, rate, component_axis=-1),
        dist.Gamma(shape, rate).log_prob(activations).sum(dim=(-2, -1)))
    np.testing.assert_allclose(
        _gamma_log_density(dictionary, shape, rate, component_axis=-2),
        dist.Gamma(shape, rate[:, None]).log_prob(dictionary).sum())
