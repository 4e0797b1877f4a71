"""DDS-1/2/3: planted decompositions, the estimator contract, save/load, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import decomp
import decomp._backend
from decomp import DDS1, DDS2, DDS3
from decomp.estimators import dds as dds_module
from decomp.exceptions import ModelFileError
from decomp.flows import StackedRealNVP
from decomp.metrics import precision_of_source_attribution

N_SOURCES, N_BINS = 4, 24


def _templates() -> np.ndarray:
    """Four 'notes': a fundamental and a weaker second partial each, on 24 bins."""
    bins = np.arange(N_BINS)
    return np.stack([
        np.exp(-0.5 * (bins - (3 + 5 * s)) ** 2)
        + 0.5 * np.exp(-0.5 * (bins - (6 + 10 * s) % N_BINS) ** 2)
        for s in range(N_SOURCES)
    ])


def _fitted_with(model, **params):
    """A clone of the fitted ``model`` with ``params`` changed and its fitted attributes
    (flow, sources) kept, so that only the search differs."""
    changed = clone(model).set_params(**params)
    changed.__dict__.update({k: v for k, v in vars(model).items() if k.endswith("_")})
    return changed


@pytest.fixture(scope="module")
def training_frames():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(N_SOURCES) + 60, 120)  # labels are MIDI-like numbers
    gains = rng.uniform(0.5, 1.5, (labels.size, 1))
    noise = 1 + 0.1 * rng.normal(size=(labels.size, N_BINS))
    X = np.clip(_templates()[labels - 60] * gains * noise, 0, None) + 0.01
    return X.astype(np.float32), labels


@pytest.fixture(scope="module")
def planted():
    """A mixture where sources 0 and 2 overlap in the middle, and its roll."""
    n_frames = 30
    activations = np.zeros((n_frames, N_SOURCES))
    activations[:18, 0] = 1.0
    activations[10:, 2] = 0.7
    return (activations @ _templates() + 0.01).astype(np.float32), activations > 0


@pytest.fixture(scope="module")
def fitted_dds2(training_frames):
    X, y = training_frames
    return DDS2(n_components_per_source=2, n_flow_steps=4, hidden_features=32,
                max_epochs=30, max_iter=200, random_state=0).fit(X, y)


def test_fit_trains_the_flow_and_records_its_history(fitted_dds2):
    history = fitted_dds2.training_history_
    assert history["validation_loss"].shape == (history["n_epochs"],)
    assert history["best_validation_loss"] < history["validation_loss"][0]
    assert fitted_dds2.sources_.tolist() == [60, 61, 62, 63]
    assert fitted_dds2.component_sources_.tolist() == [60, 60, 61, 61, 62, 62, 63, 63]
    assert fitted_dds2.n_components_ == 8 and fitted_dds2.n_features_in_ == N_BINS


@pytest.mark.parametrize("variant", ["dds1", "dds2"])
def test_recovers_a_planted_decomposition(variant, fitted_dds2, training_frames, planted):
    X, y = training_frames
    mixture, roll = planted
    model = fitted_dds2 if variant == "dds2" else DDS1(
        flow=fitted_dds2.flow_, max_iter=200, random_state=0).fit(X, y)
    activity = model.source_activations(mixture)
    assert activity.shape == (30, N_SOURCES)
    assert precision_of_source_attribution(activity, roll) > 0.9
    # Each frame's strongest source is one that is really there.
    assert roll[np.arange(30), activity.argmax(1)].all()


def test_decompose_reports_dictionary_codes_and_history(fitted_dds2, planted):
    mixture, _ = planted
    seen = []
    result = fitted_dds2.decompose(np.stack([mixture, mixture[::-1]]), max_iter=30,
                                   callback=lambda i, state, loss: seen.append(
                                       (i, state["likelihood_penalty"].shape)))
    assert result.activations.shape == (2, 30, 8)
    assert result.dictionary.shape == (2, 8, N_BINS)
    assert (result.dictionary >= 0).all()  # rows are relu(f(z))
    assert result.latent_codes.shape == (2, 8, N_BINS)
    assert result.source_activations.shape == (2, 30, N_SOURCES)
    assert result.loss.shape == (2,) and result.n_iter.tolist() == [30, 30]
    assert result.history.shape[1] == 2 and result.history[-1, 0] < result.history[0, 0]
    assert seen[0] == (0, (2,)) and seen[-1][0] == 30


def test_dds1_codes_are_per_frame(fitted_dds2, training_frames, planted):
    model = DDS1(flow=fitted_dds2.flow_, max_iter=5, random_state=0).fit(*training_frames)
    result = model.decompose(planted[0])
    assert result.activations.shape == (30, N_SOURCES)
    assert result.dictionary.shape == (30, N_SOURCES, N_BINS)


def test_search_starts_at_the_mode_and_likelihood_holds_codes_near_it(
        fitted_dds2, planted):
    loose = _fitted_with(fitted_dds2, likelihood_weight=0.0, latent_learning_rate=0.05)
    tight = _fitted_with(loose, likelihood_weight=100.0)
    start = fitted_dds2.decompose(planted[0], max_iter=0).latent_codes
    np.testing.assert_array_equal(start, 0)
    far = np.linalg.norm(loose.decompose(planted[0], max_iter=100).latent_codes)
    near = np.linalg.norm(tight.decompose(planted[0], max_iter=100).latent_codes)
    assert near < far


def test_torch_in_torch_out_and_float64(fitted_dds2, planted):
    tensor = torch.as_tensor(planted[0], dtype=torch.float64)
    out = fitted_dds2.source_activations(tensor)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


def test_sample_dictionary_decodes_modes(fitted_dds2, training_frames):
    rows = fitted_dds2.sample_dictionary()
    assert rows.shape == (N_SOURCES, N_BINS)
    # The mode of each note's flow sits on that note's mean training frame.
    X, y = training_frames
    for index, source in enumerate(fitted_dds2.sources_):
        mean = X[y == source].mean(0)
        assert np.corrcoef(rows[index], mean)[0, 1] > 0.95
    with pytest.raises(ValueError, match="unknown source"):
        fitted_dds2.sample_dictionary(source=[99])


def test_save_load_round_trip(fitted_dds2, planted, tmp_path):
    path = fitted_dds2.save(tmp_path / "dds2.decomp")
    loaded = decomp.load(path)
    assert isinstance(loaded, DDS2)
    assert loaded.get_params()["n_components_per_source"] == 2
    np.testing.assert_allclose(loaded.source_activations(planted[0]),
                               fitted_dds2.source_activations(planted[0]), rtol=1e-5,
                               atol=1e-6)
    corrupt = tmp_path / "corrupt.decomp"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError):
        decomp.load(corrupt)


def test_clone_and_params():
    model = DDS2(n_components_per_source=3, likelihood_weight=2.0)
    params = clone(model).get_params()
    assert params["n_components_per_source"] == 3 and params["likelihood_weight"] == 2.0
    assert "n_components_per_source" not in DDS1().get_params()
    assert DDS2.paper().get_params()["n_flow_steps"] == 16
    assert DDS3.paper().get_params()["hidden_features"] == 1024


def test_not_fitted():
    with pytest.raises(NotFittedError):
        DDS2().transform(np.ones((3, 4)))


@pytest.mark.parametrize(
    ("X", "y", "error", "message"),
    [
        (np.ones((10, 4)), None, ValueError, "needs source labels"),
        (-np.ones((10, 4)), np.zeros(10), ValueError, "negative"),
        (np.full((10, 4), np.nan), np.zeros(10), ValueError, "NaN"),
        (np.ones((2, 10, 4)), np.zeros(10), ValueError, r"\(n_frames, n_bins\)"),
        (np.ones((10, 4)), np.zeros(7), ValueError, "10"),
    ],
)
def test_bad_training_input(X, y, error, message):
    with pytest.raises(error, match=message):
        DDS2(max_epochs=1).fit(X, y)


def test_bad_transform_input(fitted_dds2):
    with pytest.raises(ValueError, match=str(N_BINS)):
        fitted_dds2.transform(np.ones((5, N_BINS + 1)))
    with pytest.raises(ValueError, match="NaN"):
        fitted_dds2.transform(np.full((5, N_BINS), np.nan))
    with pytest.raises(ValueError, match="negative"):
        fitted_dds2.transform(-np.ones((5, N_BINS)))


def test_bad_parameters():
    with pytest.raises(ValueError, match="likelihood_weight"):
        DDS2(likelihood_weight=-1).fit(np.ones((10, 4)), np.zeros(10))
    with pytest.raises(ValueError, match="n_components_per_source"):
        DDS2(n_components_per_source=0).fit(np.ones((10, 4)), np.zeros(10))


@pytest.mark.parametrize("cls", [DDS1, DDS2, DDS3])
def test_a_flow_beyond_the_free_memory_is_refused_before_building_it(cls, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the flow was built before its size was checked")

    monkeypatch.setattr(cls, "_make_flow", fail)
    X, y = np.ones((10, N_BINS)), np.repeat([0, 1], 5)
    # 2 sources x 4 steps x 10**9 hidden units x 36 in/outputs alone are over 1 TB.
    with pytest.raises(MemoryError, match=rf"{cls.__name__}\.fit needs at least [\d,.]+ GB for "
                                          r"the flow's [\d,]+ weights \(2 source\(s\) of 24 bins"):
        cls(hidden_features=10**9).fit(X, y)


@pytest.mark.parametrize("cls", [DDS1, DDS2])
def test_a_search_beyond_the_free_memory_is_refused_before_allocating(cls, monkeypatch):
    flow = StackedRealNVP(2, N_BINS, n_blocks=1, hidden_features=4, random_state=0)
    model = cls.from_flow(flow, [0, 1])
    monkeypatch.setattr(decomp._backend, "available_memory", lambda device: 1000)
    if cls is DDS2:
        expected = (r"DDS2\.transform needs at least [\d,.]+ GB for its codes and dictionary "
                    r"\(1 item\(s\) x 8 components x \(n_latent=24 \+ n_bins=24\)\)")
    else:
        expected = (r"DDS1\.transform needs at least [\d,.]+ GB for its codes and dictionary "
                    r"\(1 item\(s\) x 30 frames x 2 components")
    monkeypatch.setattr(dds_module, "minimize", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(MemoryError, match=expected):
        model.transform(np.ones((30, N_BINS), dtype=np.float32))


def test_codes_per_source_are_fixed_at_fit(fitted_dds2, planted):
    # A later set_params changes the next fit, not the fitted model's search: the codes
    # searched stay the ones n_components_ and component_sources_ describe.
    model = copy.deepcopy(fitted_dds2).set_params(n_components_per_source=3)
    result = model.decompose(planted[0], max_iter=5)
    assert result.activations.shape == (30, fitted_dds2.n_components_)
    assert result.source_activations.shape == (30, N_SOURCES)
    np.testing.assert_allclose(model.source_activations(planted[0]),
                               fitted_dds2.source_activations(planted[0]), rtol=1e-5)


def test_given_flow_must_match_the_data(fitted_dds2):
    with pytest.raises(ValueError, match="4 sources of 24 bins"):
        DDS2(flow=fitted_dds2.flow_).fit(np.ones((10, N_BINS)), np.arange(10) % 3)


def test_warm_start_iterations_fit_the_activations_before_the_search(
        fitted_dds2, training_frames, planted):
    """The warm start is NMF updates against the starting dictionary: even without a
    search after it (one iteration), the reconstruction is far better than from the
    uniform start, and the search from there still recovers the planted notes."""
    mixture, roll = planted
    # The given flow is used as it is: nothing is trained.
    warm = clone(fitted_dds2).set_params(flow=fitted_dds2.flow_, warm_start_iterations=40)
    warm.fit(*training_frames)
    errors = {}
    for name, model in (("cold", fitted_dds2), ("warm", warm)):
        result = model.decompose(mixture, max_iter=1)
        errors[name] = np.linalg.norm(mixture - result.activations @ result.dictionary)
    assert errors["warm"] < 0.5 * errors["cold"]
    activity = warm.set_params(max_iter=100).source_activations(mixture)
    assert precision_of_source_attribution(activity, roll) > 0.9


def test_warm_start_iterations_is_checked():
    with pytest.raises(ValueError, match="'warm_start_iterations' parameter of DDS2"):
        DDS2(warm_start_iterations=-1).fit(np.ones((4, N_BINS)), [60, 60, 61, 61])


def test_flow_noise_trains_on_noisy_copies_of_the_frames(training_frames, monkeypatch):
    X, y = training_frames
    seen = []
    original = dds_module.fit_flow

    def recording_fit_flow(flow, frames, labels, **params):
        seen.append((frames, labels))
        return original(flow, frames, labels, **params)

    monkeypatch.setattr(dds_module, "fit_flow", recording_fit_flow)
    for _ in range(2):
        DDS2(n_flow_steps=1, hidden_features=8, max_epochs=1, flow_noise=0.3,
             random_state=0).fit(X, y)
    DDS2(n_flow_steps=1, hidden_features=8, max_epochs=1, random_state=0).fit(X, y)
    (frames, labels), (again, _), (plain, plain_labels) = seen
    n = X.shape[0]
    copies = dds_module.NOISE_COPIES
    assert frames.shape == ((copies + 1) * n, N_BINS) and labels.shape == ((copies + 1) * n,)
    np.testing.assert_array_equal(frames[:n], X)
    np.testing.assert_array_equal(labels, np.tile(labels[:n], copies + 1))
    noisy = frames[n:]
    assert noisy.min() >= 0  # floored: the features are non-negative
    # Gaussian with the given spread, where the floor at 0 is 4 standard deviations away
    clean = np.tile(X, (copies, 1))
    difference = (noisy - clean)[clean > 1.2]
    assert abs(difference.std() - 0.3) < 0.02
    np.testing.assert_array_equal(again, frames)  # seeded by random_state
    assert plain.shape == X.shape and plain_labels.shape == (n,)  # 0: the frames alone


def test_flow_noise_is_checked():
    with pytest.raises(ValueError, match="'flow_noise' parameter of DDS3 must be a float in "
                                         r"the range \[0.0, inf\). Got -0.1"):
        DDS3(flow_noise=-0.1).fit(np.ones((10, 80)), np.zeros(10))


def test_inverse_start_codes_decode_to_the_adapted_dictionary(
        fitted_dds2, planted, monkeypatch):
    """With the whole step to the inverse (shrink 1), the start's codes of the sounding
    notes decode exactly to the dictionary the NMF updates adapted, the silent notes keep
    the mode, and the default shrink (0.5) goes half the way."""
    mixture, roll = planted
    model = clone(fitted_dds2).set_params(flow=fitted_dds2.flow_, inverse_start_iterations=10)
    model.fit(np.ones((8, N_BINS), dtype=np.float32), np.repeat(np.arange(N_SOURCES) + 60, 2))
    batch = torch.as_tensor(mixture)[None]
    flow, labels = model.flow_, model._component_labels(batch.device)
    mode = flow.mode(labels).expand(1, labels.numel(), flow.n_latent).clone()
    with torch.no_grad():
        start = flow.sample(mode[0], labels).clamp_min(0)[None]
    sounding = np.repeat(roll.any(axis=0), 2)  # notes 0 and 2, two entries each
    # As after a warm start: the silent notes' activations are already small.
    activations = torch.where(torch.as_tensor(sounding), 0.5, 1e-4).expand(
        1, mixture.shape[0], labels.numel()).clone()

    monkeypatch.setattr(dds_module, "INVERSE_START_SHRINK", 1.0)
    codes, updated = model._start_codes(batch, start, activations, flow, labels, mode)
    adapted, _ = model._nmf_updates(batch, start, activations, 10, adapt_dictionary=True)
    assert sounding.sum() == 4
    with torch.no_grad():
        decoded = flow.sample(codes[0], labels)
    torch.testing.assert_close(decoded[sounding], adapted[0][sounding], atol=1e-4, rtol=1e-4)
    assert torch.equal(codes[0][~sounding], mode[0][~sounding])
    assert updated.shape == activations.shape and not torch.equal(updated, activations)

    monkeypatch.setattr(dds_module, "INVERSE_START_SHRINK", 0.5)
    half, _ = model._start_codes(batch, start, activations, flow, labels, mode)
    torch.testing.assert_close(half, 0.5 * codes)


def test_inverse_start_still_recovers_the_planted_notes(fitted_dds2, training_frames, planted):
    mixture, roll = planted
    model = clone(fitted_dds2).set_params(flow=fitted_dds2.flow_, warm_start_iterations=40,
                                          inverse_start_iterations=10, max_iter=50)
    activity = model.fit(*training_frames).source_activations(mixture)
    assert precision_of_source_attribution(activity, roll) > 0.9


def test_inverse_start_needs_an_invertible_flow_and_a_count(planted, monkeypatch):
    with pytest.raises(ValueError, match="'inverse_start_iterations' parameter of DDS2"):
        DDS2(inverse_start_iterations=-1).fit(np.ones((4, N_BINS)), [60, 60, 61, 61])
    flow = StackedRealNVP(N_SOURCES, N_BINS, n_blocks=1, hidden_features=4, random_state=0)
    model = DDS2(2, flow=flow, inverse_start_iterations=3).fit(
        np.ones((8, N_BINS), dtype=np.float32), np.repeat(np.arange(N_SOURCES), 2))

    def no_inverse(*args, **kwargs):
        raise decomp.flows.InverseNotAvailable("StackedRealNVP has no inverse map.")

    monkeypatch.setattr(model.flow_, "inverse", no_inverse)
    monkeypatch.setattr(dds_module, "_FLOW_COPIES", type(dds_module._FLOW_COPIES)())
    with pytest.raises(ValueError, match="needs a flow with an inverse"):
        model.decompose(planted[0], max_iter=1)


@pytest.fixture(scope="module")
def fitted_dds3_shared(training_frames):
    return DDS3(2, shared_codes=True, n_flow_steps=3, hidden_features=32, max_epochs=30,
                max_iter=100, warm_start_iterations=20, latent_learning_rate=0.02,
                random_state=0).fit(*training_frames)


def test_shared_codes_generate_entry_k_of_every_source_from_code_k(fitted_dds3_shared,
                                                                     planted):
    model = fitted_dds3_shared
    result = model.decompose(planted[0])
    n_latent = model.flow_.n_latent
    assert result.latent_codes.shape == (2, n_latent)  # one code per k, not per entry
    assert np.abs(result.latent_codes).max() > 0  # the search moved them
    assert result.dictionary.shape == (2 * N_SOURCES, N_BINS)
    for entry, source in enumerate(model.component_sources_):
        np.testing.assert_allclose(
            result.dictionary[entry],
            model.sample_dictionary(result.latent_codes[entry % 2][None], [source])[0],
            rtol=1e-5, atol=1e-6)
    unshared = _fitted_with(model, shared_codes=False)
    assert unshared.decompose(planted[0], max_iter=5).latent_codes.shape == (
        2 * N_SOURCES, n_latent)


def test_shared_codes_search_attributes_as_codes_per_entry_do(fitted_dds3_shared, planted):
    mixture, roll = planted
    result = fitted_dds3_shared.decompose(mixture)
    assert result.history[-1, 0] < result.history[0, 0]
    per_entry = _fitted_with(fitted_dds3_shared, shared_codes=False)
    shared_psa = precision_of_source_attribution(result.source_activations, roll)
    own_psa = precision_of_source_attribution(per_entry.source_activations(mixture), roll)
    assert shared_psa > own_psa - 0.05


def test_shared_codes_survive_save_and_load(fitted_dds3_shared, planted, tmp_path):
    loaded = decomp.load(fitted_dds3_shared.save(tmp_path / "dds3.decomp"))
    assert loaded.get_params()["shared_codes"] is True
    np.testing.assert_allclose(loaded.source_activations(planted[0]),
                               fitted_dds3_shared.source_activations(planted[0]),
                               rtol=1e-5, atol=1e-6)


def test_shared_codes_are_checked_and_refuse_the_inverse_start(fitted_dds3_shared, planted):
    with pytest.raises(ValueError, match="'shared_codes' parameter of DDS3"):
        DDS3(shared_codes="yes").fit(np.ones((10, 30)), np.zeros(10))
    model = _fitted_with(fitted_dds3_shared, inverse_start_iterations=3)
    with pytest.raises(ValueError, match="shared_codes=True"):
        model.decompose(planted[0], max_iter=1)


# --- flow_precision: the flow pass under bfloat16 autocast ------------------------------
@pytest.mark.parametrize("variant", ["dds2", "dds3"])
def test_bfloat16_flow_precision_searches_the_same_decomposition(
        variant, fitted_dds2, fitted_dds3_shared, planted):
    model = fitted_dds2 if variant == "dds2" else fitted_dds3_shared
    mixture, roll = planted
    exact = model.decompose(mixture)
    rounded = _fitted_with(model, flow_precision="bfloat16").decompose(mixture)
    # The flow ran in bfloat16 (8 mantissa bits): its dictionary differs, by about its
    # rounding, and everything handed back is in the input's dtype.
    difference = np.abs(rounded.dictionary - exact.dictionary).max()
    assert 0 < difference < 0.05 * np.abs(exact.dictionary).max()
    assert rounded.dictionary.dtype == rounded.activations.dtype == np.float32
    psa = precision_of_source_attribution
    assert psa(rounded.source_activations, roll) > psa(exact.source_activations, roll) - 0.05
    assert rounded.history[-1, 0] < rounded.history[0, 0]


def test_float32_flow_precision_runs_without_autocast(fitted_dds3_shared, planted,
                                                      monkeypatch):
    entered = []
    original = torch.autocast.__enter__

    def spy(self):
        entered.append(self.fast_dtype)
        return original(self)

    monkeypatch.setattr(torch.autocast, "__enter__", spy)
    fitted_dds3_shared.decompose(planted[0], max_iter=3)
    assert entered == []
    _fitted_with(fitted_dds3_shared, flow_precision="bfloat16").decompose(planted[0],
                                                                          max_iter=3)
    assert entered and set(entered) == {torch.bfloat16}


@pytest.mark.parametrize("native", [True, False])
def test_auto_flow_precision_uses_bfloat16_only_where_it_is_native(
        fitted_dds3_shared, planted, monkeypatch, native):
    monkeypatch.setattr(decomp._backend, "native_bfloat16", lambda device: native)
    model = _fitted_with(fitted_dds3_shared, flow_precision="auto")
    expected = "bfloat16" if native else "float32"
    np.testing.assert_array_equal(
        model.decompose(planted[0], max_iter=5).dictionary,
        _fitted_with(fitted_dds3_shared, flow_precision=expected).decompose(
            planted[0], max_iter=5).dictionary)


def test_flow_precision_leaves_a_float64_search_in_float64(fitted_dds3_shared, planted):
    exact = _fitted_with(fitted_dds3_shared, dtype="float64")
    rounded = _fitted_with(fitted_dds3_shared, dtype="float64", flow_precision="bfloat16")
    mixture = planted[0].astype(np.float64)
    np.testing.assert_array_equal(rounded.decompose(mixture, max_iter=5).dictionary,
                                  exact.decompose(mixture, max_iter=5).dictionary)


def test_flow_precision_is_checked_and_saved(fitted_dds3_shared, tmp_path):
    with pytest.raises(ValueError, match="'flow_precision' parameter of DDS2"):
        DDS2(flow_precision="float16").fit(np.ones((10, 30)), np.zeros(10))
    model = _fitted_with(fitted_dds3_shared, flow_precision="auto")
    assert decomp.load(model.save(tmp_path / "m.decomp")).flow_precision == "auto"
