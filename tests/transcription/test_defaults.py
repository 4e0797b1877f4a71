"""Tests for decomp.transcription.defaults: the cached default NMF transcriber."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from decomp import NMF, load
from decomp.audio import Spectrogram, timbre_copies
from decomp.transcription import default_transcriber, defaults, fit_transcriber
from decomp.transcription.defaults import (
    VALIDATION_POLYPHONIES,
    protocol_features,
    training_frames_per_font,
    validation_features,
    validation_recordings,
    validation_set,
)


@pytest.fixture
def cheap_fit(monkeypatch, tmp_path):
    """Replace the (30 s) fit with a tiny NMF; count the calls; cache in ``tmp_path``."""
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def fit(settings, protocol):
        calls.append(protocol)
        return NMF(n_components=2, max_iter=3, random_state=0).fit(
            np.random.default_rng(0).random((12, 6)))

    monkeypatch.setattr(defaults, "fit_transcriber", fit)
    return calls


def test_the_fitted_default_is_cached(cheap_fit, tiny_protocol, tmp_path):
    default_transcriber("nmf", protocol=tiny_protocol)
    (path,) = (tmp_path / "cache" / "models").glob("nmf-*.decomp")
    assert default_transcriber("nmf", protocol=tiny_protocol).components_.shape == (2, 6)
    assert len(cheap_fit) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_corrupt_cached_model_is_refitted_and_replaced(cheap_fit, tiny_protocol, tmp_path):
    default_transcriber("nmf", protocol=tiny_protocol)
    (path,) = (tmp_path / "cache" / "models").glob("nmf-*.decomp")
    path.write_bytes(path.read_bytes()[:200])  # a truncated file, as after a crash
    with pytest.warns(RuntimeWarning, match=rf"{path}.*cannot be loaded.*fitting it again"):
        transcriber = default_transcriber("nmf", protocol=tiny_protocol)
    assert transcriber.components_.shape == (2, 6)
    assert len(cheap_fit) == 2
    assert load(path).components_.shape == (2, 6)  # the file was replaced by a good one
    default_transcriber("nmf", protocol=tiny_protocol)
    assert len(cheap_fit) == 2


def test_a_cache_dir_that_is_a_file_fails_before_fitting(cheap_fit, tiny_protocol, tmp_path,
                                                         monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("x")
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(blocker))
    with pytest.raises(OSError, match=rf"decomp cache folder {blocker} cannot be used .*"
                                      "set DECOMP_CACHE_DIR to a writable folder"):
        default_transcriber("nmf", protocol=tiny_protocol)
    assert cheap_fit == []
    # Without the cache, the folder is not needed.
    default_transcriber("nmf", protocol=tiny_protocol, use_cache=False)
    assert len(cheap_fit) == 1


def test_the_default_settings_use_note_hysteresis(monkeypatch, tiny_protocol):
    from decomp.transcription import PianoTranscriber, default_settings

    settings = default_settings()
    assert settings.sustain_ratio == 0.7 and settings.threshold == "auto"
    assert PianoTranscriber().sustain_ratio == 1.0  # files saved without it load unchanged
    fitted = []
    monkeypatch.setattr(defaults, "fit_transcriber",
                        lambda settings, protocol: fitted.append(settings) or settings)
    default_transcriber("nmf", protocol=tiny_protocol, use_cache=False)
    assert fitted[0].get_params(deep=False).keys() == settings.get_params(deep=False).keys()
    assert fitted[0].sustain_ratio == 0.7


# --- the shipped default NMF transcriber ------------------------------------------------------

SHIPPED_THRESHOLD = 0.19398517439496415
"""``threshold_`` of ``fit_transcriber(default_settings(), DEFAULT_PROTOCOL)`` when the file
was written (benchmarks/train_default_models.py --methods nmf), with the validation
recordings normalised together; each normalised alone, as fit_transcriber does since, it
is 0.223 (docs/benchmarks.md says why the file was kept)."""


@pytest.fixture
def no_fluidsynth(monkeypatch, tmp_path):
    """Rendering and fitting fail, as on a machine without FluidSynth; an empty cache."""
    import decomp.data.render
    from decomp.exceptions import MissingDependencyError

    def missing(*args, **kwargs):
        raise MissingDependencyError("The 'fluidsynth' program was not found on PATH.")

    monkeypatch.setattr(decomp.data.render, "_fluidsynth_binary", missing)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(defaults, "fit_transcriber", missing)


def test_the_default_nmf_ships_and_needs_no_fluidsynth(no_fluidsynth, tiny_chords, tmp_path):
    from decomp.transcription import PianoTranscriber

    transcriber = default_transcriber("nmf")
    assert isinstance(transcriber, PianoTranscriber)
    assert transcriber.pitches_.tolist() == list(range(36, 96))
    # Stored in float16 to halve the file, decomposed in float32.
    assert transcriber.decomposer_.components_.dtype == np.float32
    assert transcriber.decomposer_.components_.shape == (720, 1025)
    result = transcriber.transcribe(tiny_chords.audio)
    assert result.roll.shape == (len(result.times), 60)
    assert not (tmp_path / "empty-cache").exists()  # nothing fitted, nothing cached


def test_the_shipped_nmf_is_the_default_fit():
    from decomp.transcription import default_settings, pretrained_path

    path = pretrained_path("nmf")
    assert path.exists(), f"{path.name} must ship inside the package"
    assert path.stat().st_size < 2e6  # float16: half the 3.0 MB of float32
    shipped = load(path)
    # fit_transcriber(default_settings(), DEFAULT_PROTOCOL) sets the threshold it chose.
    expected = default_settings().set_params(threshold=SHIPPED_THRESHOLD)
    assert ({key: repr(value) for key, value in shipped.get_params(deep=True).items()}
            == {key: repr(value) for key, value in expected.get_params(deep=True).items()})
    assert shipped.threshold_ == pytest.approx(SHIPPED_THRESHOLD, rel=1e-12)
    assert shipped.sustain_ratio == 0.7
    assert 0.7 < shipped.validation_f1_ < 0.9
    assert shipped.decomposer_.sources_.tolist() == list(range(36, 96))
    assert np.all(np.unique(shipped.decomposer_.component_sources_, return_counts=True)[1] == 12)


def test_another_protocol_is_still_fitted_and_cached(cheap_fit, tiny_protocol, tmp_path):
    default_transcriber("nmf")  # the default protocol: the shipped file, no fit
    assert cheap_fit == [] and not (tmp_path / "cache" / "models").exists()
    default_transcriber("nmf", protocol=tiny_protocol)
    assert cheap_fit == [tiny_protocol]
    assert len(list((tmp_path / "cache" / "models").glob("nmf-*.decomp"))) == 1


def test_a_missing_shipped_file_falls_back_to_fitting(cheap_fit, tmp_path, monkeypatch,
                                                      caplog):
    import importlib

    from decomp.data import DEFAULT_PROTOCOL

    monkeypatch.setattr(importlib.import_module("decomp.pretrained"), "_models_dir",
                        lambda: tmp_path / "no-models")
    with caplog.at_level("WARNING", logger="decomp.transcription.defaults"):
        default_transcriber("nmf")
    assert cheap_fit == [DEFAULT_PROTOCOL]
    assert "piano-nmf.decomp is missing" in caplog.text
    assert len(list((tmp_path / "cache" / "models").glob("nmf-*.decomp"))) == 1


def test_the_bayesian_transcriber_thresholds_probabilities_without_fluidsynth(
        no_fluidsynth, tiny_chords):
    from decomp import BayesianNMF
    from decomp.metrics import frame_scores
    from decomp.transcription import BAYESIAN_SETTINGS

    transcriber = default_transcriber("bayes-nmf")
    shipped = default_transcriber("nmf")
    assert isinstance(transcriber.decomposer_, BayesianNMF)
    assert transcriber.threshold_ == 0.5 and transcriber.normalization == "none"
    assert {key: getattr(transcriber.decomposer_, key) for key in BAYESIAN_SETTINGS} \
        == BAYESIAN_SETTINGS
    # The shipped NMF dictionary, fixed.
    np.testing.assert_array_equal(transcriber.decomposer_.components_,
                                  shipped.decomposer_.components_)
    result = transcriber.transcribe(tiny_chords.audio)
    assert result.activations.min() >= 0 and result.activations.max() <= 1
    reference = tiny_chords.roll(result.times, result.pitches)
    assert frame_scores(result.roll, reference)["f1"] > 0.5


def test_training_frames_take_timbre_copies_after_each_fonts_frames(tiny_protocol):
    front_end = Spectrogram(compression=100.0, n_bins=64)
    plain = training_frames_per_font(tiny_protocol, front_end)
    augmented = training_frames_per_font(tiny_protocol, front_end, n_timbre_copies=2)
    assert len(augmented) == len(plain) == len(tiny_protocol.train_soundfonts)
    for index, ((X, y), (X_more, y_more)) in enumerate(zip(plain, augmented, strict=True)):
        n = X.shape[0]
        np.testing.assert_array_equal(X_more[:n], X)
        np.testing.assert_array_equal(y_more, np.tile(y, 3))
        expected, _ = timbre_copies(X, y, front_end, n_copies=2, random_state=index)
        np.testing.assert_array_equal(X_more, expected)


def test_training_frames_pass_the_timbre_options_on(tiny_protocol):
    front_end = Spectrogram(compression=100.0, n_bins=64)
    options = {"tilt_range": (0.0, 0.0), "band_range": (0.0, 0.0),
               "partial_range": (-6.0, 6.0)}
    plain = training_frames_per_font(tiny_protocol, front_end)
    augmented = training_frames_per_font(tiny_protocol, front_end, n_timbre_copies=1,
                                         timbre_options=options)
    for index, ((X, y), (X_more, _)) in enumerate(zip(plain, augmented, strict=True)):
        expected, _ = timbre_copies(X, y, front_end, n_copies=1, random_state=index, **options)
        np.testing.assert_array_equal(X_more, expected)
        assert not np.array_equal(X_more, timbre_copies(X, y, front_end, n_copies=1,
                                                        random_state=index)[0])


def test_fit_transcriber_validates_on_each_recording_alone(monkeypatch, tiny_protocol):
    from decomp.transcription import PianoTranscriber, fit_transcriber

    seen, fitted = [], []
    original_fit = PianoTranscriber.fit

    def spy(self, X, y, *, validation=None):
        seen.append(validation)
        fitted.append(original_fit(self, X, y, validation=validation))
        return fitted[-1]

    monkeypatch.setattr(PianoTranscriber, "fit", spy)
    settings = PianoTranscriber(decomposer=NMF(dictionary="frames", n_components_per_source=4,
                                               max_iter=30, random_state=0))
    final = fit_transcriber(settings, tiny_protocol, n_validation_chords=3,
                            validation_polyphonies=(1, 2), n_validation_piece_bars=0)
    fonts = tiny_protocol.train_soundfonts
    *partials, last = seen
    assert len(partials) == len(fonts) and last is None
    for validation in partials:
        # One (features, roll) pair per recording of the other fonts: 2 polyphonies each.
        assert isinstance(validation, list)
        assert len(validation) == 2 * max(len(fonts) - 1, 1)
        assert all(features.shape[0] == roll.shape[0] for features, roll in validation)
    assert final.threshold_ == pytest.approx(np.mean([t.threshold_ for t in fitted[:-1]]))
    assert final.validation_f1_ == pytest.approx(np.mean([t.validation_f1_
                                                          for t in fitted[:-1]]))


def test_validation_features_are_the_recordings_one_pair_each(tiny_protocol):
    assert inspect.signature(fit_transcriber).parameters[
        "validation_polyphonies"].default == VALIDATION_POLYPHONIES == (1, 2, 3, 4, 5)
    front_end = Spectrogram()
    font = tiny_protocol.train_soundfonts[0]
    options = {"n_chords": 2, "polyphonies": (1, 3), "n_piece_bars": 0, "random_state": 5}
    pairs = validation_features(font, tiny_protocol, front_end, **options)
    recordings = validation_recordings(font, tiny_protocol, **options)
    assert len(pairs) == len(recordings) == 2
    for (features, roll), recording in zip(pairs, recordings, strict=True):
        expected_features, expected_roll = protocol_features(recording, front_end,
                                                             tiny_protocol.pitches)
        np.testing.assert_array_equal(features, expected_features)
        np.testing.assert_array_equal(roll, expected_roll)
        assert roll.shape[1] == len(tiny_protocol.pitches) and roll.any()
    # validation_set is the same frames pooled into one recording.
    features, roll = validation_set(font, tiny_protocol, front_end, **options)
    np.testing.assert_array_equal(features, np.concatenate([f for f, _ in pairs]))
    np.testing.assert_array_equal(roll, np.concatenate([r for _, r in pairs]))
