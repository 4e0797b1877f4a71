"""Tests for decomp.separation.baselines."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import decomp
from decomp.audio import Spectrogram
from decomp.separation import NMFSeparator, evaluate_separation, ideal_ratio_mask

SAMPLE_RATE = 8000
FRONT_END = Spectrogram(sample_rate=SAMPLE_RATE, n_fft=256, hop_length=64, kind="linear")


def tone(f0: float, harmonics: list[float], seconds: float = 0.5) -> np.ndarray:
    """A harmonic tone with the given harmonic amplitudes and a gentle decay."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(a * np.sin(2 * np.pi * f0 * (h + 1) * t) for h, a in enumerate(harmonics))
    return (0.3 * wave * np.exp(-t)).astype(np.float32)


# "Instrument" A: low register, odd harmonics only; B: higher register, bright spectrum.
A_HARMONICS = [1.0, 0.0, 0.5, 0.0, 0.3]
B_HARMONICS = [1.0, 0.8, 0.6, 0.4]
A_PITCHES = [196.0, 220.0, 247.0]
B_PITCHES = [523.0, 587.0, 659.0]


def test_ideal_ratio_mask_sums_to_mixture_and_scores_high():
    sources = np.stack([tone(220.0, [1.0]), tone(1500.0, [1.0])])
    mixture = sources.sum(axis=0)
    estimates = ideal_ratio_mask(mixture, sources, FRONT_END)
    assert estimates.shape == sources.shape
    np.testing.assert_allclose(estimates.sum(axis=0), mixture, atol=1e-5)
    scores = evaluate_separation(estimates[None], sources[None], mixture[None], SAMPLE_RATE,
                                 filter_length=32)
    assert scores.summary()["si_sdr"] > 20
    assert scores.summary()["si_sdr_improvement"] > 20


def test_ideal_ratio_mask_batches_items_and_keeps_tensors():
    sources = np.stack([tone(220.0, [1.0], 0.2), tone(1500.0, [1.0], 0.2)])
    batch = np.stack([sources, sources[::-1]])
    estimates = ideal_ratio_mask(torch.from_numpy(batch.sum(axis=1)), batch, FRONT_END)
    assert isinstance(estimates, torch.Tensor) and estimates.shape == batch.shape
    single = ideal_ratio_mask(sources.sum(axis=0), sources, FRONT_END)
    np.testing.assert_allclose(estimates[0].numpy(), single, atol=1e-6)


def test_ideal_ratio_mask_bad_inputs():
    sources = np.stack([tone(220.0, [1.0], 0.1), tone(1500.0, [1.0], 0.1)])
    with pytest.raises(ValueError, match="sources must have shape"):
        ideal_ratio_mask(sources.sum(0), sources[0], FRONT_END)
    with pytest.raises(ValueError, match="do not match"):
        ideal_ratio_mask(sources.sum(0)[:-1], sources, FRONT_END)
    with pytest.raises(TypeError, match="front_end"):
        ideal_ratio_mask(sources.sum(0), sources, "linear")
    bad = sources.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        ideal_ratio_mask(sources.sum(0), bad, FRONT_END)


@pytest.fixture(scope="module")
def separator():
    training = {
        "a": [tone(f0, A_HARMONICS) for f0 in A_PITCHES],
        "b": [tone(f0, B_HARMONICS) for f0 in B_PITCHES],
    }
    return NMFSeparator(n_components_per_source=4, front_end=FRONT_END, max_iter=100,
                        device="cpu", random_state=0).fit(training)


def test_nmf_separator_beats_the_mixture(separator):
    sources = np.stack([
        np.stack([tone(220.0, A_HARMONICS), tone(587.0, B_HARMONICS)]),
        np.stack([tone(196.0, A_HARMONICS), tone(659.0, B_HARMONICS)]),
    ])  # (n_items, 2, n_samples)
    mixtures = sources.sum(axis=1)
    estimates = separator.separate(mixtures, ["a", "b"])
    assert estimates.shape == sources.shape
    np.testing.assert_allclose(estimates.sum(axis=1), mixtures, atol=1e-4)
    scores = evaluate_separation(estimates, sources, mixtures, SAMPLE_RATE, filter_length=32)
    np.testing.assert_array_equal(scores.permutation, [[0, 1], [0, 1]])
    assert scores.summary()["si_sdr_improvement"] > 3
    # The order of the requested classes is the order of the outputs.
    swapped = separator.separate(mixtures[0], ["b", "a"])
    np.testing.assert_allclose(swapped, estimates[0, ::-1], atol=1e-4)


