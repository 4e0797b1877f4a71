"""Tests for decomp.transcription.defaults: the cached default NMF transcriber."""

from __future__ import annotations

import numpy as np
import pytest

from decomp import NMF, load
from decomp.transcription import default_transcriber, defaults


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
