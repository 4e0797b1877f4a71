"""Tests for decomp.audio.spectrogram: features, geometry, masks, separation, errors."""

from __future__ import annotations

import json
import pickle

import librosa
import numpy as np
import pytest
import torch

from decomp.audio import Spectrogram, frame_times, from_librosa, to_librosa

SAMPLE_RATE = 16000
KINDS = ["linear", "log", "cqt", "log-cqt"]


def _sine(frequency: float, n_samples: int = 8000, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(n_samples) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


# ----------------------------------------------------------------------------- features


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("frequency", [440.0, 1000.0])
def test_sine_peaks_in_the_nearest_bin(kind, frequency):
    front_end = Spectrogram(kind=kind)
    features = front_end(_sine(frequency))
    assert features.dtype == np.float32 and features.shape[-1] == front_end.n_bins
    expected = int(np.argmin(np.abs(front_end.bin_frequencies - frequency)))
    assert int(features.mean(axis=0).argmax()) == expected


def test_default_geometry_matches_the_dds_front_end():
    front_end = Spectrogram()
    assert (front_end.sample_rate, front_end.n_fft, front_end.hop_length) == (16000, 2048, 512)
    assert front_end.kind == "log" and front_end.compression == 10000.0
    assert front_end.n_bins == 1025
    assert Spectrogram(n_bins=1024).n_bins == 1024
    np.testing.assert_allclose(front_end.bin_frequencies[[0, 1, -1]], [0.0, 7.8125, 8000.0])


def test_cqt_bins_start_at_a0_and_stay_below_nyquist():
    front_end = Spectrogram(kind="cqt")
    frequencies = front_end.bin_frequencies
    assert frequencies[0] == pytest.approx(librosa.midi_to_hz(21))
    np.testing.assert_allclose(frequencies, librosa.cqt_frequencies(
        front_end.n_bins, fmin=27.5, bins_per_octave=36))
    # The default is the most bins librosa accepts: one more is refused by librosa...
    with pytest.raises(librosa.util.exceptions.ParameterError, match="Nyquist"):
        librosa.cqt(np.zeros(4096), sr=SAMPLE_RATE, hop_length=512, fmin=27.5,
                    n_bins=front_end.n_bins + 1, bins_per_octave=36)
    # ...and by us, with a message that names the parameter.
    with pytest.raises(ValueError, match=r"'n_bins' parameter of Spectrogram must be at most "
                                         rf"{front_end.n_bins}.*Nyquist"):
        Spectrogram(kind="cqt", n_bins=front_end.n_bins + 1)


@pytest.mark.parametrize("kind", ["log", "cqt"])
@pytest.mark.parametrize("n_samples", [1, 100, 511, 512, 513, 2048, 5000])
def test_shape_follows_the_n_frames_formula(kind, n_samples):
    front_end = Spectrogram(kind=kind)
    audio = np.random.default_rng(n_samples).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    n_frames = 1 + n_samples // 512
    assert front_end.n_frames(n_samples) == n_frames
    assert front_end(audio).shape == (n_frames, front_end.n_bins)


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_is_the_stack_of_its_items(kind):
    front_end = Spectrogram(kind=kind)
    batch = np.stack([_sine(440, 3000), _sine(880, 3000), _sine(220, 3000)])
    features = front_end.transform(batch)
    assert features.shape == (3, front_end.n_frames(3000), front_end.n_bins)
    for item, audio in zip(features, batch, strict=True):
        np.testing.assert_allclose(item, front_end(audio), rtol=1e-5, atol=1e-5)


def test_n_bins_drops_the_top_bins():
    audio = _sine(440, 4000)
    np.testing.assert_array_equal(Spectrogram(n_bins=1024)(audio), Spectrogram()(audio)[:, :1024])


def test_torch_stft_matches_librosa_stft():
    audio = np.random.default_rng(0).standard_normal(7777).astype(np.float32)
    for window in ["hann", "hamming"]:
        ours = Spectrogram(window=window).stft(audio)
        reference = librosa.stft(audio, n_fft=2048, hop_length=512, window=window,
                                 center=True, pad_mode="constant").T
        assert ours.shape == reference.shape and ours.dtype == np.complex64
        assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()


def test_log_features_follow_the_definition():
    audio = _sine(440, 5000) + 0.01 * np.random.default_rng(1).standard_normal(5000).astype(
        np.float32)
    magnitude = np.abs(librosa.stft(audio.astype(np.float64), n_fft=2048, hop_length=512,
                                    center=True, pad_mode="constant")).T
    linear = Spectrogram(kind="linear")(audio)
    # float32 FFT round-off is relative to the loudest bin, not to each bin.
    np.testing.assert_allclose(linear, magnitude, rtol=0, atol=1e-6 * magnitude.max())
    for compression in [10000.0, 3.0]:
        features = Spectrogram(kind="log", compression=compression)(audio)
        np.testing.assert_allclose(features, np.log1p(compression * linear.astype(np.float64)),
                                   rtol=1e-6)


@pytest.mark.filterwarnings("ignore:n_fft=.* is too large:UserWarning")
def test_cqt_kinds_are_librosa_cqt_magnitudes():
    audio = _sine(440, 6000)
    reference = np.abs(librosa.cqt(audio, sr=SAMPLE_RATE, hop_length=512, fmin=27.5,
                                   n_bins=294, bins_per_octave=36)).T
    np.testing.assert_allclose(Spectrogram(kind="cqt")(audio), reference, rtol=1e-5)
    np.testing.assert_allclose(Spectrogram(kind="log-cqt")(audio), np.log1p(1e4 * reference),
                               rtol=1e-5)


@pytest.mark.parametrize("linear, log", [("linear", "log"), ("cqt", "log-cqt")])
def test_to_magnitude_inverts_the_compression(linear, log):
    audio = _sine(660, 4000)
    magnitude = Spectrogram(kind=log).to_magnitude(Spectrogram(kind=log)(audio))
    np.testing.assert_allclose(magnitude, Spectrogram(kind=linear)(audio), rtol=1e-4, atol=1e-6)
    # Already magnitudes: unchanged.
    linear_features = Spectrogram(kind=linear)(audio)
    np.testing.assert_array_equal(Spectrogram(kind=linear).to_magnitude(linear_features),
                                  linear_features)


@pytest.mark.parametrize("kind", ["log", "linear", "log-cqt"])
def test_from_magnitude_is_the_inverse_of_to_magnitude(kind):
    front_end = Spectrogram(kind=kind)
    features = front_end(_sine(660, 4000))
    np.testing.assert_allclose(front_end.from_magnitude(front_end.to_magnitude(features)),
                               features, rtol=1e-5, atol=1e-6)
    tensor = torch.from_numpy(front_end.to_magnitude(features))
    assert isinstance(front_end.from_magnitude(tensor), torch.Tensor)


def test_from_magnitude_refuses_what_it_cannot_compress():
    with pytest.raises(ValueError, match="magnitude"):
        Spectrogram().from_magnitude(-np.ones((3, 1025)))
    with pytest.raises(ValueError, match="bins"):
        Spectrogram().from_magnitude(np.ones((3, 1024)))
    with pytest.raises(ValueError, match="dB-normalised"):
        Spectrogram(kind="linear", db_normalization=True).from_magnitude(np.ones((3, 1025)))


def test_tensors_in_give_tensors_out():
    front_end = Spectrogram()
    audio = torch.from_numpy(_sine(440, 3000))
    features = front_end(audio)
    assert isinstance(features, torch.Tensor) and features.dtype == torch.float32
    np.testing.assert_allclose(features.numpy(), front_end(audio.numpy()), rtol=1e-6)
    assert front_end(audio.double()).dtype == torch.float64
    assert isinstance(Spectrogram(kind="cqt")(audio), torch.Tensor)
    masks = front_end.masks(torch.stack([features, features]))
    assert isinstance(masks, torch.Tensor)
    assert isinstance(front_end.separate(audio, masks=masks), torch.Tensor)


def test_features_of_tensors_are_differentiable():
    audio = torch.from_numpy(_sine(440, 3000)).requires_grad_()
    Spectrogram()(audio).sum().backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all()


# ----------------------------------------------------------------------------- time axis


def test_frame_times():
    np.testing.assert_allclose(frame_times(4, 16000, 512), [0.0, 0.032, 0.064, 0.096])
    np.testing.assert_allclose(Spectrogram(hop_length=256).frame_times(3), [0, 0.016, 0.032])
    assert frame_times(0, 16000, 512).shape == (0,)
    with pytest.raises(ValueError, match=r"'hop_length' parameter of frame_times must be an int "
                                         r"in the range \[1, inf\). Got 0 instead"):
        frame_times(3, 16000, 0)
    np.testing.assert_allclose(frame_times(np.int64(2), np.int64(16000), np.int64(512)),
                               [0.0, 0.032])


@pytest.mark.parametrize("kind", ["log", "cqt"])
def test_frame_t_is_centred_at_t_hop_over_sample_rate(kind):
    # A click at 0.32 s must be loudest in the frame whose time is 0.32 s.
    front_end = Spectrogram(kind=kind)
    audio = np.zeros(16000, dtype=np.float32)
    audio[10 * 512] = 1.0
    features = front_end.to_magnitude(front_end(audio))
    loudest = int(features[:, front_end.n_bins // 2:].sum(axis=1).argmax())
    assert front_end.frame_times(features.shape[0])[loudest] == pytest.approx(0.32)


# ----------------------------------------------------------------------------- masks


def test_masks_sum_to_one_and_share_silence_equally():
    front_end = Spectrogram(kind="log")
    rng = np.random.default_rng(2)
    features = rng.uniform(0, 5, size=(3, 6, front_end.n_bins)).astype(np.float32)
    features[:, 2, :10] = 0.0  # silent in every source
    for power in [1.0, 2.0]:
        masks = front_end.masks(features, power=power)
        assert masks.shape == features.shape and masks.dtype == np.float32
        np.testing.assert_allclose(masks.sum(axis=0), 1.0, rtol=1e-5)
        assert masks.min() >= 0 and masks.max() <= 1
        np.testing.assert_allclose(masks[:, 2, :10], 1 / 3)
    magnitude = front_end.to_magnitude(features)
    np.testing.assert_allclose(front_end.masks(features)[0, 0],
                               magnitude[0, 0] / magnitude[:, 0].sum(axis=0), rtol=1e-5)


# ----------------------------------------------------------------------------- separation


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_masks_separate_two_sines(kind):
    front_end = Spectrogram(kind=kind)
    low, high = _sine(440, 8000, 0.5), _sine(1500, 8000, 0.3)
    mixture = low + high
    sources = front_end.separate(mixture, np.stack([front_end(low), front_end(high)]))
    assert sources.shape == (2, 8000) and sources.dtype == np.float32
    assert _snr_db(low, sources[0]) > 20
    assert _snr_db(high, sources[1]) > 20
    # Masks that sum to 1 give sources that sum to the mixture.
    np.testing.assert_allclose(sources.sum(axis=0), mixture, atol=1e-5)


@pytest.mark.parametrize("kind, n_bins", [("log", None), ("log", 1024), ("cqt", None),
                                          ("linear", 600)])
def test_an_all_ones_mask_gives_the_input_back(kind, n_bins):
    front_end = Spectrogram(kind=kind, n_bins=n_bins)
    audio = np.random.default_rng(3).uniform(-0.5, 0.5, 5001).astype(np.float32)
    masks = np.ones((1, front_end.n_frames(audio.size), front_end.n_bins), dtype=np.float32)
    (output,) = front_end.separate(audio, masks=masks)
    assert np.abs(output - audio).max() < 1e-4


def test_separate_needs_exactly_one_of_features_and_masks():
    front_end = Spectrogram()
    audio = _sine(440, 2000)
    features = front_end(audio)[None]
    with pytest.raises(ValueError, match="exactly one of source_features and masks; got both"):
        front_end.separate(audio, features, masks=np.ones_like(features))
    with pytest.raises(ValueError, match="got neither"):
        front_end.separate(audio)


def test_separate_checks_the_masks_against_the_mixture():
    front_end = Spectrogram()
    audio = _sine(440, 2000)  # 4 frames
    with pytest.raises(ValueError, match=r"masks has 5 frames but audio of 2000 samples has 4"):
        front_end.separate(audio, masks=np.ones((2, 5, 1025), dtype=np.float32))
    with pytest.raises(ValueError, match=r"masks has 1024 bins .* makes 1025 bins"):
        front_end.separate(audio, masks=np.ones((2, 4, 1024), dtype=np.float32))
    with pytest.raises(ValueError, match=r"masks must have 3 dimensions \(n_sources, n_frames"):
        front_end.separate(audio, masks=np.ones((4, 1025), dtype=np.float32))
    with pytest.raises(ValueError, match="masks.*non-negative"):
        front_end.separate(audio, masks=-np.ones((1, 4, 1025), dtype=np.float32))
    with pytest.raises(ValueError, match=r"audio must have 1 \(n_samples,\) dimensions"):
        front_end.separate(np.stack([audio, audio]), masks=np.ones((1, 4, 1025)))


def test_separate_refuses_a_hop_it_cannot_invert():
    front_end = Spectrogram(n_fft=256, hop_length=256)
    audio = _sine(440, 2000)
    masks = np.ones((1, front_end.n_frames(2000), front_end.n_bins), dtype=np.float32)
    with pytest.raises(ValueError, match="cannot be inverted; use a smaller hop_length"):
        front_end.separate(audio, masks=masks)


# ----------------------------------------------------------------------------- layout helpers


def test_librosa_layout_round_trip():
    audio = _sine(440, 3000)
    features = Spectrogram(kind="linear")(audio)
    librosa_layout = np.abs(librosa.stft(audio, n_fft=2048, hop_length=512, pad_mode="constant"))
    np.testing.assert_allclose(to_librosa(features), librosa_layout, rtol=0,
                               atol=1e-6 * librosa_layout.max())
    batch = np.zeros((2, 5, 7))
    assert to_librosa(batch).shape == (2, 7, 5)
    np.testing.assert_array_equal(from_librosa(to_librosa(batch)), batch)
    assert to_librosa(torch.zeros(5, 7)).shape == (7, 5)
    with pytest.raises(ValueError, match=r"X must have at least 2 dimensions .* shape \(5,\)"):
        to_librosa(np.zeros(5))
    with pytest.raises(TypeError, match="S must be a NumPy array"):
        from_librosa("spectrogram")


# ----------------------------------------------------------------------------- parameters


def test_to_dict_from_dict_round_trip():
    front_end = Spectrogram(kind="log-cqt", hop_length=256, n_bins=200, fmin=55.0)
    description = json.loads(json.dumps(front_end.to_dict()))
    assert description["type"] == "Spectrogram"
    rebuilt = Spectrogram.from_dict(description)
    assert rebuilt == front_end and hash(rebuilt) == hash(front_end)
    assert rebuilt.get_params() == front_end.get_params()
    assert Spectrogram.from_dict(front_end.get_params()) == front_end
    assert pickle.loads(pickle.dumps(front_end)) == front_end
    assert Spectrogram() != front_end
    assert front_end.replace(hop_length=512) == Spectrogram(kind="log-cqt", n_bins=200,
                                                            fmin=55.0)
    assert repr(Spectrogram(kind="cqt")) == "Spectrogram(kind='cqt')"
    assert Spectrogram().get_params()["n_bins"] is None and Spectrogram().n_bins == 1025


def test_from_dict_refuses_unknown_keys_and_foreign_types():
    with pytest.raises(ValueError, match=r"unknown keys \['hop'\]"):
        Spectrogram.from_dict({"hop": 256})
    with pytest.raises(ValueError, match="describes a 'NMF', not a 'Spectrogram'"):
        Spectrogram.from_dict({"type": "NMF"})
    with pytest.raises(TypeError, match="description must be a dict"):
        Spectrogram.from_dict("Spectrogram()")


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"kind": "mel"}, ValueError,
         r"'kind' parameter of Spectrogram must be a str among \{.*'log-cqt'.*\}. Got 'mel'"),
        ({"n_fft": 0}, ValueError,
         r"'n_fft' parameter of Spectrogram must be an int in the range \[1, inf\). Got 0"),
        ({"n_fft": -2048}, ValueError, "'n_fft' parameter .* Got -2048"),
        ({"n_fft": 2048.0}, TypeError, r"'n_fft' parameter .* Got 2048.0 instead"),
        ({"n_fft": True}, TypeError, r"'n_fft' parameter .* Got True instead"),
        ({"hop_length": 0}, ValueError, r"'hop_length' parameter .* \[1, inf\). Got 0"),
        ({"hop_length": 4096}, ValueError, "'hop_length' .* at most n_fft=2048 .* got 4096"),
        ({"sample_rate": 0}, ValueError, "'sample_rate' parameter"),
        ({"window": "nonsense"}, ValueError, "'window' parameter .* got 'nonsense'"),
        ({"window": ("kaiser", 8.0)}, TypeError, "'window' parameter .* instance of 'str'"),
        ({"compression": 0.0}, ValueError,
         r"'compression' .* a float in the range \(0.0, inf\). Got 0.0"),
        ({"compression": float("nan")}, ValueError, "'compression'"),
        ({"compression": float("inf")}, ValueError, "'compression'"),
        ({"compression": "big"}, TypeError, "'compression' .* Got 'big'"),
        ({"n_bins": 1026}, ValueError, r"'n_bins' .* at most n_fft // 2 \+ 1 = 1025 .* 1026"),
        ({"n_bins": 0}, ValueError, r"'n_bins' parameter of Spectrogram must be an int in the "
                                    r"range \[1, inf\) or None"),
        ({"kind": "cqt", "n_bins": 1}, ValueError, "'n_bins' .* int >= 2"),
        ({"kind": "cqt", "fmin": 7990.0}, ValueError, "'fmin' .* too close to the Nyquist"),
        ({"fmin": -1.0}, ValueError, "'fmin' parameter"),
        ({"bins_per_octave": 0}, ValueError, "'bins_per_octave' parameter"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(params, error, message):
    with pytest.raises(error, match=message):
        Spectrogram(**params)


def test_parameters_are_keyword_only_and_read_only():
    with pytest.raises(TypeError):
        Spectrogram(16000)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Spectrogram().hop_length = 256  # type: ignore[misc]


# ----------------------------------------------------------------------------- audio errors


@pytest.mark.parametrize(
    "audio, error, message",
    [
        (np.zeros((1, 2, 3), dtype=np.float32), ValueError,
         r"audio must have 1 \(n_samples,\) or 2 \(n_items, n_samples\) dimensions; got an "
         r"array of shape \(1, 2, 3\)"),
        (np.array([0.0, np.nan], dtype=np.float32), ValueError,
         r"audio contains NaN or infinity \(1 samples\)"),
        (np.zeros(0, dtype=np.float32), ValueError, r"audio is empty: got an array of shape"),
        (np.zeros(100, dtype=np.int16), TypeError, "floating-point samples .* dtype int16"),
        (np.zeros(100, dtype=np.complex64), TypeError, "floating-point samples"),
        (torch.zeros(100, dtype=torch.int64), TypeError, "floating-point samples"),
        (None, TypeError, "audio must be a NumPy array or a torch tensor; got NoneType"),
    ],
)
@pytest.mark.parametrize("method", ["transform", "stft"])
def test_bad_audio_is_refused(audio, error, message, method):
    with pytest.raises(error, match=message):
        getattr(Spectrogram(), method)(audio)


def test_bad_features_are_refused():
    front_end = Spectrogram()
    with pytest.raises(ValueError, match="features has 1024 bins .* makes 1025 bins"):
        front_end.to_magnitude(np.zeros((3, 1024)))
    with pytest.raises(ValueError, match="features contains NaN"):
        front_end.to_magnitude(np.full((3, 1025), np.nan))
    with pytest.raises(ValueError, match=r"source_features must have 3 dimensions"):
        front_end.masks(np.zeros((3, 1025)))
    with pytest.raises(ValueError, match="'power' parameter of Spectrogram.masks"):
        front_end.masks(np.zeros((2, 3, 1025)), power=0.0)


# ----------------------------------------------------------------------------- Solos options

SOLOS = {"sample_rate": 11025, "n_fft": 1022, "hop_length": 256, "kind": "linear",
         "frequency_scale": "log", "n_bins": 256}


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_log_frequency_scale_shape_and_bins(kind):
    front_end = Spectrogram(kind=kind, frequency_scale="log")
    assert front_end.n_bins == 1025  # default: the STFT's bin count
    assert front_end(_sine(440, 5000)).shape == (front_end.n_frames(5000), 1025)
    solos = Spectrogram(**{**SOLOS, "kind": kind})
    audio = np.random.default_rng(0).standard_normal(6 * 11025).astype(np.float32)
    assert solos(audio).shape == (259, 256)
    frequencies = solos.bin_frequencies
    assert frequencies.shape == (256,) and np.all(np.diff(frequencies) > 0)
    np.testing.assert_allclose(frequencies[[0, -1]], [11025 / 1022, 5512.5])
    ratios = frequencies[1:] / frequencies[:-1]  # log-spaced: a constant ratio
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)


def test_log_frequency_interpolates_the_stft_magnitude():
    audio = np.random.default_rng(2).standard_normal(4000).astype(np.float32)
    front_end = Spectrogram(**SOLOS)
    linear = Spectrogram(**{**SOLOS, "frequency_scale": "linear", "n_bins": None})(audio)
    step = 11025 / 1022
    expected = np.stack([np.interp(front_end.bin_frequencies, np.arange(512) * step, row)
                         for row in linear])
    np.testing.assert_allclose(front_end(audio), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("frequency", [437.5, 1000.0, 3000.0])
def test_sine_peaks_in_the_nearest_log_bin(frequency):
    front_end = Spectrogram(kind="log", frequency_scale="log", n_bins=512)
    features = front_end(_sine(frequency))
    expected = int(np.argmin(np.abs(front_end.bin_frequencies - frequency)))
    # The peak is the nearest log bin to the STFT peak bin, within one bin of the tone.
    assert abs(int(features.mean(axis=0).argmax()) - expected) <= 1


def test_ones_on_log_bins_give_the_mixture_back():
    front_end = Spectrogram(kind="log", frequency_scale="log", n_bins=300)
    audio = _sine(440, 6000) + _sine(2000, 6000, amplitude=0.2)
    masks = np.ones((1, front_end.n_frames(6000), 300), dtype=np.float32)
    np.testing.assert_allclose(front_end.separate(audio, masks=masks)[0], audio, atol=1e-5)


def test_log_bin_masks_separate_two_sines():
    front_end = Spectrogram(kind="log", frequency_scale="log", n_bins=512)
    low, high = _sine(440, 8000, 0.5), _sine(1500, 8000, 0.3)
    sources = front_end.separate(low + high, np.stack([front_end(low), front_end(high)]))
    np.testing.assert_allclose(sources.sum(axis=0), low + high, atol=1e-5)
    assert _snr_db(low, sources[0]) > 20 and _snr_db(high, sources[1]) > 20


def test_db_normalized_features_span_minus_one_to_one_per_item():
    front_end = Spectrogram(**SOLOS, db_normalization=True)
    batch = np.stack([_sine(440, 8000), 0.01 * _sine(1000, 8000),
                      np.random.default_rng(3).standard_normal(8000).astype(np.float32)])
    features = front_end(batch)
    assert features.shape == (3, front_end.n_frames(8000), 256)
    np.testing.assert_array_equal(features.min(axis=(1, 2)), -1.0)
    np.testing.assert_array_equal(features.max(axis=(1, 2)), 1.0)
    # The definition: dB above the (floored) minimum, scaled by the range.
    magnitude = front_end.replace(db_normalization=False)(batch[2]).astype(np.float64)
    floor = max(magnitude.min(), 1e-8 * magnitude.max())
    decibels = 20 * np.log10(np.maximum(magnitude, floor) / floor)
    np.testing.assert_allclose(features[2], 2 * decibels / decibels.max() - 1, atol=1e-5)
    # Silence is constant: -1 everywhere, no NaN.
    np.testing.assert_array_equal(front_end(np.zeros(3000, dtype=np.float32)), -1.0)


def test_db_normalized_features_cannot_become_magnitudes():
    front_end = Spectrogram(kind="linear", db_normalization=True)
    features = front_end(np.stack([_sine(440, 3000), _sine(880, 3000)]))
    with pytest.raises(ValueError, match="cannot be turned back into magnitudes"):
        front_end.to_magnitude(features)
    with pytest.raises(ValueError, match="cannot be turned back into magnitudes"):
        front_end.masks(features)
    # Masks given directly still separate.
    masks = np.ones((1, front_end.n_frames(3000), front_end.n_bins), dtype=np.float32)
    audio = _sine(440, 3000)
    np.testing.assert_allclose(front_end.separate(audio, masks=masks)[0], audio, atol=1e-5)


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"kind": "cqt", "frequency_scale": "log"}, ValueError,
         "'frequency_scale' .* must be 'linear' for kind='cqt'.*already log-spaced"),
        ({"kind": "log-cqt", "frequency_scale": "log"}, ValueError, "'frequency_scale'"),
        ({"frequency_scale": "mel"}, ValueError,
         r"'frequency_scale' .* a str among \{.*'linear'.*\}. Got 'mel'"),
        ({"frequency_scale": "log", "n_bins": 1}, ValueError, "'n_bins' .* int >= 2"),
        ({"frequency_scale": "log", "n_bins": 1026}, ValueError, "'n_bins' .* at most"),
        ({"frequency_scale": "log", "n_fft": 2, "hop_length": 1}, ValueError,
         "'frequency_scale' .* n_fft >= 4"),
        ({"db_normalization": True}, ValueError,
         "'db_normalization' .* only with kind='linear'.*got kind='log'"),
        ({"kind": "cqt", "db_normalization": True}, ValueError, "'db_normalization'"),
        ({"kind": "linear", "db_normalization": 1}, TypeError,
         r"'db_normalization' .* must be an instance of 'bool' .* Got 1 instead"),
    ],
)
def test_bad_solos_options_are_refused(params, error, message):
    with pytest.raises(error, match=message):
        Spectrogram(**params)


