from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp.audio import Spectrogram, equaliser_gains, partial_gains, timbre_copies
from decomp.audio.timbre import FLAT_BELOW_HZ, TILT_PIVOT_HZ
from decomp.metrics import midi_to_hz


def _features(front_end: Spectrogram, seed: int = 0) -> np.ndarray:
    audio = 0.1 * np.random.default_rng(seed).standard_normal(front_end.sample_rate // 2)
    return np.asarray(front_end.transform(audio.astype(np.float32)))


@settings(max_examples=25, deadline=None)
@given(low=st.floats(-24, 24), width=st.floats(0, 24), seed=st.integers(0, 2**16))
def test_gains_stay_within_the_tilt_and_band_ranges(low, width, seed):
    high = min(24.0, low + width)
    frequencies = np.geomspace(FLAT_BELOW_HZ, 8000.0, 50)
    gains = equaliser_gains(frequencies, 4, tilt_range=(0.0, 0.0), band_range=(low, high),
                            random_state=seed)
    gains_db = 20 * np.log10(gains)
    # Bands alone: every bin mixes two control gains drawn from the range.
    assert np.all(gains_db >= low - 1e-9) and np.all(gains_db <= high + 1e-9)


def test_a_pure_tilt_is_linear_in_octaves_around_the_pivot_and_flat_below_the_floor():
    frequencies = np.array([0.0, 30.0, FLAT_BELOW_HZ, TILT_PIVOT_HZ / 2, TILT_PIVOT_HZ,
                            2 * TILT_PIVOT_HZ])
    gains_db = 20 * np.log10(equaliser_gains(frequencies, 1, tilt_range=(3.0, 3.0),
                                             band_range=(0.0, 0.0)))[0]
    np.testing.assert_allclose(gains_db[3:], [-3.0, 0.0, 3.0], atol=1e-9)
    np.testing.assert_allclose(gains_db[:3], gains_db[2])  # flat below 62.5 Hz
    assert gains_db[2] == pytest.approx(-3.0 * 4)  # 62.5 Hz is 4 octaves below 1 kHz


def test_curves_are_smooth_and_reproducible():
    frequencies = Spectrogram().bin_frequencies
    first = equaliser_gains(frequencies, 8, random_state=3)
    np.testing.assert_array_equal(first, equaliser_gains(frequencies, 8, random_state=3))
    assert not np.array_equal(first, equaliser_gains(frequencies, 8, random_state=4))
    # Adjacent STFT bins above 125 Hz differ by a small fraction of a dB.
    above = frequencies > 125
    steps = np.abs(np.diff(20 * np.log10(first[:, above]), axis=1))
    assert steps.max() < 0.5


@pytest.mark.parametrize("kind", ["log", "linear", "log-cqt"])
def test_copies_are_the_frames_re_equalised_in_the_magnitude_domain(kind):
    front_end = Spectrogram(kind=kind)
    features = _features(front_end)
    labels = np.arange(features.shape[0])
    augmented, augmented_labels = timbre_copies(features, labels, front_end, n_copies=2,
                                                random_state=0)
    n = features.shape[0]
    assert augmented.shape == (3 * n, features.shape[1]) and augmented.dtype == np.float32
    np.testing.assert_array_equal(augmented[:n], features)
    np.testing.assert_array_equal(augmented_labels, np.tile(labels, 3))
    gains = equaliser_gains(front_end.bin_frequencies, 2 * n, random_state=0)
    expected = front_end.from_magnitude(
        np.tile(front_end.to_magnitude(features), (2, 1)) * gains.astype(np.float32))
    np.testing.assert_allclose(augmented[n:], expected, rtol=1e-4, atol=1e-5)
    assert np.all(augmented >= 0)


def test_no_copies_returns_the_inputs_and_bad_input_is_refused():
    front_end = Spectrogram()
    features = _features(front_end)
    labels = np.zeros(features.shape[0])
    same, same_labels = timbre_copies(features, labels, front_end, n_copies=0)
    np.testing.assert_array_equal(same, features)
    with pytest.raises(ValueError, match="one per frame"):
        timbre_copies(features, labels[:-1], front_end)
    with pytest.raises(TypeError, match="Spectrogram"):
        timbre_copies(features, labels, "log")
    with pytest.raises(ValueError, match="n_copies"):
        timbre_copies(features, labels, front_end, n_copies=-1)
    with pytest.raises(ValueError, match="tilt_range must satisfy"):
        timbre_copies(features, labels, front_end, tilt_range=(3.0, -3.0))
    with pytest.raises(TypeError, match="band_range must be a pair"):
        timbre_copies(features, labels, front_end, band_range=3.0)
    with pytest.raises(ValueError, match="dB-normalised"):
        db_front_end = Spectrogram(kind="linear", db_normalization=True)
        timbre_copies(np.zeros((2, db_front_end.n_bins)), np.zeros(2), db_front_end)


@settings(max_examples=25, deadline=None)
@given(low=st.floats(-24, 24), width=st.floats(0, 24), f0=st.floats(30.0, 2000.0),
       seed=st.integers(0, 2**16))
def test_partial_gains_are_drawn_per_harmonic_and_linear_between(low, width, f0, seed):
    high = min(24.0, low + width)
    harmonics = np.arange(1, 9, dtype=np.float64)
    # Bins on the harmonics, halfway between them, and below the fundamental.
    frequencies = np.concatenate([harmonics * f0, (harmonics[:-1] + 0.5) * f0, [0.0, f0 / 2]])
    gains_db = 20 * np.log10(partial_gains(frequencies, np.array([f0, f0]),
                                           gain_range=(low, high), random_state=seed))
    on, halfway, below = gains_db[:, :8], gains_db[:, 8:15], gains_db[:, 15:]
    assert np.all(on >= low - 1e-9) and np.all(on <= high + 1e-9)
    np.testing.assert_allclose(halfway, (on[:, :-1] + on[:, 1:]) / 2, atol=1e-9)
    np.testing.assert_allclose(below, on[:, :1].repeat(2, axis=1), atol=1e-9)
    if high - low > 1:  # every curve draws its own gains
        assert not np.allclose(on[0], on[1])


def test_partial_gains_are_reproducible_and_refuse_bad_input():
    frequencies = Spectrogram().bin_frequencies
    fundamentals = midi_to_hz(np.array([21, 60, 108]))
    first = partial_gains(frequencies, fundamentals, random_state=1)
    assert first.shape == (3, frequencies.size) and np.all(first > 0)
    np.testing.assert_array_equal(first, partial_gains(frequencies, fundamentals,
                                                       random_state=1))
    with pytest.raises(ValueError, match="fundamentals must be"):
        partial_gains(frequencies, np.array([0.0]))
    with pytest.raises(ValueError, match="frequencies must be"):
        partial_gains(np.zeros((2, 2)), fundamentals)
    with pytest.raises(ValueError, match="gain_range must satisfy"):
        partial_gains(frequencies, fundamentals, gain_range=(-30.0, 0.0))


@pytest.mark.parametrize("kind", ["log", "log-cqt"])
def test_copies_with_partial_gains_rebalance_each_frames_note(kind):
    front_end = Spectrogram(kind=kind)
    features = _features(front_end)
    pitches = np.resize([48, 60, 72], features.shape[0])
    n = features.shape[0]
    augmented, labels = timbre_copies(features, pitches, front_end, tilt_range=(0.0, 0.0),
                                      band_range=(0.0, 0.0), partial_range=(-8.0, 8.0),
                                      random_state=5)
    np.testing.assert_array_equal(augmented[:n], features)
    np.testing.assert_array_equal(labels, np.tile(pitches, 2))
    # The smooth curves draw first (flat here), then one partial curve per frame.
    rng = np.random.default_rng(5)
    equaliser_gains(front_end.bin_frequencies, n, tilt_range=(0.0, 0.0),
                    band_range=(0.0, 0.0), random_state=rng)
    gains = partial_gains(front_end.bin_frequencies, midi_to_hz(pitches),
                          gain_range=(-8.0, 8.0), random_state=rng)
    expected = front_end.from_magnitude(front_end.to_magnitude(features)
                                        * gains.astype(np.float32))
    np.testing.assert_allclose(augmented[n:], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="labels must be MIDI pitches"):
        timbre_copies(features, np.array(["C4"] * n), front_end, partial_range=(-8.0, 8.0))
    with pytest.raises(ValueError, match="labels must be MIDI pitches"):
        timbre_copies(features, np.zeros(n), front_end, partial_range=(-8.0, 8.0))
