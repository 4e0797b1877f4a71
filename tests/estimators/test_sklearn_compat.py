"""scikit-learn compatibility of every decomp estimator.

``parametrize_with_checks`` runs scikit-learn's estimator checks on small, fast settings of
every estimator not already checked in its own test file (NMF and BayesianNMF are, in
``test_nmf.py`` and ``test_bayes_nmf.py``, with no expected failure). Checks that cannot
pass are listed in ``EXPECTED_FAILED_CHECKS`` with the reason; the list is strict (a
listed check that starts passing fails the run), so it stays exact. The same table is in
docs/guide/sklearn.md.

Every estimator then runs in a ``Pipeline`` and a ``GridSearchCV`` that chooses by the
estimator's own ``score`` (no scorer): the 2-d decomposers inside a pipeline, the
separators (whose X is mixtures of spectrograms and y their sources) directly. The
contract checks that scikit-learn cannot run on the separators' 3-d data are run here on
that data instead.
"""

from __future__ import annotations

import inspect
import pickle

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from decomp import DDS1, DDS2, DDS3, NMF, BayesianNMF
from decomp.audio import Spectrogram
from decomp.estimators.amortized import AudioSlots, BlockVAE, MHUNet, SoundOfPixels
from decomp.separation import NMFSeparator
from decomp.transcription import PianoTranscriber

# --------------------------------------------------------------------- small settings
_DDS = dict(n_flow_steps=1, hidden_features=4, n_hidden_layers=1, max_epochs=2, max_iter=5,
            batch_size=64, validation_fraction=0.0, device="cpu", random_state=0)
_SEPARATOR = dict(chunk_frames=8, max_epochs=2, batch_size=4, learning_rate=0.01,
                  validation_fraction=0.0, device="cpu", random_state=0)


def _audioslots(**params):
    return AudioSlots(**{**_SEPARATOR, "n_slots": 2, "patch_frames": 2, "patch_bins": 4,
                         "embed_dim": 8, "n_layers": 0, "n_heads": 1, "n_iterations": 1,
                         "decoder_hidden": 8, "feature_channels": 0, **params})


def _blockvae(**params):
    return BlockVAE(**{**_SEPARATOR, "n_blocks": 2, "block_size": 2, "hidden_size": 8,
                       "kernel_size": 3, **params})


def _mhunet(**params):
    return MHUNet(**{**_SEPARATOR, "n_levels": 1, "base_channels": 2, **params})


def _soundofpixels(**params):
    return SoundOfPixels(**{**_SEPARATOR, "n_components": 2, "n_levels": 1,
                            "base_channels": 2, **params})


SEPARATORS = {"AudioSlots": _audioslots, "BlockVAE": _blockvae, "MHUNet": _mhunet,
              "SoundOfPixels": _soundofpixels}

CHECKED = [
    DDS1(**_DDS),
    DDS2(n_components_per_source=1, **_DDS),
    DDS3(n_components_per_source=1, **_DDS),
    *(make() for make in SEPARATORS.values()),
    NMFSeparator(n_components_per_source=1, max_iter=5, device="cpu", random_state=0),
    PianoTranscriber(NMF(dictionary="frames", max_iter=5, device="cpu"), threshold=0.5),
]

# ------------------------------------------------------------ expected failed checks
_DDS_EXPECTED = {
    "check_transformer_n_iter": (
        "max_iter bounds transform's dictionary search, not fit: fit trains flows for up "
        "to max_epochs (training_history_['n_epochs'], 0 for a given flow)"),
    "check_methods_sample_order_invariance": (
        "a spectrogram's frames are decomposed together: DDS-2/3 share the searched "
        "dictionary across them and the search stops per item, so a frame's activations "
        "depend on the other frames"),
    "check_methods_subset_invariance": (
        "a spectrogram's frames are decomposed together: DDS-2/3 share the searched "
        "dictionary across them and the search stops per item, so a frame's activations "
        "depend on the other frames"),
}
_DDS3_DATA = (
    "the check's data has 2-3 features for 2-3 classes, but DDS3's flow needs more bins "
    "than sources (one semantic latent dim per source plus nuisance dims); DDS2, which "
    "shares all other code, passes it")