def test_nmf_separator_fitted_state_and_persistence(separator, tmp_path):
    np.testing.assert_array_equal(separator.classes_, ["a", "b"])
    assert separator.model_.components_.shape == (8, FRONT_END.n_bins)
    assert separator.n_features_in_ == FRONT_END.n_bins
    mixture = tone(220.0, A_HARMONICS, 0.2) + tone(523.0, B_HARMONICS, 0.2)
    loaded = decomp.load(separator.save(tmp_path / "separator.pt"))
    assert loaded.front_end_ == FRONT_END
    np.testing.assert_allclose(loaded.separate(mixture), separator.separate(mixture),
                               atol=1e-6)
    assert clone(separator).get_params()["front_end"] == FRONT_END


def test_nmf_separator_fit_with_labels():
    stems = [tone(220.0, A_HARMONICS, 0.2), tone(587.0, B_HARMONICS, 0.2)]
    model = NMFSeparator(n_components_per_source=2, front_end=FRONT_END, max_iter=20,
                         device="cpu", random_state=0).fit(stems, ["a", "b"])
    assert model.model_.components_.shape == (4, FRONT_END.n_bins)
    assert model.separate(stems[0] + stems[1], ["a"]).shape == (1, stems[0].size)


def test_nmf_separator_bad_inputs(separator):
    mixture = tone(220.0, A_HARMONICS, 0.1)
    with pytest.raises(NotFittedError):
        NMFSeparator().separate(mixture)
    with pytest.raises(ValueError, match="unknown classes"):
        separator.separate(mixture, ["a", "piano"])
    with pytest.raises(ValueError, match="repeat"):
        separator.separate(mixture, ["a", "a"])
    with pytest.raises(ValueError, match="empty"):
        separator.separate(mixture, [])
    with pytest.raises(TypeError, match="sequence"):
        separator.separate(mixture, "a")
    with pytest.raises(ValueError, match="mixture must have"):
        separator.separate(mixture[None, None], ["a"])
    with pytest.raises(ValueError, match="n_components_per_source"):
        NMFSeparator(n_components_per_source=0).fit({"a": [mixture]})
    with pytest.raises(ValueError, match="labels"):
        NMFSeparator().fit([mixture])
    with pytest.raises(ValueError, match="one label per stem"):
        NMFSeparator().fit([mixture, mixture], ["a"])
    with pytest.raises(ValueError, match="no training stems"):
        NMFSeparator().fit({"a": []})
    with pytest.raises(TypeError):
        NMFSeparator().fit({"a": [np.arange(100)]})


def test_nmf_separator_works_in_segments_like_the_whole_recording(separator, monkeypatch):
    from decomp.separation import baselines

    rng = np.random.default_rng(0)
    notes = [tone(rng.choice(A_PITCHES), A_HARMONICS) + tone(rng.choice(B_PITCHES), B_HARMONICS)
             for _ in range(8)]
    mixture = np.concatenate(notes)  # 4 s = 500 frames at hop 64
    exact = copy.deepcopy(separator)
    exact.model_.set_params(tol=0.0, max_iter=30)  # frames are then independent in NMF
    whole = exact.separate(mixture)
    # Segments of 64 frames: 8 segments, each separated with its margin.
    monkeypatch.setattr(baselines, "_SEGMENT_FRAMES", 64)
    calls = []
    original = baselines._in_segments

    def counting(audio, separate, *args, **kwargs):
        def counted(segment):
            calls.append(segment.shape[-1])
            return separate(segment)
        return original(audio, counted, *args, **kwargs)

    monkeypatch.setattr(baselines, "_in_segments", counting)
    segmented = exact.separate(mixture)
    assert len(calls) == 8 and max(calls) < mixture.size // 4
    np.testing.assert_allclose(segmented, whole, rtol=0, atol=1e-5)
    tensor = exact.separate(torch.as_tensor(mixture))
    np.testing.assert_allclose(tensor.numpy(), whole, rtol=0, atol=1e-5)


