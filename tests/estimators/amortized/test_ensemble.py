"""SeparatorEnsemble: matched averaging, sums, streaming, save/load by name or inside, bad
members."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import decomp
from decomp.audio import Spectrogram
from decomp.estimators.amortized import AudioSlots, MHUNet, SeparatorEnsemble
from decomp.estimators.amortized.unordered import SOUNDING_SHARE
from decomp.exceptions import ModelFileError

N_ITEMS, N_FRAMES, N_BINS = 8, 48, 33
FRONT_END = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")


def _synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two sources per item (a low and a high harmonic comb, gated): magnitudes, sources
    and each item's labels."""
    rng = np.random.default_rng(0)
    bins = np.arange(N_BINS)
    templates = np.stack([
        sum(np.exp(-0.5 * (bins - f) ** 2) / k for k, f in enumerate((3, 6, 9, 12), 1)),
        sum(np.exp(-0.5 * (bins - f) ** 2) / k for k, f in enumerate((17, 22, 27, 32), 1))])
    gains = rng.uniform(0.3, 1.5, (N_ITEMS, 2, N_FRAMES)) * (rng.random((N_ITEMS, 2, N_FRAMES))
                                                              < 0.7)
    sources = (gains[..., None] * templates[None, :, None, :] + 1e-3).astype(np.float32)
    labels = np.array([["low", "high"]] * N_ITEMS)
    return sources.sum(axis=1), sources, labels


@pytest.fixture(scope="module")
def members():
    """A 3-slot AudioSlots and a 2-head MHUNet (unordered heads) on one front end."""
    mixtures, sources, _ = _synthetic()
    slots = AudioSlots(n_slots=3, patch_frames=4, patch_bins=16, embed_dim=16, n_layers=1,
                       n_heads=2, decoder_hidden=16, chunk_frames=16, front_end=FRONT_END,
                       max_epochs=1, device="cpu", random_state=0).fit(mixtures, sources)
    heads = MHUNet(n_levels=2, base_channels=4, chunk_frames=16, front_end=FRONT_END,
                   max_epochs=1, random_state=0).fit(mixtures, sources)
    return slots, heads


def _mixtures(n_items=2, n_samples=32 * 60):
    rng = np.random.default_rng(5)
    return (0.3 * rng.standard_normal((n_items, n_samples))).astype(np.float32)


def test_members_are_matched_to_the_first_and_averaged(members):
    slots, heads = members
    mixtures = _mixtures()
    ensemble = SeparatorEnsemble([slots, heads], weights=[3, 1]).fit()
    assert ensemble.n_slots_ == 3 and ensemble.front_end_ is slots.front_end_
    np.testing.assert_allclose(ensemble.weights_, [0.75, 0.25])
    sources = ensemble.separate(mixtures)
    assert sources.shape == (2, 3, mixtures.shape[1]) and sources.dtype == np.float32
    np.testing.assert_allclose(sources.sum(axis=1), mixtures, atol=1e-5)  # both sum to it
    first, second = slots.separate(mixtures), heads.separate(mixtures)  # (2, 3 / 2, n)
    for item in range(2):
        _matched_rest(sources[item], first[item], second[item])
    # One member twice matches itself exactly: the ensemble is that member.
    twice = SeparatorEnsemble([slots, slots]).fit()
    np.testing.assert_allclose(twice.separate(mixtures), first, atol=1e-6)


def test_single_torch_and_silent_inputs(members):
    ensemble = SeparatorEnsemble(list(members)).fit()
    mixtures = _mixtures()
    batch = ensemble.separate(mixtures)
    np.testing.assert_allclose(ensemble.separate(mixtures[1]), batch[1], atol=1e-6)
    as_tensor = ensemble.separate(torch.as_tensor(mixtures))
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), batch, atol=1e-6)
    silent = ensemble.separate(np.zeros(32 * 20, np.float32))
    assert silent.shape == (3, 32 * 20) and np.isfinite(silent).all() and not silent.any()