_SEPARATOR_DATA = (
    "the check fits 2-d X with a 1-d y; a separator reads 2-d X as waveforms (n_items, "
    "n_samples) whose y must be their sources (n_items, n_sources, n_samples), so fit "
    "refuses the data (the contract is tested on 3-d spectrograms in this file)")
_SEPARATOR_EXPECTED = {
    **{name: _SEPARATOR_DATA for name in [
        "check_fit_score_takes_y", "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
        "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
        "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
        "check_f_contiguous_array_estimator", "check_transformer_data_not_an_array",
        "check_transformer_general", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
        "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
        "check_n_features_in", "check_fit2d_predict1d"]},
    "check_complex_data": (
        "2-d X is waveforms, whose check refuses any dtype but real floats (complex "
        "included) with a TypeError, where scikit-learn expects a ValueError"),
    "check_estimators_empty_data_messages": (
        "an empty waveform batch is refused by the audio check, whose message gives the "
        "shape but not scikit-learn's '0 feature(s)' wording"),
    "check_transformer_preserve_dtypes": (
        "no fit_transform: fit's y is the sources and transform returns (n_items, n_slots, "
        "n_frames, n_bins) float32 spectrograms, not a transformer's 2-d output"),
}
_STEMS_BINS = (
    "X's columns are audio samples of the stems; n_features_in_ is the front end's "
    "number of bins, the width of the mixtures' features separate works on")
EXPECTED_FAILED_CHECKS = {
    "DDS1": _DDS_EXPECTED,
    "DDS2": _DDS_EXPECTED,
    "DDS3": {**_DDS_EXPECTED, **{name: _DDS3_DATA for name in [
        "check_fit_score_takes_y", "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
        "check_readonly_memmap_input", "check_f_contiguous_array_estimator",
        "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
        "check_n_features_in", "check_fit2d_predict1d"]}},
    **{name: _SEPARATOR_EXPECTED for name in SEPARATORS},
    "NMFSeparator": {
        "check_n_features_in_after_fitting": _STEMS_BINS,
        "check_n_features_in": _STEMS_BINS,
        "check_estimators_dtypes": (
            "integer stems are refused: PCM must be scaled to floats in [-1, 1] first "
            "(int16 / 32768), which the separator cannot guess"),
        "check_complex_data": (
            "the audio check refuses any dtype but real floats (complex included) with a "
            "TypeError, where scikit-learn expects a ValueError"),
        "check_estimators_empty_data_messages": (
            "an empty stem is refused by the audio check, whose message names the stem and "
            "its class but not scikit-learn's '0 feature(s)' wording"),
        "check_estimator_sparse_tag": (
            "stems are dense waveforms; the audio check refuses sparse input without "
            "naming sparsity"),
        "check_estimator_sparse_array": (
            "stems are dense waveforms; the audio check refuses sparse input without "
            "naming sparsity"),
        "check_estimator_sparse_matrix": (
            "stems are dense waveforms; the audio check refuses sparse input without "
            "naming sparsity"),
    },
    "PianoTranscriber": {
        "check_estimators_nan_inf": (
            "y must be integer MIDI pitches: the check's float y is refused before its NaN "
            "in X is reached"),
        "check_dtype_object": (
            "y must be integer MIDI pitches: an object y is refused with a message that "
            "names them, not scikit-learn's 'Unknown label type'"),
    },
}


def expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