def test_solos_options_round_trip():
    front_end = Spectrogram(**SOLOS, db_normalization=True)
    rebuilt = Spectrogram.from_dict(json.loads(json.dumps(front_end.to_dict())))
    assert rebuilt == front_end and hash(rebuilt) == hash(front_end)
    assert rebuilt.frequency_scale == "log" and rebuilt.db_normalization is True
    assert pickle.loads(pickle.dumps(front_end)) == front_end
    assert "frequency_scale='log'" in repr(front_end) and "db_normalization=True" in repr(
        front_end)
    assert front_end.replace(db_normalization=False) != front_end
    defaults = Spectrogram().get_params()
    assert defaults["frequency_scale"] == "linear" and defaults["db_normalization"] is False
    assert repr(Spectrogram()) == "Spectrogram()"


# ------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("front_end", [
    Spectrogram(),
    Spectrogram(n_fft=1023, hop_length=300, kind="linear", frequency_scale="log", n_bins=200),
])
@pytest.mark.parametrize("n_samples", [1, 511, 512, 5000, 40001])
@pytest.mark.parametrize("chunk_frames, block", [(1, 700), (7, 3333), (32, 10**6)])
def test_stream_equals_the_whole_transform(front_end, n_samples, chunk_frames, block):
    audio = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    blocks = [audio[start:start + block] for start in range(0, n_samples, block)]
    chunks = list(front_end.stream(blocks, chunk_frames=chunk_frames))
    assert all(chunk.shape[0] == chunk_frames for chunk in chunks[:-1])
    np.testing.assert_array_equal(np.concatenate(chunks), front_end(audio))


