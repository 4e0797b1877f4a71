"""Tests for decomp.data.mixtures (tiny renders: TimGM6mb, 1 s, at most 2 mixtures)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from decomp.data import (
    DEFAULT_INSTRUMENTS,
    INSTRUMENTS,
    PEAK_CEILING,
    GMInstrument,
    MixtureSet,
    instrument_mixtures,
    speech_mixtures,
)
from decomp.data import mixtures as mixtures_module
from decomp.exceptions import MissingDependencyError

from .conftest import render_in, requires_fluidsynth, requires_font

requires_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="needs `apt-get install espeak-ng`"
)


def rendering(test):
    """Mark a test that renders with FluidSynth and TimGM6mb."""
    for mark in (pytest.mark.slow, requires_fluidsynth, requires_font("timgm6mb")):
        test = mark(test)
    return test


SMALL = {"n_sources": (1, 3), "duration": 1.0, "random_state": 0}


@pytest.fixture(scope="session")
def small_mixtures(session_cache_dir):
    return render_in(session_cache_dir, instrument_mixtures, "timgm6mb", 2, **SMALL)


@pytest.fixture(scope="session")
def small_speech(session_cache_dir):
    return render_in(session_cache_dir, speech_mixtures, 2, duration=1.0, random_state=0)


@pytest.fixture
def fake_font(tmp_path):
    """A file that resolve_soundfont accepts; nothing is rendered with it."""
    path = tmp_path / "fake.sf2"
    path.write_bytes(b"not a soundfont")
    return path


@pytest.fixture
def synthetic_stems(monkeypatch: pytest.MonkeyPatch):
    """Replace FluidSynth by seeded noise, so plan and mixing logic test in milliseconds."""

    def fake_render(program, notes, font_path, sample_rate):
        rng = np.random.default_rng([program, len(notes)])
        return rng.standard_normal(int(0.9 * sample_rate)).astype(np.float32)

    monkeypatch.setattr(mixtures_module, "_render_stem", fake_render)


def _check_set(data: MixtureSet, n_mixtures: int, max_sources: int, n_samples: int) -> None:
    assert data.mixtures.shape == (n_mixtures, n_samples)
    assert data.sources.shape == (n_mixtures, max_sources, n_samples)
    assert data.mixtures.dtype == np.float32 and data.sources.dtype == np.float32
    assert data.instruments.shape == (n_mixtures, max_sources)
    assert data.n_sources.shape == data.peak_scale.shape == (n_mixtures,)
    np.testing.assert_allclose(data.mixtures, data.sources.sum(axis=1), rtol=0, atol=1e-6)
    assert np.abs(data.mixtures).max() <= PEAK_CEILING + 1e-6
    assert np.abs(data.sources).max() <= PEAK_CEILING + 1e-6
    assert np.all((data.peak_scale > 0) & (data.peak_scale <= 1))
    for i, count in enumerate(data.n_sources):
        assert np.all(data.sources[i, count:] == 0)
        assert all(label == "" for label in data.instruments[i, count:])
        labels = list(data.instruments[i, :count])
        assert "" not in labels and len(set(labels)) == count  # distinct sources
        assert np.all(np.sqrt(np.mean(data.sources[i, :count] ** 2, axis=1)) > 1e-3)


# ----------------------------------------------------------------------------- instruments


@rendering
def test_instrument_mixtures_shapes_sum_and_bounds(small_mixtures):
    _check_set(small_mixtures, 2, 3, 16000)
    assert small_mixtures.sample_rate == 16000
    assert small_mixtures.duration == pytest.approx(1.0)
    assert np.all((small_mixtures.n_sources >= 1) & (small_mixtures.n_sources <= 3))
    assert set(small_mixtures.instruments.ravel()) - {""} <= set(INSTRUMENTS)
    assert small_mixtures.params["soundfont"] == "timgm6mb"


@rendering
def test_instrument_mixtures_read_from_cache(small_mixtures, monkeypatch):
    def no_render(*args, **kwargs):
        raise AssertionError("rendered although the set is cached")

    monkeypatch.setattr(mixtures_module, "_render_stem", no_render)
    again = instrument_mixtures("timgm6mb", 2, **SMALL)
    np.testing.assert_array_equal(again.mixtures, small_mixtures.mixtures)
    np.testing.assert_array_equal(again.sources, small_mixtures.sources)
    np.testing.assert_array_equal(again.instruments, small_mixtures.instruments)


@rendering
def test_instrument_mixtures_deterministic_without_cache():
    kwargs = {"n_sources": 1, "duration": 0.5, "instruments": ["flute"]}
    first = instrument_mixtures("timgm6mb", 1, random_state=3, cache=False, **kwargs)
    second = instrument_mixtures("timgm6mb", 1, random_state=3, cache=False, **kwargs)
    other = instrument_mixtures("timgm6mb", 1, random_state=4, cache=False, **kwargs)
    np.testing.assert_array_equal(first.sources, second.sources)
    assert first.params["plan"] != other.params["plan"]
    assert not np.allclose(first.mixtures, other.mixtures)


def test_plan_deterministic_and_seeds_differ(fake_font, synthetic_stems):
    def make(seed):
        return instrument_mixtures(fake_font, 3, n_sources=(2, 4), random_state=seed, cache=False)

    assert make(0).params["plan"] == make(0).params["plan"]
    np.testing.assert_array_equal(make(0).mixtures, make(0).mixtures)
    assert make(0).params["plan"] != make(1).params["plan"]


def test_n_sources_range_and_instruments_respected(fake_font, synthetic_stems):
    data = instrument_mixtures(
        fake_font, 40, n_sources=(2, 4), duration=0.5, random_state=0, cache=False
    )
    _check_set(data, 40, 4, 8000)
    assert set(data.n_sources.tolist()) == {2, 3, 4}
    fixed = instrument_mixtures(
        fake_font, 5, n_sources=2, instruments=["violin", "cello"], duration=0.5,
        random_state=0, cache=False,
    )  # fmt: skip
    assert fixed.n_sources.tolist() == [2] * 5
    assert all(sorted(row) == ["cello", "violin"] for row in fixed.instruments.tolist())


def test_melodies_stay_in_range(fake_font, synthetic_stems):
    data = instrument_mixtures(fake_font, 10, n_sources=3, duration=2.0, random_state=0,
                               cache=False)  # fmt: skip
    for row in data.params["plan"]:
        for source in row:
            instrument = INSTRUMENTS[source["instrument"]]
            assert source["notes"], "every source plays at least one note"
            assert source["notes"][0][2] < 0.1
            for pitch, velocity, start, end in source["notes"]:
                assert instrument.lowest <= pitch <= instrument.highest
                assert 60 <= velocity <= 110
                assert 0 <= start < end <= 2.0


def test_loud_sum_is_scaled_not_clipped(fake_font, monkeypatch):
    # Stems at -3 dBFS RMS sum far above 1: mixture and stems must be scaled together.
    monkeypatch.setattr(
        mixtures_module, "_render_stem",
        lambda program, notes, font, rate: np.sin(np.arange(rate) * 0.05 + program),
    )  # fmt: skip
    data = instrument_mixtures(fake_font, 2, n_sources=5, level_range=(-3.0, -3.0),
                               random_state=0, cache=False, duration=0.5)  # fmt: skip
    _check_set(data, 2, 5, 8000)
    assert np.all(data.peak_scale < 1)
    assert np.abs(data.mixtures).max() == pytest.approx(PEAK_CEILING, abs=1e-6)
    # The level relation between stems survives the scaling.
    rms = np.sqrt(np.mean(data.sources.astype(np.float64) ** 2, axis=2))
    np.testing.assert_allclose(rms / rms[:, :1], 1.0, rtol=1e-5)


def test_custom_gm_instrument(fake_font, synthetic_stems):
    horn = GMInstrument("french-horn", 60, 41, 77)
    data = instrument_mixtures(fake_font, 1, n_sources=2, instruments=[horn, "oboe"],
                               duration=0.25, random_state=0, cache=False)  # fmt: skip
    assert sorted(data.instruments[0]) == ["french-horn", "oboe"]


def test_default_instruments():
    names = {instrument.name for instrument in DEFAULT_INSTRUMENTS}
    assert {"violin", "cello", "flute", "clarinet", "trumpet", "oboe", "bassoon"} <= names
    assert INSTRUMENTS["violin"].program == 40 and INSTRUMENTS["acoustic-grand-piano"].program == 0
    assert len(DEFAULT_INSTRUMENTS) >= mixtures_module.MAX_SOURCES


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_sources": 0}, ValueError, "n_sources"),
        ({"n_sources": 8}, ValueError, "n_sources"),
        ({"n_sources": (3, 2)}, ValueError, "n_sources"),
        ({"n_sources": (1, 2, 3)}, TypeError, "n_sources"),
        ({"n_sources": True}, TypeError, "n_sources"),
        ({"n_sources": 3, "instruments": ["violin", "cello"]}, ValueError, "distinct instr"),
        ({"instruments": ["violin", "kazoo"]}, ValueError, "kazoo"),
        ({"instruments": ["violin", "violin"]}, ValueError, "distinct names"),
        ({"instruments": []}, ValueError, "at least one"),
        ({"instruments": "violin"}, TypeError, "instruments"),
        ({"duration": 0.0}, ValueError, "duration"),
        ({"duration": -1.0}, ValueError, "duration"),
        ({"sample_rate": 100}, ValueError,
         r"'sample_rate' parameter of instrument_mixtures must be an int in the range "
         r"\[8000, 96000\]. Got 100"),
        ({"duration": 61.0}, ValueError, r"'duration' parameter .* \(0.0, 60.0\]"),
        ({"level_range": (-10.0, -20.0)}, ValueError, "level_range"),
        ({"n_mixtures": 0}, ValueError, "n_mixtures"),
        ({"random_state": "seed"}, TypeError, "random_state"),
    ],
)
def test_instrument_mixtures_bad_arguments(fake_font, kwargs, error, match):
    arguments = {"n_mixtures": 1, **kwargs}
    with pytest.raises(error, match=match):
        instrument_mixtures(fake_font, **arguments)


def test_unknown_font():
    with pytest.raises(ValueError, match="soundfont"):
        instrument_mixtures("no-such-font", 1)


# ----------------------------------------------------------------------------- speech


@requires_espeak
def test_speech_mixtures_shapes_and_sum(small_speech):
    _check_set(small_speech, 2, 2, 16000)
    assert small_speech.n_sources.tolist() == [2, 2]
    assert all(voice in mixtures_module.SPEECH_VOICES for voice in small_speech.instruments.ravel())
    for row in small_speech.params["plan"]:
        # The relative level is within the default -5..5 dB range.
        assert abs(row[0]["level_db"] - row[1]["level_db"]) <= 5.0 + 1e-9


@requires_espeak
def test_speech_mixtures_cached_deterministic_and_seeded(small_speech, monkeypatch):
    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesised although the set is cached")

    fresh = speech_mixtures(1, duration=0.5, random_state=5, cache=False)
    np.testing.assert_array_equal(
        fresh.sources, speech_mixtures(1, duration=0.5, random_state=5, cache=False).sources
    )
    other = speech_mixtures(1, duration=0.5, random_state=6, cache=False)
    assert not np.allclose(fresh.mixtures, other.mixtures)
    monkeypatch.setattr(mixtures_module, "_synthesise", no_synthesis)
    again = speech_mixtures(2, duration=1.0, random_state=0)
    np.testing.assert_array_equal(again.mixtures, small_speech.mixtures)


@requires_espeak
def test_speech_resampled_rate():
    data = speech_mixtures(1, duration=0.5, sample_rate=8000, random_state=0, cache=False)
    _check_set(data, 1, 2, 4000)


def test_speech_missing_espeak(monkeypatch):
    monkeypatch.setattr(mixtures_module.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependencyError, match="apt-get install espeak-ng"):
        speech_mixtures(1, duration=0.5, random_state=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_mixtures": 0}, ValueError, "n_mixtures"),
        ({"duration": 0.0}, ValueError, "duration"),
        ({"sample_rate": 16000.0}, TypeError, "sample_rate"),
        ({"relative_level_range": (5.0, -5.0)}, ValueError, "relative_level_range"),
    ],
)
def test_speech_mixtures_bad_arguments(kwargs, error, match):
    arguments = {"n_mixtures": 1, **kwargs}
    with pytest.raises(error, match=match):
        speech_mixtures(**arguments)