# xfail_strict (scikit-learn >= 1.8): a listed check that passes fails the run.
_STRICT = ({"xfail_strict": True}
           if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters else {})


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks, **_STRICT)
def test_sklearn_estimator_checks(estimator, check) -> None:
    try:
        check(estimator)
    except Exception as error:
        name = getattr(check, "func", check).__name__
        if name not in expected_failed_checks(estimator):
            raise
        # An expected failure: report it in one line (formatting scikit-learn's deep
        # tracebacks would take most of this file's run time).
        raise AssertionError(f"{type(error).__name__}: {error}") from None


def test_every_expected_failure_is_documented() -> None:
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "guide" / "sklearn.md").read_text()
    for estimator, checks in EXPECTED_FAILED_CHECKS.items():
        for check in checks:
            assert f"`{check}`" in page, f"{estimator}: {check} is not in the guide's table"


# ------------------------------------------------------------------- 2-d decomposers
N_BINS = 12


def _frames(n_per_source: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three sources with their own spectral peak, frames interleaved by source."""
    rng = np.random.default_rng(seed)
    bins = np.arange(N_BINS)
    templates = np.stack([np.exp(-0.5 * (bins - centre) ** 2) for centre in (2, 6, 9)])
    labels = np.tile(np.arange(3), n_per_source)
    gains = rng.uniform(0.5, 1.5, (labels.size, 1))
    X = templates[labels] * gains * (1 + 0.1 * rng.random((labels.size, N_BINS))) + 0.01
    return X.astype(np.float32), labels


DECOMPOSERS = {
    "NMF": (NMF(n_components=3, max_iter=50, random_state=0), "n_components", [1, 3]),
    "BayesianNMF": (BayesianNMF(n_components=3, max_iter=50, random_state=0),
                    "n_components", [1, 3]),
    "DDS1": (DDS1(**_DDS), "max_iter", [1, 30]),
    "DDS2": (DDS2(n_components_per_source=1, **_DDS), "max_iter", [1, 30]),
    "DDS3": (DDS3(n_components_per_source=1, **_DDS), "max_iter", [1, 30]),
}


def _counts(X: np.ndarray, name: str) -> np.ndarray:
    # BayesianNMF's Poisson likelihood wants counts-like magnitudes.
    return np.round(X * 20) if name == "BayesianNMF" else X


@pytest.mark.parametrize("name", list(DECOMPOSERS))
def test_a_decomposer_feeds_a_classifier_in_a_pipeline(name) -> None:
    estimator = clone(DECOMPOSERS[name][0])
    X, y = _frames()
    X = _counts(X, name)
    pipeline = Pipeline([("decompose", estimator), ("classify", LogisticRegression())])
    pipeline.fit(X, y)  # y: the DDS flows' source labels, ignored by (Bayesian) NMF
    fitted = pipeline.named_steps["decompose"]
    assert pipeline.named_steps["classify"].n_features_in_ == fitted.n_components_
    names = pipeline[:-1].get_feature_names_out()
    assert names.tolist() == fitted.get_feature_names_out().tolist()
    assert len(names) == fitted.n_components_ and names[0].startswith(name.lower())
    assert pipeline.predict(X).shape == y.shape
    assert fitted.set_output(transform="default") is fitted


@pytest.mark.parametrize("name", list(DECOMPOSERS))
def test_grid_search_chooses_by_the_decomposers_score(name) -> None:
    estimator, parameter, grid = DECOMPOSERS[name]
    X, y = _frames()
    X = _counts(X, name)
    compress = FunctionTransformer(np.sqrt, feature_names_out="one-to-one")
    pipeline = Pipeline([("compress", compress), ("decompose", clone(estimator))])
    search = GridSearchCV(pipeline, {f"decompose__{parameter}": grid}, cv=2).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and scores[0] != scores[1]
    # More components, or a longer search, explain held-out frames better.
    assert search.best_params_ == {f"decompose__{parameter}": grid[1]}
    assert search.best_score_ == scores.max()
    assert search.score(X, y) == pytest.approx(
        search.best_estimator_.named_steps["decompose"].score(np.sqrt(X)))


@pytest.mark.parametrize("cls", [DDS1, DDS2, DDS3])
def test_dds_score_is_the_negative_objective_per_entry(cls) -> None:
    X, y = _frames()
    model = cls(**_DDS).fit(X, y)
    batch = np.stack([X[:20], X[20:40]])
    result = model.decompose(batch)
    assert model.score(batch) == pytest.approx(-result.loss.sum() / batch.size, rel=1e-6)
    assert model.score(batch) == model.score(batch)  # the seeded search repeats


def test_dds_without_labels_fails_in_one_line() -> None:
    X, _ = _frames()
    with pytest.raises(ValueError, match="requires y to be passed") as error:
        DDS2(**_DDS).fit(X)
    assert "\n" not in str(error.value) and "one label per frame" in str(error.value)


def test_dds_feature_names_keep_the_component_index_readable() -> None:
    X, y = _frames()
    model = DDS2(n_components_per_source=2, **_DDS).fit(X, y)
    assert model.get_feature_names_out().tolist() == [f"dds2_{i}" for i in range(6)]
    assert model.transform(X).shape == (X.shape[0], 6)


# ------------------------------------------------------------------------ separators
SEP_BINS = 17


def _mixtures(n_items: int = 8, n_frames: int = 16, seed: int = 0):
    """Two sources with disjoint spectral templates; labels 'low' and 'high'."""
    rng = np.random.default_rng(seed)
    templates = np.zeros((2, SEP_BINS))
    templates[0, :8] = rng.random(8) + 0.5
    templates[1, 9:] = rng.random(SEP_BINS - 9) + 0.5
    activations = rng.random((n_items, 2, n_frames, 1)) + 0.1
    sources = (activations * templates[None, :, None, :]).astype(np.float32)
    labels = np.tile(np.array(["low", "high"]), (n_items, 1))
    return sources.sum(axis=1), sources, labels


def _labels_for(name: str, labels: np.ndarray) -> np.ndarray | None:
    return labels if name == "SoundOfPixels" else None


@pytest.mark.parametrize("name", list(SEPARATORS))
def test_grid_search_chooses_a_separator_by_its_score(name) -> None:
    mixtures, sources, labels = _mixtures()
    grid = {"max_epochs": [0, 8]}  # an untrained network against a trained one
    if name == "SoundOfPixels":
        # Its loss is per class: the labels travel with the data by metadata routing.
        with sklearn.config_context(enable_metadata_routing=True):
            estimator = SEPARATORS[name]().set_fit_request(labels=True) \
                .set_score_request(labels=True)
            search = GridSearchCV(estimator, grid, cv=2).fit(mixtures, sources, labels=labels)
    else:
        search = GridSearchCV(SEPARATORS[name](), grid, cv=2).fit(mixtures, sources)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all(scores < 0)
    assert search.best_params_ == {"max_epochs": 8} and scores[1] > scores[0]
    assert search.best_estimator_.n_epochs_ == 8


@pytest.mark.parametrize("name", list(SEPARATORS))
def test_separator_score_is_minus_its_training_loss(name) -> None:
    mixtures, sources, labels = _mixtures()
    model = SEPARATORS[name]().fit(mixtures, sources, _labels_for(name, labels))
    # validation_fraction=0: fit selects on the training items' tiles, which score sees.
    score = model.score(mixtures, sources, _labels_for(name, labels))
    assert score == pytest.approx(-model.best_validation_loss_, rel=1e-5)
    with pytest.raises(ValueError, match="needs the sources"):
        model.score(mixtures)


def test_separator_score_needs_labels_where_its_loss_is_per_class() -> None:
    mixtures, sources, labels = _mixtures()
    classes = _mhunet(heads="classes").fit(mixtures, sources, labels)
    assert np.isfinite(classes.score(mixtures, sources, labels))
    with pytest.raises(ValueError, match="needs labels"):
        classes.score(mixtures, sources)
    with pytest.raises(ValueError, match="unknown labels"):
        classes.score(mixtures, sources, np.where(labels == "low", "bass", labels))
    with pytest.raises(ValueError, match="needs labels"):
        _soundofpixels().fit(mixtures, sources, labels).score(mixtures, sources)


def test_separator_score_refuses_a_waveform_loss() -> None:
    model = _audioslots(separation_loss="si_sdr")
    model.__dict__.update(network_state_={}, front_end_=Spectrogram())  # as if fitted
    with pytest.raises(ValueError, match="waveform loss"):
        model.score(*_mixtures()[:2])


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
@pytest.mark.parametrize("name", list(SEPARATORS))
def test_separators_follow_the_estimator_contract_on_their_own_data(name) -> None:
    """The checks scikit-learn cannot run on 3-d data (see _SEPARATOR_DATA)."""
    mixtures, sources, labels = _mixtures()
    labels = _labels_for(name, labels)
    request = None if labels is None else ["low", "high"]
    estimator = SEPARATORS[name]()
    params = joblib.hash(estimator.get_params())
    readonly = np.require(mixtures, requirements="F")
    readonly.flags.writeable = False
    assert estimator.fit(readonly, sources, labels) is estimator  # fit returns self
    assert joblib.hash(estimator.get_params()) == params  # and leaves the parameters
    assert estimator.n_features_in_ == SEP_BINS
    output = estimator.transform(mixtures, request)
    state = {key: joblib.hash(value) for key, value in vars(estimator).items()}
    estimator.transform(mixtures[:2], request)
    estimator.score(mixtures, sources, labels)
    assert {key: joblib.hash(value) for key, value in vars(estimator).items()} == state
    again = clone(estimator).fit(mixtures, sources, labels)  # fit is idempotent
    np.testing.assert_array_equal(again.transform(mixtures, request), output)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.transform(mixtures, request), output)
    bad = mixtures.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clone(estimator).fit(bad, sources, labels)
    with pytest.raises(ValueError, match="negative"):
        estimator.transform(-mixtures, request)
    with pytest.raises(ValueError, match=f"{SEP_BINS}"):
        estimator.transform(mixtures[..., :-1], request)


# ----------------------------------------------------------------------- NMFSeparator
def _stems(n_per_class: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(4000) / 8000
    stems, labels = [], []
    for index in range(2 * n_per_class):
        frequency, label = ((200, "low") if index % 2 == 0 else (1200, "high"))
        phase = rng.uniform(0, 2 * np.pi)
        stems.append(0.5 * np.sin(2 * np.pi * frequency * (1 + 0.02 * rng.random()) * t + phase)
                     + 0.01 * rng.normal(size=t.size))
        labels.append(label)
    return np.asarray(stems, dtype=np.float32), np.asarray(labels)


def test_grid_search_chooses_nmf_separator_components_by_its_score() -> None:
    X, y = _stems()
    front_end = Spectrogram(sample_rate=8000, n_fft=256, hop_length=128, kind="linear")
    separator = NMFSeparator(front_end=front_end, max_iter=30, device="cpu", random_state=0)
    pipeline = Pipeline([("gain", FunctionTransformer(lambda stems: 0.5 * stems)),
                         ("separate", separator)])
    search = GridSearchCV(pipeline, {"separate__n_components_per_source": [1, 4]},
                          cv=2).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and scores[0] != scores[1]
    assert search.best_params_ == {"separate__n_components_per_source": 4}
    fitted = search.best_estimator_.named_steps["separate"]
    assert fitted.classes_.tolist() == ["high", "low"]
    # Each stem is scored against its own class: the other class's dictionary fits worse.
    swapped = np.where(y == "low", "high", "low")
    assert fitted.score(0.5 * X, y) > fitted.score(0.5 * X, swapped)