def test_stream_holds_about_one_chunk_of_samples():
    front_end = Spectrogram()
    consumed = []

    def blocks():
        for index in range(1000):  # 1000 blocks of 0.1 s
            consumed.append(index)
            yield np.zeros(1600, dtype=np.float32)

    first = next(front_end.stream(blocks(), chunk_frames=64))  # 64 frames ~ 2 s
    assert first.shape == (64, front_end.n_bins)
    assert len(consumed) < 25


def test_stream_of_cqt_features_is_close_to_the_whole_transform():
    front_end = Spectrogram(kind="log-cqt", compression=100.0, bins_per_octave=24, fmin=55.0)
    t = np.arange(16000 * 6) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 60 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t)
             + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    streamed = np.concatenate(list(front_end.stream(np.split(audio, 12), chunk_frames=48)))
    np.testing.assert_allclose(streamed, front_end(audio), rtol=0, atol=5e-4)


def test_stream_refusals():
    with pytest.raises(ValueError, match="normalises each spectrogram by its own extremes"):
        next(Spectrogram(kind="linear", db_normalization=True).stream(
            [np.zeros(100, np.float32)], chunk_frames=8))
    with pytest.raises(ValueError, match="blocks holds no samples"):
        next(Spectrogram().stream([], chunk_frames=8))
    with pytest.raises(ValueError, match="'chunk_frames' parameter"):
        next(Spectrogram().stream([np.zeros(100, np.float32)], chunk_frames=0))


@pytest.mark.parametrize("params", [dict(kind="linear"),
                                    dict(kind="linear", frequency_scale="log", n_bins=64)])
def test_batched_mask_application_equals_separate_and_is_differentiable(params):
    front_end = Spectrogram(sample_rate=8000, n_fft=256, hop_length=64, **params)
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((3, 2000)).astype(np.float32)
    masks = rng.uniform(size=(3, 2, front_end.n_frames(2000), front_end.n_bins))
    masks = torch.tensor(masks, dtype=torch.float32, requires_grad=True)
    batched = front_end._apply_masks(torch.as_tensor(audio), masks)
    assert batched.shape == (3, 2, 2000)
    for item in range(3):
        one = front_end.separate(audio[item], masks=masks[item].detach().numpy())
        np.testing.assert_allclose(batched[item].detach().numpy(), one, atol=1e-5)
    batched.square().sum().backward()
    assert masks.grad is not None and torch.isfinite(masks.grad).all()
    assert masks.grad.abs().sum() > 0