def test_nmf_separator_streams_like_separate(separator, monkeypatch, tmp_path):
    import soundfile

    from decomp.audio import write_audio
    from decomp.separation import baselines

    rng = np.random.default_rng(1)
    notes = [tone(rng.choice(A_PITCHES), A_HARMONICS) + tone(rng.choice(B_PITCHES), B_HARMONICS)
             for _ in range(6)]
    mixture = (0.3 * np.concatenate(notes)).astype(np.float32)  # 375 frames at hop 64
    monkeypatch.setattr(baselines, "_SEGMENT_FRAMES", 64)  # 6 segments, as streamed below
    whole = separator.separate(mixture, ["b", "a"])
    blocks = np.array_split(mixture, 37)
    segments = list(separator.separate_stream(blocks, ["b", "a"]))
    assert len(segments) == 6 and all(segment.shape[0] == 2 for segment in segments)
    np.testing.assert_allclose(np.concatenate(segments, axis=1), whole, rtol=0, atol=1e-5)

    path = write_audio(tmp_path / "mix.wav", mixture, SAMPLE_RATE)
    outs = [tmp_path / "b.wav", tmp_path / "a.wav"]
    assert separator.separate_file(path, outs, ["b", "a"], block_frames=1000) == outs
    stems = np.stack([soundfile.read(out, dtype="float32")[0] for out in outs])
    np.testing.assert_allclose(stems, whole, rtol=0, atol=1e-5)

    # An error mid-way (after some segments were written) leaves no new stem.
    original = baselines.stream_segments
    produced = []

    def failing(*args, **kwargs):
        for segment in original(*args, **kwargs):
            produced.append(segment)
            if len(produced) == 3:
                raise OSError("disk full")
            yield segment

    monkeypatch.setattr(baselines, "stream_segments", failing)
    with pytest.raises(OSError, match="disk full"):
        separator.separate_file(path, [tmp_path / "x.wav", tmp_path / "y.wav"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "mix.wav"]
    with pytest.raises(ValueError, match="segment_frames"):
        next(separator.separate_stream(blocks, segment_frames=0))


C_HARMONICS = [1.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.5]
C_PITCHES = [330.0, 370.0, 415.0]


@pytest.fixture(scope="module")
def three_classes():
    training = {
        "a": [tone(f0, A_HARMONICS) for f0 in A_PITCHES],
        "b": [tone(f0, B_HARMONICS) for f0 in B_PITCHES],
        "c": [tone(f0, C_HARMONICS) for f0 in C_PITCHES],
    }
    return NMFSeparator(n_components_per_source=4, front_end=FRONT_END, max_iter=100,
                        device="cpu", random_state=0, n_sources=2).fit(training)


def test_nmf_separator_blind_chooses_the_loudest_classes(three_classes):
    assert three_classes.n_slots_ == 2 and three_classes._permutation_invariant
    a, b, c = tone(220.0, A_HARMONICS), tone(587.0, B_HARMONICS), tone(370.0, C_HARMONICS)
    for mixture, chosen in [(a + 0.5 * c, ["a", "c"]), (0.4 * a + b, ["b", "a"]),
                            (b + 0.6 * c, ["b", "c"])]:
        blind = three_classes.separate(mixture)
        assert blind.shape == (2, mixture.size)
        np.testing.assert_allclose(blind, three_classes.separate(mixture, chosen), atol=1e-6)
    # Requested classes still decide when given; n_sources=None separates every class.
    assert three_classes.separate(a + c, ["c"]).shape == (1, a.size)
    every = copy.copy(three_classes)
    every.n_sources = None
    assert every.separate(a + c).shape == (3, a.size) and every.n_slots_ == 3
    assert not every._permutation_invariant
    # Batches choose per item; a silent mixture gives silent outputs, not NaN.
    batch = np.stack([a + 0.5 * c, 0.4 * a + b, np.zeros_like(a)])
    blind = three_classes.separate(batch)
    np.testing.assert_allclose(blind[1], three_classes.separate(batch[1], ["b", "a"]),
                               atol=1e-6)
    assert np.all(np.isfinite(blind)) and np.abs(blind[2]).max() < 1e-6


def test_nmf_separator_blind_streams_segment_by_segment(three_classes, monkeypatch):
    from decomp.separation import baselines

    first = tone(220.0, A_HARMONICS, 1.0) + 0.5 * tone(370.0, C_HARMONICS, 1.0)
    second = 0.4 * tone(196.0, A_HARMONICS, 1.0) + tone(523.0, B_HARMONICS, 1.0)
    mixture = np.concatenate([first, second])  # 250 frames at hop 64
    monkeypatch.setattr(baselines, "_SEGMENT_FRAMES", 125)  # one segment per half
    whole = three_classes.separate(mixture)
    segments = list(three_classes.separate_stream(np.array_split(mixture, 9)))
    np.testing.assert_allclose(np.concatenate(segments, axis=1), whole, rtol=0, atol=1e-5)
    # Each half's loudest class is its first output.
    half = first.size
    assert np.square(whole[0, :half] - three_classes.separate(first, ["a"])[0]).mean() < \
        np.square(whole[0, :half]).mean()
    energy = np.square(whole[:, half + 1000:]).sum(axis=1)
    assert energy[0] > energy[1]


def test_nmf_separator_blind_refuses_more_sources_than_classes(three_classes):
    mixture = tone(220.0, A_HARMONICS, 0.1)
    too_many = copy.copy(three_classes)
    too_many.n_sources = 4
    with pytest.raises(ValueError, match="n_sources=4.*3 fitted classes"):
        too_many.separate(mixture)
    with pytest.raises(ValueError, match="n_sources"):
        NMFSeparator(n_sources=0).fit({"a": [mixture]})
    with pytest.raises(ValueError, match="selection_stride"):
        NMFSeparator(selection_stride=0).fit({"a": [mixture]})