def _matched_rest(combined, first, second, weights=(0.75, 0.25)):
    """``second`` (padded with a silent row) matched to what ``combined`` holds beyond
    ``first``: asserts that ``combined`` is the weighted sum of ``first`` and a
    permutation of ``second``."""
    padded = np.concatenate([second, np.zeros_like(second[:1])])[:len(first)]
    rest = (combined - weights[0] * first) / weights[1]
    order = [int(np.argmin(np.abs(padded - row).max(axis=-1))) for row in rest]
    assert sorted(order) == list(range(len(first)))
    np.testing.assert_allclose(rest, padded[order], atol=1e-4)
    return order


def test_stream_combines_the_members_streams(members, tmp_path):
    import soundfile

    from decomp.audio import write_audio

    slots, heads = members
    ensemble = SeparatorEnsemble([slots, heads], weights=[3, 1]).fit()
    audio = 0.3 * _mixtures(1, 32 * 200)[0]  # within full scale, for the file
    blocks = np.array_split(audio, 7)
    # Within one segment the stream is separate(): matched on the whole recording.
    streamed = list(ensemble.separate_stream(blocks))
    assert len(streamed) == 1
    np.testing.assert_allclose(streamed[0], ensemble.separate(audio), atol=1e-5)
    # Over several: each segment is the first member's segment and the second's, matched.
    segments = list(ensemble.separate_stream(blocks, segment_frames=40))
    first = list(slots.separate_stream(blocks, segment_frames=40))
    second = list(heads.separate_stream(blocks, segment_frames=40))
    assert len(segments) == len(first) == len(second) == 5
    for combined, own, other in zip(segments, first, second, strict=True):
        assert combined.shape == own.shape and combined.dtype == np.float32
        _matched_rest(combined, own, other)
    np.testing.assert_allclose(np.concatenate(segments, axis=1).sum(axis=0), audio, atol=1e-5)
    twice = SeparatorEnsemble([slots, slots]).fit()
    np.testing.assert_allclose(
        np.concatenate(list(twice.separate_stream(blocks, segment_frames=40)), axis=1),
        np.concatenate(first, axis=1), atol=1e-6)
    # Written stem by stem.
    mixture = write_audio(tmp_path / "mix.wav", audio, 8000)
    paths = ensemble.separate_file(mixture, lambda n: [tmp_path / f"s{k}.wav"
                                                       for k in range(n)],
                                   segment_frames=40, block_frames=700)
    assert [path.name for path in paths] == ["s0.wav", "s1.wav", "s2.wav"]
    stems = np.stack([soundfile.read(path, dtype="float32")[0] for path in paths])
    np.testing.assert_allclose(stems, np.concatenate(segments, axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="labels do not apply"):
        next(ensemble.separate_stream(blocks, ["low", "high"]))
    with pytest.raises(ValueError, match="segment_frames"):
        next(ensemble.separate_stream(blocks, segment_frames=0))
    with pytest.raises(ValueError, match="no samples"):
        next(ensemble.separate_stream([]))


def test_stream_joins_members_with_different_hops(members):
    """Members whose hops differ cut segments of different lengths; the ensemble
    combines them over the samples both cover."""
    slots, _ = members
    mixtures, sources, _ = _synthetic()
    finer = MHUNet(n_levels=2, base_channels=4, chunk_frames=16, max_epochs=1, random_state=0,
                   front_end=Spectrogram(sample_rate=8000, n_fft=64, hop_length=16,
                                         kind="linear")).fit(mixtures, sources)
    ensemble = SeparatorEnsemble([slots, finer], weights=[3, 1]).fit()
    audio = _mixtures(1, 32 * 200)[0]
    segments = list(ensemble.separate_stream([audio], segment_frames=40))
    # slots cuts 40 * 32 samples, finer 40 * 16: pieces of 640 samples.
    assert [segment.shape for segment in segments] == [(3, 640)] * 10
    own = np.concatenate(list(finer.separate_stream([audio], segment_frames=40)), axis=1)
    first = np.concatenate(list(slots.separate_stream([audio], segment_frames=40)), axis=1)
    for index, combined in enumerate(segments):
        piece = slice(640 * index, 640 * (index + 1))
        _matched_rest(combined, first[:, piece], own[:, piece])
    whole = list(ensemble.separate_stream([audio]))
    np.testing.assert_allclose(np.concatenate(whole, axis=1), ensemble.separate(audio),
                               atol=1e-5)


def test_a_count_and_refinement_reach_copies_of_the_members_that_take_them(members):
    slots, heads = members
    mixtures = _mixtures()
    told = SeparatorEnsemble([slots, slots], n_sources=2).fit()
    direct = _told(slots, n_sources=2).separate(mixtures)
    np.testing.assert_allclose(told.separate(mixtures), direct, atol=1e-6)
    assert slots.n_sources is None  # the member itself is left as it was
    refined = SeparatorEnsemble([slots, slots], n_sources=3, refine_passes=1).fit()
    np.testing.assert_allclose(
        refined.separate(mixtures),
        _told(slots, n_sources=3, refine_passes=1).separate(mixtures), atol=1e-6)
    assert slots.refine_passes == 0
    # The MHUNet does not count (count_sources=False): its own check refuses the count.
    with pytest.raises(ValueError, match="needs count_sources=True"):
        SeparatorEnsemble([slots, heads], n_sources=2).fit()._check_n_sources()
    with pytest.raises(ValueError, match="needs count_sources=True"):
        SeparatorEnsemble([slots, heads], n_sources=2).fit().separate(mixtures)
    with pytest.raises(ValueError, match="at most n_slots_"):
        SeparatorEnsemble([slots, slots], n_sources=4).fit()._check_n_sources()
    # Blind, the AudioSlots members count before they refine.
    blind = _told(slots, refine_passes=1)
    np.testing.assert_allclose(
        SeparatorEnsemble([slots, slots], refine_passes=1).fit().separate(mixtures),
        SeparatorEnsemble([blind, blind]).fit().separate(mixtures), atol=1e-6)
    with pytest.raises(ValueError, match=r"at most n_slots_ \(3\) passes"):
        SeparatorEnsemble([slots, slots], refine_passes=4).fit()._check_refine_passes()
    with pytest.raises(ValueError, match="no member has refinement passes"):
        SeparatorEnsemble([heads, heads], refine_passes=1).fit().separate(mixtures)
    with pytest.raises(ValueError, match="n_sources"):
        SeparatorEnsemble([slots, slots], n_sources=0).fit()


def test_an_inference_overlap_reaches_the_members_that_run_in_windows(members, blind_nmf):
    slots, heads = members
    mixtures = _mixtures()
    ensemble = SeparatorEnsemble([slots, heads, blind_nmf], inference_overlap=0.0).fit()
    direct = SeparatorEnsemble([_told(slots, inference_overlap=0.0),
                                _told(heads, inference_overlap=0.0), blind_nmf]).fit()
    np.testing.assert_allclose(ensemble.separate(mixtures), direct.separate(mixtures),
                               atol=1e-6)
    assert slots.inference_overlap == heads.inference_overlap == 0.5  # left as they were
    assert not np.allclose(ensemble.separate(mixtures),
                           SeparatorEnsemble([slots, heads, blind_nmf]).fit().separate(mixtures),
                           atol=1e-4)  # the overlap changes the windows
    with pytest.raises(ValueError, match="no member runs in inference windows"):
        SeparatorEnsemble([blind_nmf, blind_nmf], inference_overlap=0.0).fit().separate(
            mixtures)
    with pytest.raises(ValueError, match="inference_overlap"):
        SeparatorEnsemble([slots, heads], inference_overlap=1.0).fit()


def _told(model, **settings):
    import copy

    told = copy.deepcopy(model)
    return told.set_params(**settings)


def test_saved_with_members_inside_or_by_path(members, tmp_path):
    slots, heads = members
    mixtures = _mixtures()
    inside = SeparatorEnsemble([slots, heads], weights=[0.7, 0.3]).fit()
    expected = inside.separate(mixtures)
    loaded = decomp.load(inside.save(tmp_path / "inside.decomp"))
    np.testing.assert_allclose(loaded.separate(mixtures), expected, atol=1e-6)
    paths = [slots.save(tmp_path / "slots.decomp"), heads.save(tmp_path / "heads.decomp")]
    by_path = SeparatorEnsemble([str(path) for path in paths], weights=[0.7, 0.3]).fit()
    saved = by_path.save(tmp_path / "by-path.decomp")
    assert saved.stat().st_size < 20_000  # names, weights and the front end only
    reloaded = decomp.pretrained(saved)
    assert [type(member) for member in reloaded.separators_] == [AudioSlots, MHUNet]
    np.testing.assert_allclose(reloaded.separate(mixtures), expected, atol=1e-6)


@pytest.fixture
def blind_nmf():
    """A blind NMFSeparator (2 of 3 classes) on the members' front end."""
    from decomp.separation import NMFSeparator

    rng = np.random.default_rng(3)
    stems = {label: [(0.3 * rng.standard_normal(4000)).astype(np.float32)
                     * np.sin(np.arange(4000) * frequency)]
             for label, frequency in (("low", 0.05), ("mid", 0.4), ("high", 1.2))}
    return NMFSeparator(n_components_per_source=2, front_end=FRONT_END, max_iter=20,
                        device="cpu", random_state=0, n_sources=2).fit(stems)


def test_a_blind_nmf_separator_is_a_member(members, blind_nmf, tmp_path):
    from decomp.separation import NMFSeparator

    slots, _ = members
    nmf = blind_nmf
    mixtures = _mixtures()
    ensemble = SeparatorEnsemble([slots, nmf], weights=[3, 1]).fit()
    assert ensemble.n_slots_ == 3
    sources = ensemble.separate(mixtures)
    np.testing.assert_allclose(sources.sum(axis=1), mixtures, atol=1e-5)
    first, second = slots.separate(mixtures), nmf.separate(mixtures)  # (2, 3 / 2, n)
    for item in range(2):
        _matched_rest(sources[item], first[item], second[item])
    # Told the count, the NMF member separates that many classes too (on a copy).
    told = SeparatorEnsemble([slots, nmf], n_sources=1).fit()
    assert told._told_members()[1].n_sources == 1 and nmf.n_sources == 2
    # Streamed and saved inside the ensemble's file like any member.
    audio = 0.3 * _mixtures(1, 32 * 200)[0]
    streamed = list(ensemble.separate_stream(np.array_split(audio, 5)))
    np.testing.assert_allclose(streamed[0], ensemble.separate(audio), atol=1e-5)
    loaded = decomp.load(ensemble.save(tmp_path / "with-nmf.decomp"))
    np.testing.assert_allclose(loaded.separate(mixtures), sources, atol=1e-6)
    # An NMFSeparator that gives one output per class is refused.
    nmf.set_params(n_sources=None)
    with pytest.raises(ValueError, match="an output per class .*blind with n_sources"):
        SeparatorEnsemble([slots, nmf]).fit()
    with pytest.raises(NotFittedError):
        SeparatorEnsemble([slots, NMFSeparator(n_sources=2)]).fit()


def _energies(outputs):
    return np.square(np.asarray(outputs, dtype=np.float64)).sum(axis=-1)


def _counts(energies):
    """How many outputs carry 1 % of the energy of all, per item: energies (..., S)."""
    return (energies >= SOUNDING_SHARE * energies.sum(axis=-1, keepdims=True)).sum(axis=-1)


def _sines(n_samples, high_from=0):
    """Mixtures of a low sine and (from sample ``high_from``) a high one, at 8 kHz."""
    time = np.arange(n_samples)
    return (0.3 * np.sin(0.05 * time) + 0.3 * np.sin(1.2 * time) * (time >= high_from)
            ).astype(np.float32)


def test_count_weights_follow_the_first_members_count(members, blind_nmf, tmp_path):
    slots, heads = members
    # The blind NMF first: one sine alone is one sounding output, two are two.
    mixtures = np.stack([_sines(32 * 60, high_from=32 * 60), _sines(32 * 60),
                         _mixtures(1, 32 * 60)[0]])
    first = np.pad(blind_nmf.separate(mixtures), ((0, 0), (0, 1), (0, 0)))  # 3 slots
    second = slots.separate(mixtures)
    counts = _counts(_energies(first))
    assert list(counts) == [1, 2, 2]
    ensemble = SeparatorEnsemble([blind_nmf, slots], weights=[3, 1],
                                 count_weights={1: [1, 3]}).fit()
    assert list(ensemble.count_weights_) == [1]
    np.testing.assert_allclose(ensemble.count_weights_[1], [0.25, 0.75])
    sources = ensemble.separate(mixtures)
    for item, count in enumerate(counts):
        weights = (0.25, 0.75) if count == 1 else (0.75, 0.25)
        _matched_rest(sources[item], first[item], second[item], weights)
    # A count no mixture has leaves the plain weights.
    unused = SeparatorEnsemble([blind_nmf, slots], weights=[3, 1],
                               count_weights={7: [1, 3]}).fit()
    np.testing.assert_allclose(unused.separate(mixtures),
                               SeparatorEnsemble([blind_nmf, slots], weights=[3, 1]).fit()
                               .separate(mixtures), atol=1e-6)
    # Streamed, the count is that of the first member's outputs so far: one sine, then two.
    audio = _sines(32 * 200, high_from=32 * 100)
    blocks = np.array_split(audio, 7)
    own = [np.pad(segment, ((0, 1), (0, 0)))
           for segment in blind_nmf.separate_stream(blocks, segment_frames=40)]
    other = list(slots.separate_stream(blocks, segment_frames=40))
    stream_counts = _counts(np.cumsum([_energies(segment) for segment in own], axis=0))
    assert list(stream_counts) == [1, 1, 2, 2, 2]
    segments = list(ensemble.separate_stream(blocks, segment_frames=40))
    for combined, count, own_segment, other_segment in zip(segments, stream_counts, own, other,
                                                           strict=True):
        weights = (0.25, 0.75) if count == 1 else (0.75, 0.25)
        _matched_rest(combined, own_segment, other_segment, weights)
    # Told the count, that count's weights apply whatever the outputs carry.
    told = SeparatorEnsemble([slots, blind_nmf], weights=[3, 1], count_weights={1: [1, 3]},
                             n_sources=1).fit()
    np.testing.assert_allclose(
        told.separate(mixtures),
        SeparatorEnsemble([slots, blind_nmf], weights=[1, 3], n_sources=1).fit()
        .separate(mixtures), atol=1e-6)
    # Saved with the ensemble.
    loaded = decomp.load(ensemble.save(tmp_path / "counted.decomp"))
    assert loaded.count_weights == {1: [1, 3]}
    np.testing.assert_allclose(loaded.separate(mixtures), sources, atol=1e-6)
    with pytest.raises(ValueError, match=r"keyed by a number of sources .* got the key 0"):
        SeparatorEnsemble([slots, heads], count_weights={0: [1, 1]}).fit()
    with pytest.raises(ValueError, match=r"keyed by a number of sources .* got the key '2'"):
        SeparatorEnsemble([slots, heads], count_weights={"2": [1, 1]}).fit()
    with pytest.raises(ValueError, match=r"count_weights\[2\] must be 2 positive numbers"):
        SeparatorEnsemble([slots, heads], count_weights={2: [1]}).fit()
    with pytest.raises(ValueError, match=r"count_weights\[3\] must be 2 positive numbers"):
        SeparatorEnsemble([slots, heads], count_weights={3: ["a", 1]}).fit()
    with pytest.raises(ValueError, match="count_weights"):
        SeparatorEnsemble([slots, heads], count_weights=[1, 3]).fit()


def test_a_file_saved_before_count_weights_existed_loads(members, tmp_path, monkeypatch):
    slots, heads = members
    ensemble = SeparatorEnsemble([slots, heads], weights=[3, 1]).fit()
    saved_state = SeparatorEnsemble._get_state
    monkeypatch.setattr(SeparatorEnsemble, "_get_state", lambda self: {
        key: value for key, value in saved_state(self).items() if key != "count_weights_"})
    path = ensemble.save(tmp_path / "before.decomp")
    monkeypatch.undo()
    loaded = decomp.load(path)
    assert loaded.count_weights_ == {}
    mixtures = _mixtures()
    np.testing.assert_allclose(loaded.separate(mixtures), ensemble.separate(mixtures),
                               atol=1e-6)


def test_bad_members_weights_and_inputs(members, tmp_path):
    slots, heads = members
    mixtures, sources, labels = _synthetic()
    with pytest.raises(ValueError, match="at least two separators"):
        SeparatorEnsemble([slots]).fit()
    with pytest.raises(ValueError, match="fit each member on data"):
        SeparatorEnsemble([slots, heads]).fit(mixtures, sources)
    with pytest.raises(ValueError, match=r"weights must be 2 positive numbers"):
        SeparatorEnsemble([slots, heads], weights=[1, 0]).fit()
    with pytest.raises(ValueError, match=r"weights must be 2 positive numbers"):
        SeparatorEnsemble([slots, heads], weights=[1, 1, 1]).fit()
    labelled = MHUNet(n_levels=2, base_channels=4, chunk_frames=16, front_end=FRONT_END,
                      max_epochs=1, random_state=0).fit(mixtures, sources, labels)
    with pytest.raises(ValueError, match="an output per class"):
        SeparatorEnsemble([slots, labelled]).fit()
    with pytest.raises(ValueError, match=r"\(AudioSlots, BlockVAE, MHUNet\) or an "
                                         "NMFSeparator; got an NMF"):
        SeparatorEnsemble([slots, decomp.NMF(n_components=2)]).fit()
    with pytest.raises(NotFittedError):
        SeparatorEnsemble([slots, AudioSlots()]).fit()
    other_rate = MHUNet(n_levels=2, base_channels=4, chunk_frames=16, max_epochs=1,
                        front_end=Spectrogram(sample_rate=16000, n_fft=64, hop_length=32,
                                              kind="linear"), random_state=0)
    with pytest.raises(ValueError, match=r"share a sample rate; got \[8000, 16000\]"):
        SeparatorEnsemble([slots, other_rate.fit(mixtures, sources)]).fit()
    ensemble = SeparatorEnsemble([slots, heads]).fit()
    with pytest.raises(ValueError, match="not ensembles"):
        SeparatorEnsemble([ensemble, slots]).fit()
    # A file that names an ensemble file (here: itself) is refused, not recursed into.
    path = tmp_path / "self.decomp"
    SeparatorEnsemble([slots, heads]).fit().save(path)
    loop = SeparatorEnsemble([str(path), str(path)])
    with pytest.raises(ValueError, match="not ensembles"):
        loop.fit()
    loop.set_params(separators=[slots, heads]).fit()
    loop.set_params(separators=[str(path), slots])  # saved as named, fitted on others
    loop.save(path)
    with pytest.raises(ModelFileError, match="not ensembles"):
        decomp.load(path)
    # A shipped ensemble named as a member: refused by name, its members suggested.
    with pytest.raises(ValueError, match=r"'instruments' holds a SeparatorEnsemble \(name its "
                       r"members instead: instruments-slots, instruments-count, "
                       r"instruments-nmf\)\."):
        SeparatorEnsemble(["instruments", slots]).fit()
    with pytest.raises(ValueError, match="labels do not apply"):
        ensemble.separate(_mixtures(), ["low", "high"])
    with pytest.raises(NotFittedError):
        SeparatorEnsemble([slots, heads]).separate(_mixtures())
