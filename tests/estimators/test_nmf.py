import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import decomp
import decomp._backend
from decomp import NMF
from decomp.estimators import nmf as nmf_module
from decomp.exceptions import ModelFileError


@parametrize_with_checks(
    [NMF(n_components=2, max_iter=50, random_state=0)],
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_unsupervised_fit_recovers_planted_factorisation(planted):
    X, _, _ = planted
    model = NMF(n_components=3, beta_loss="frobenius", max_iter=2000, tol=1e-8, random_state=0)
    activations = model.fit_transform(X)
    assert activations.shape == (60, 3)
    assert model.components_.shape == (3, 20)
    relative_error = np.linalg.norm(X - activations @ model.components_) / np.linalg.norm(X)
    assert relative_error < 1e-2
    # reconstruction_err_ is the fit's own (dictionary and activations learned together);
    # fit_transform returns what transform re-infers against the learned dictionary.
    assert 0 < model.reconstruction_err_ / np.linalg.norm(X) < 1e-2
    assert model.n_iter_ > 0
    assert np.all(np.diff(model.loss_history_) <= 1e-9 * model.loss_history_[:-1])


@pytest.mark.parametrize("beta_loss", ["frobenius", "kullback-leibler", "itakura-saito"])
@pytest.mark.parametrize("solver", ["mu", "adam"])
def test_every_loss_and_solver_fits(planted, beta_loss, solver):
    X, _, _ = planted
    model = NMF(n_components=3, beta_loss=beta_loss, solver=solver, max_iter=300,
                random_state=0, dtype="float64")
    model.fit(X + 1e-3)
    assert model.loss_history_[-1] < 0.5 * model.loss_history_[0]
    assert np.all(model.components_ >= 0)


def test_transform_leaves_fitted_state_unchanged(planted):
    X, _, _ = planted
    model = NMF(n_components=3, random_state=0).fit(X)
    before = {key: np.copy(value) if isinstance(value, np.ndarray) else value
              for key, value in vars(model).items()}
    model.transform(X[:10])
    for key, value in vars(model).items():
        np.testing.assert_array_equal(value, before[key])


def test_random_state_makes_runs_repeatable(planted):
    X, _, _ = planted
    first = NMF(n_components=3, init="random", random_state=7).fit(X).components_
    second = NMF(n_components=3, init="random", random_state=7).fit(X).components_
    other = NMF(n_components=3, init="random", random_state=8).fit(X).components_
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_semi_supervised_dictionary_and_source_activations():
    rng = np.random.default_rng(0)
    # Three sources with disjoint spectral supports; each training frame is one source.
    supports = [slice(0, 5), slice(5, 10), slice(10, 15)]
    frames, labels = [], []
    for source, support in enumerate(supports):
        for _ in range(8):
            frame = np.zeros(15)
            frame[support] = rng.random(5) + 0.5
            frames.append(frame)
            labels.append(["a", "b", "c"][source])
    X_train, y = np.array(frames), np.array(labels)
    model = NMF(dictionary="frames", random_state=0).fit(X_train, y)
    assert model.components_.shape == (24, 15)
    assert list(model.sources_) == ["a", "b", "c"]
    assert model.n_iter_ == 0 and np.isnan(model.reconstruction_err_)
    mixture = X_train[0] * 2 + X_train[16]  # sources a and c active
    activity = model.source_activations(mixture[None, :])
    assert activity.shape == (1, 3)
    shares = activity[0] / activity[0].sum()
    assert shares[0] > 0.5 and shares[2] > 0.25 and shares[1] < 0.01


def test_subsampled_and_nmf_dictionaries():
    rng = np.random.default_rng(1)
    X = rng.random((40, 10))
    y = np.repeat([60, 61], 20)
    subsampled = NMF(dictionary="frames", n_components_per_source=5, random_state=0).fit(X, y)
    assert subsampled.components_.shape == (10, 10)
    assert np.array_equal(np.unique(subsampled.component_sources_, return_counts=True)[1],
                          [5, 5])
    # Every kept row is one of the training frames of its own source.
    for row, source in zip(subsampled.components_, subsampled.component_sources_, strict=True):
        matches = np.all(np.isclose(X, row), axis=1)
        assert matches.any() and set(y[matches]) == {source}
    learned = NMF(dictionary="nmf", n_components_per_source=3, random_state=0).fit(X, y)
    assert learned.components_.shape == (6, 10)
    assert learned.n_iter_ > 0
    assert list(learned.component_sources_) == [60] * 3 + [61] * 3


def test_source_activations_rescale_by_row_norm():
    model = NMF(dictionary="frames").fit(np.array([[3.0, 4.0], [0.0, 2.0]]), np.array([0, 1]))
    activations = np.array([[1.0, 1.0], [2.0, 0.0]])
    # Row norms are 5 and 2: source activity = activation x norm.
    np.testing.assert_allclose(model.activations_to_sources(activations),
                               [[5.0, 2.0], [10.0, 0.0]])


def test_batched_transform_matches_items_and_inverse(planted):
    X, _, _ = planted
    model = NMF(n_components=3, random_state=0, dtype="float64").fit(X)
    batch = np.stack([X, X[::-1] * 2])
    batched = model.transform(batch)
    assert batched.shape == (2, 60, 3)
    for item in range(2):
        np.testing.assert_allclose(batched[item], model.transform(batch[item]), rtol=1e-8)
    reconstruction = model.inverse_transform(batched)
    assert reconstruction.shape == (2, 60, 20)
    decomposition = model.decompose(batch)
    assert decomposition.history.shape[1] == 2 and decomposition.n_iter.shape == (2,)


def test_tensor_in_tensor_out(planted):
    X, _, _ = planted
    model = NMF(n_components=3, random_state=0).fit(X)
    output = model.transform(torch.as_tensor(X, dtype=torch.float32))
    assert isinstance(output, torch.Tensor) and output.dtype == torch.float32
    assert output.device == torch.device("cpu")
    np.testing.assert_allclose(output.numpy(), model.transform(X.astype(np.float32)), rtol=1e-5)


def test_float32_input_stays_float32(planted):
    X, _, _ = planted
    model = NMF(n_components=3, random_state=0).fit(X.astype(np.float32))
    assert model.transform(X.astype(np.float32)).dtype == np.float32
    assert model.transform(X).dtype == np.float64


def test_sparsity_penalty_makes_activations_sparser(planted):
    X, _, _ = planted
    plain = NMF(n_components=3, random_state=0).fit(X).transform(X)
    sparse = NMF(n_components=3, alpha=0.05, random_state=0).fit(X).transform(X)
    threshold = 1e-3
    assert (np.abs(sparse) < threshold * np.abs(sparse).max()).mean() > (
        np.abs(plain) < threshold * np.abs(plain).max()).mean()


@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (-np.ones((4, 3)), ValueError, "Negative values in data passed to X"),
        (np.full((4, 3), np.nan), ValueError, "NaN or infinity"),
        (np.ones(3), ValueError, "must have 2 .* or 3 .* dimensions"),
        (np.ones((2, 2, 2, 2)), ValueError, "must have 2 .* or 3 .* dimensions"),
        (np.ones((0, 3)), ValueError, "0 sample"),
        ("spectrogram", TypeError, "must be a NumPy array or a torch tensor"),
        (np.ones((4, 3), dtype=complex), ValueError, "Complex data not supported"),
    ],
)
def test_bad_input_messages(X, error, match):
    with pytest.raises(error, match=match):
        NMF(n_components=2).fit(X)


