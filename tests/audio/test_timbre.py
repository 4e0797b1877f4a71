from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp.audio import Spectrogram, equaliser_gains, timbre_copies
from decomp.audio.timbre import FLAT_BELOW_HZ, TILT_PIVOT_HZ


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