def test_bad_input_after_fit(planted):
    X, _, _ = planted
    model = NMF(n_components=3).fit(X)
    with pytest.raises(ValueError, match="X has 19 features, but NMF is expecting 20 features"):
        model.transform(X[:, :19])
    with pytest.raises(ValueError, match="activations have 2 components"):
        model.activations_to_sources(np.ones((4, 2)))
    with pytest.raises(ValueError, match="y has 3 labels but X has 60 frames"):
        NMF(dictionary="frames").fit(X, [1, 2, 3])
    with pytest.raises(ValueError, match="fit\\(X, y\\) takes X of shape"):
        NMF(dictionary="frames").fit(np.stack([X, X]), np.arange(60))
    with pytest.raises(ValueError, match="dictionary='nmf' builds the dictionary from labelled"):
        NMF(dictionary="nmf").fit(X)
    with pytest.raises(ValueError, match="The 'n_components' parameter of NMF must be"):
        NMF(n_components=0).fit(X)
    with pytest.raises(ValueError, match="The 'beta_loss' parameter of NMF must be"):
        NMF(beta_loss="manhattan").fit(X)
    with pytest.raises(NotFittedError):
        NMF().transform(X)


@pytest.fixture
def no_engine(monkeypatch):
    """Fail if NMF reaches its initialisation or the engine: size checks must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("NMF allocated its factors before checking their size")

    for name in ("initialize_nmf", "initialize_activations", "minimize"):
        monkeypatch.setattr(nmf_module, name, fail)


def test_factors_beyond_the_free_memory_are_refused_before_allocating(no_engine, monkeypatch):
    X = np.random.default_rng(0).random((40, 12)).astype(np.float32)
    # On any machine: 10**9 components of 52 floats are 416 GB.
    with pytest.raises(MemoryError, match=r"NMF\.fit needs at least 416\.0 GB for its factors"):
        NMF(n_components=10**9).fit(X)
    monkeypatch.setattr(decomp._backend, "available_memory", lambda device: 10**9)
    with pytest.raises(MemoryError, match=re.escape(
            "NMF.fit needs at least 416.0 GB for its factors (n_components=1000000000 x "
            "(n_frames=40 + n_bins=12) x 4 bytes x 2 copies), but only 1.0 GB of memory is "
            "available on cpu. Lower n_components, or fit on fewer frames.")):
        NMF(n_components=10**9).fit(X)


def test_transform_refuses_a_batch_beyond_the_free_memory(monkeypatch, planted):
    X, _, _ = planted
    model = NMF(n_components=3, max_iter=5, random_state=0).fit(X)
    monkeypatch.setattr(decomp._backend, "available_memory", lambda device: 1000)
    with pytest.raises(MemoryError, match=re.escape(
            "GB for the activations (2 item(s) x 60 frames x n_components_=3 x 8 bytes x 2 "
            "copies), but only 0.0 GB of memory is available on cpu. Pass fewer frames")):
        model.transform(np.stack([X, X]))


def test_more_components_than_frames_and_bins_are_refused(no_engine):
    X = np.random.default_rng(0).random((40, 12))
    message = ("The 'n_components' parameter of NMF must be at most max(n_frames, n_bins) = 40 "
               "for X of 40 frames and 12 bins. Got {} instead: min(n_frames, n_bins) = 12 "
               "components already reconstruct X exactly")
    for n_components in (41, 10**6):
        with pytest.raises(ValueError, match=re.escape(message.format(n_components))):
            NMF(n_components=n_components).fit(X)
    # A batch counts as one sequence of frames.
    with pytest.raises(ValueError, match=r"= 80 for X of 80 frames"):
        NMF(n_components=81).fit(np.stack([X, X]))


def test_over_complete_up_to_the_larger_dimension_is_allowed():
    X = np.random.default_rng(0).random((40, 12))
    assert NMF(n_components=40, max_iter=5).fit(X).components_.shape == (40, 12)


def test_save_and_load_round_trip(tmp_path, planted):
    X, _, _ = planted
    model = NMF(n_components=3, beta_loss="itakura-saito", random_state=0).fit(X + 0.1,
                                                                               None)
    supervised = NMF(dictionary="frames", n_components_per_source=4, random_state=0).fit(
        X, np.array(["low", "high"] * 30))
    for fitted in (model, supervised):
        path = fitted.save(tmp_path / "model.decomp")
        restored = decomp.load(path)
        assert isinstance(restored, NMF)
        assert restored.get_params() == fitted.get_params()
        np.testing.assert_array_equal(restored.components_, fitted.components_)
        np.testing.assert_array_equal(restored.sources_, fitted.sources_)
        np.testing.assert_allclose(restored.transform(X[:5]), fitted.transform(X[:5]))
    assert clone(model).get_params() == model.get_params()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        decomp.load(tmp_path / "missing.decomp")
    garbage = tmp_path / "garbage.decomp"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a readable decomp model file"):
        decomp.load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ModelFileError, match="not a decomp model file"):
        decomp.load(foreign)
    future = tmp_path / "future.decomp"
    torch.save({"format": "decomp-model", "format_version": 99, "library_version": "9.0"},
               future)
    with pytest.raises(ModelFileError, match="Upgrade decomp"):
        decomp.load(future)
    with pytest.raises(NotFittedError):
        NMF().save(tmp_path / "unfitted.decomp")


def test_a_pipeline_passing_y_keeps_nmf_unsupervised(planted):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    X, _, _ = planted
    y = np.arange(len(X)) % 2
    pipeline = Pipeline([("nmf", NMF(n_components=3, random_state=0)),
                         ("classifier", LogisticRegression())]).fit(X, y)
    assert pipeline.named_steps["classifier"].n_features_in_ == 3
    assert pipeline.named_steps["nmf"].components_.shape == (3, X.shape[1])


def test_output_feature_names_follow_scikit_learn(planted):
    from decomp import BayesianNMF

    X, _, _ = planted
    model = NMF(n_components=3, random_state=0).fit(X)
    assert model.get_feature_names_out().tolist() == ["nmf0", "nmf1", "nmf2"]
    assert model.set_output(transform="default") is model
    assert isinstance(model.transform(X), np.ndarray)
    bayes = BayesianNMF(n_components=2, random_state=0).fit(np.round(X * 10))
    assert bayes.get_feature_names_out().tolist() == ["bayesiannmf0", "bayesiannmf1"]


def test_score_is_the_negative_divergence_per_entry(planted):
    from sklearn.model_selection import GridSearchCV

    from decomp.engine import beta_divergence

    X, _, _ = planted
    model = NMF(n_components=3, beta_loss="kl", random_state=0, dtype="float64").fit(X)
    reconstruction = model.inverse_transform(model.transform(X))
    divergence = float(beta_divergence(torch.as_tensor(X)[None],
                                       torch.as_tensor(reconstruction)[None], 1.0)[0])
    assert model.score(X) == pytest.approx(-divergence / X.size, rel=1e-6)
    search = GridSearchCV(NMF(random_state=0), {"n_components": [1, 3]}, cv=3).fit(X)
    assert search.best_params_ == {"n_components": 3}
