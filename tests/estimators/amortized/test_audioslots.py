"""AudioSlots: shapes, mask sums, permutation symmetry, training, save/load, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import decomp
from decomp.audio import Spectrogram
from decomp.estimators.amortized import audioslots as audioslots_module
from decomp.estimators.amortized.audioslots import (
    AudioSlots,
    AudioSlotsNetwork,
    AudioSlotsUNetNetwork,
)
from decomp.estimators.amortized.base import DEFAULT_FRONT_END
from decomp.estimators.amortized.unet import SOLOS_FRONT_END, network_input

N_ITEMS, N_FRAMES, N_BINS, CHUNK = 24, 48, 33, 16
SMALL = dict(n_slots=3, patch_frames=4, patch_bins=16, embed_dim=32, n_layers=1,
             n_heads=4, decoder_hidden=32, chunk_frames=CHUNK, batch_size=8,
             learning_rate=3e-3, device="cpu", random_state=0)


def _synthetic(n_items: int = N_ITEMS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two sources per mixture: random on/off activations times fixed spectral templates
    (a low harmonic comb and a high one), with small random gain changes."""
    rng = np.random.default_rng(seed)
    bins = np.arange(N_BINS)
    templates = np.stack([
        sum(np.exp(-0.5 * (bins - f) ** 2) / k for k, f in enumerate((3, 6, 9, 12), 1)),
        sum(np.exp(-0.5 * (bins - f) ** 2) / k for k, f in enumerate((17, 22, 27, 32), 1)),
    ])  # (2, F)
    gates = rng.random((n_items, 2, N_FRAMES)) < 0.7
    gains = rng.uniform(0.3, 1.5, (n_items, 2, N_FRAMES)) * gates
    sources = gains[..., None] * templates[None, :, None, :] + 1e-3  # (N, 2, T, F)
    return sources.sum(axis=1).astype(np.float32), sources.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return _synthetic()


@pytest.fixture(scope="module")
def fitted(data):
    mixtures, sources = data
    return AudioSlots(**SMALL, max_epochs=8).fit(mixtures, sources)


# The U-Net decoder, small enough for 33 bins (padded to 36) and 16-frame chunks.
UNET = dict(decoder="unet", n_levels=2, base_channels=8)


def _network(n_slots: int = 3, decoder: str = "broadcast", attention_skip: bool = True
             ) -> AudioSlotsNetwork | AudioSlotsUNetNetwork:
    torch.manual_seed(0)
    common = dict(n_bins=N_BINS, chunk_frames=CHUNK, n_slots=n_slots, embed_dim=32,
                  n_layers=1, n_heads=4, n_iterations=3, decoder_hidden=32)
    if decoder == "unet":
        return AudioSlotsUNetNetwork(**common, n_levels=2, base_channels=8,
                                     attention_skip=attention_skip).eval()
    return AudioSlotsNetwork(**common, patch_frames=4, patch_bins=16).eval()


# --------------------------------------------------------------------- outputs
def test_transform_shapes_numpy_and_torch(fitted, data):
    mixtures, _ = data
    single = fitted.transform(mixtures[0])
    assert isinstance(single, np.ndarray) and single.dtype == np.float32
    assert single.shape == (3, N_FRAMES, N_BINS)
    batch = fitted.transform(torch.as_tensor(mixtures[:5]))
    assert isinstance(batch, torch.Tensor) and batch.shape == (5, 3, N_FRAMES, N_BINS)
    # A short input (less than one chunk) is padded and cropped back.
    assert fitted.transform(mixtures[0, :7]).shape == (3, 7, N_BINS)
    assert fitted.n_slots_ == 3 and fitted.n_features_in_ == N_BINS
    assert fitted.max_sources_ == 2 and fitted.classes_ is None


def test_masks_sum_to_one_so_sources_sum_to_mixture(fitted, data):
    mixtures, _ = data
    estimates = fitted.transform(mixtures[:4])
    assert (estimates >= 0).all()
    np.testing.assert_allclose(estimates.sum(axis=1), mixtures[:4], rtol=1e-4, atol=1e-5)
    for decoder in ("broadcast", "unet"):
        masks, generated = _network(decoder=decoder)(torch.as_tensor(mixtures[:4, :CHUNK]))
        torch.testing.assert_close(masks.sum(dim=1), torch.ones(4, CHUNK, N_BINS))
        assert generated.shape == masks.shape and (generated >= 0).all()


def test_transform_is_deterministic(fitted, data):
    mixtures, _ = data
    np.testing.assert_array_equal(fitted.transform(mixtures[:3]), fitted.transform(mixtures[:3]))


# ---------------------------------------------------------------- permutations
@pytest.mark.parametrize(("decoder", "attention_skip"),
                         [("broadcast", True), ("unet", True), ("unet", False)])
def test_network_is_permutation_equivariant_in_the_slots(data, decoder, attention_skip):
    network = _network(n_slots=4, decoder=decoder, attention_skip=attention_skip)
    mixture = torch.as_tensor(data[0][:3, :CHUNK])
    slots = network.slot_attention.initial_slots(3)
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        masks, generated = network(mixture, slots)
        masks_permuted, generated_permuted = network(mixture, slots[:, order])
    torch.testing.assert_close(masks_permuted, masks[:, order], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(generated_permuted, generated[:, order], rtol=1e-4, atol=1e-5)


def test_loss_is_invariant_to_the_order_of_the_targets(data):
    model = AudioSlots(**SMALL)
    network = _network()
    mixture = torch.as_tensor(data[0][:6, :CHUNK])
    sources = torch.as_tensor(data[1][:6, :, :CHUNK])
    batch = {"mixture": mixture, "sources": sources}
    with torch.no_grad():
        losses = model._training_losses(network, batch)
        swapped = model._training_losses(network, {**batch, "sources": sources.flip(1)})
    assert set(losses) == {"loss", "separation", "generation"}
    for key in losses:
        torch.testing.assert_close(losses[key], swapped[key])


# -------------------------------------------------------------------- training
def test_one_optimisation_step_lowers_the_loss(data):
    model = AudioSlots(**SMALL)
    network = _network()
    batch = {"mixture": torch.as_tensor(data[0][:8, :CHUNK]),
             "sources": torch.as_tensor(data[1][:8, :, :CHUNK])}
    loss = model._training_losses(network, batch)["loss"]
    loss.backward()
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.grad is not None:
                parameter -= 1e-2 * parameter.grad
        after = model._training_losses(network, batch)["loss"]
    assert after < loss.detach()


@pytest.mark.parametrize("decoder", ["broadcast", "unet"])
def test_training_windows_carry_the_slots_and_cross_fade_in_slot_order(data, decoder):
    model = AudioSlots(**{**SMALL, **(UNET if decoder == "unet" else {})}, training_windows=3)
    assert model._training_frames == CHUNK + 2 * (CHUNK // 2) == 32
    network = _network(decoder=decoder)
    mixture = torch.as_tensor(data[0][:2, :32])
    with torch.no_grad():
        masks, generated = model._carried_windows(network, mixture)
        windows, slots = [], None
        for start in (0, 8, 16):  # every half window, each from the last one's slots
            *outputs, slots = network(mixture[:, start:start + CHUNK], slots, return_slots=True)
            windows.append(outputs)
        alone = network(mixture[:, 8:24])[0]  # the middle window from the initial slots
        short = model._carried_windows(network, mixture[:, :CHUNK])
    assert masks.shape == generated.shape == (2, 3, 32, N_BINS)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 32, N_BINS))
    # Frames only the first (last) window covers are its own; the others are the
    # triangle-weighted mean of the windows that cover them, in slot order.
    torch.testing.assert_close(masks[:, :, :1], windows[0][0][:, :, :1])
    torch.testing.assert_close(generated[:, :, -1:], windows[2][1][:, :, -1:])
    ramp = torch.minimum(torch.arange(1.0, CHUNK + 1), torch.arange(CHUNK, 0.0, -1))
    frame = 12  # window 0's frame 12 (weight 4), window 1's frame 4 (weight 5)
    expected = (ramp[12] * windows[0][0][:, :, 12] + ramp[4] * windows[1][0][:, :, 4]) \
        / (ramp[12] + ramp[4])
    torch.testing.assert_close(masks[:, :, frame], expected)
    assert not torch.allclose(windows[1][0], alone)  # the carried slots change the window
    for joined, one in zip(short, network(mixture[:, :CHUNK]), strict=True):
        torch.testing.assert_close(joined, one)  # a crop of one window: one pass


def test_training_lowers_the_validation_loss(fitted):
    history = fitted.history_
    assert fitted.n_epochs_ == 8 and history["validation_loss"].shape == (8,)
    assert set(history) == {"train_loss", "validation_loss", "train_separation",
                            "train_generation", "initial_validation_loss"}
    assert fitted.best_epoch_ >= 1
    assert history["validation_loss"].min() < 0.9 * history["validation_loss"][0]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert fitted.n_validation_items_ == 2 and fitted.training_seconds_ > 0


def test_generation_weight_zero_trains_the_masks_only(data):
    mixtures, sources = data
    model = AudioSlots(**{**SMALL, "generation_weight": 0.0}, max_epochs=1)
    model.fit(mixtures[:8], sources[:8])
    assert set(model.history_) == {"train_loss", "validation_loss", "initial_validation_loss"}


def test_feature_read_out_can_be_switched_off(data):
    mixtures, sources = data
    pure = AudioSlots(**{**SMALL, "feature_channels": 0}, max_epochs=1).fit(mixtures[:8],
                                                                            sources[:8])
    network = pure._get_network()
    assert not hasattr(network, "mixture_features")
    assert not any(key.startswith("slot_readout") for key in pure.network_state_)
    estimates = pure.transform(mixtures[:2])
    np.testing.assert_allclose(estimates.sum(axis=1), mixtures[:2], rtol=1e-4, atol=1e-5)
    with_features = AudioSlots(**SMALL, max_epochs=1).fit(mixtures[:8], sources[:8])
    assert with_features.network_state_["slot_readout.weight"].shape == (16, SMALL["embed_dim"])


def test_unet_decoder_learns_sums_to_the_mixture_and_round_trips(data, tmp_path):
    mixtures, sources = data
    model = AudioSlots(**SMALL, **UNET, max_epochs=8).fit(mixtures, sources)
    assert isinstance(model._get_network(), AudioSlotsUNetNetwork)
    history = model.history_
    assert history["validation_loss"].min() < 0.9 * history["validation_loss"][0]
    estimates = model.transform(mixtures[:3])
    assert estimates.shape == (3, 3, N_FRAMES, N_BINS) and (estimates >= 0).all()
    np.testing.assert_allclose(estimates.sum(axis=1), mixtures[:3], rtol=1e-4, atol=1e-5)
    loaded = decomp.load(model.save(tmp_path / "audioslots-unet.decomp"))
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.transform(mixtures[:3]), estimates)
    # A file written before the attention skip existed keeps decoding the slots alone.
    payload = torch.load(tmp_path / "audioslots-unet.decomp", weights_only=True)
    payload["params"]["__dict__"] = [pair for pair in payload["params"]["__dict__"]
                                     if pair[0] != "attention_skip"]
    torch.save(payload, tmp_path / "older.decomp")
    assert decomp.load(tmp_path / "older.decomp").attention_skip is False
    with pytest.raises(ValueError, match="chunks of at most"):
        _network(decoder="unet")(torch.ones(1, CHUNK + 1, N_BINS))


def _deepest_maps(network: AudioSlotsUNetNetwork, mixture: torch.Tensor,
                  slots: torch.Tensor) -> torch.Tensor:
    """The (batch, n_slots, channels, rows, columns) maps the network decodes."""
    captured = []
    decode_each = network.unet.decode_each

    def spy(skips, deepest, n_frames, n_bins):
        captured.append(deepest)
        return decode_each(skips, deepest, n_frames, n_bins)

    network.unet.decode_each = spy
    with torch.no_grad():
        network(mixture, slots)
    return captured[0]


def test_attention_skip_shares_the_mixtures_deepest_map_among_the_slots(data):
    """Each slot's decoder gets the mixture's deepest map weighted by the attention the
    slot won: the weighted maps add up to the mixture's over the slots, and they differ
    from cell to cell where the broadcast slot alone cannot."""
    mixture = torch.as_tensor(data[0][:3, :CHUNK])
    gated, alone = _network(attention_skip=True, decoder="unet"), _network(decoder="unet")
    alone.attention_skip = False
    slots = gated.slot_attention.initial_slots(3)
    with_skip = _deepest_maps(gated, mixture, slots)
    without = _deepest_maps(alone, mixture, slots)
    with torch.no_grad():
        mixture_map = gated.unet.encode(network_input(mixture))[-1]
    torch.testing.assert_close((with_skip - without).sum(dim=1), mixture_map,
                               rtol=1e-4, atol=1e-5)
    # Without the skip two slots' maps differ by the same vector in every cell (the
    # positional embedding is shared): nothing tells a slot where its source lies.
    def spread_over_cells(maps: torch.Tensor) -> torch.Tensor:
        return (maps[:, 1:] - maps[:, :1]).flatten(-2).std(dim=-1).max()

    assert spread_over_cells(without) < 1e-5
    assert spread_over_cells(with_skip) > 1e-3
    assert AudioSlots().attention_skip is True


def test_the_unet_decoder_reads_the_log_frequency_front_end_by_default():
    assert AudioSlots(decoder="unet")._front_end() is SOLOS_FRONT_END
    assert AudioSlots()._front_end() is DEFAULT_FRONT_END
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    assert AudioSlots(decoder="unet", front_end=front_end)._front_end() is front_end


# ------------------------------------------------------------ persistence, audio
def test_save_load_round_trip(fitted, data, tmp_path):
    path = fitted.save(tmp_path / "audioslots.decomp")
    loaded = decomp.load(path)
    assert isinstance(loaded, AudioSlots)
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.transform(data[0][:3]), fitted.transform(data[0][:3]))


def test_separate_waveforms_with_a_small_front_end():
    rng = np.random.default_rng(1)
    n_samples = 1600  # 0.2 s at 8 kHz
    time = np.arange(n_samples) / 8000
    sources = np.stack([
        np.stack([0.3 * np.sin(2 * np.pi * rng.uniform(200, 600) * time),
                  0.2 * np.sin(2 * np.pi * rng.uniform(2000, 3500) * time)])
        for _ in range(6)
    ]).astype(np.float32)  # (6, 2, n_samples)
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    model = AudioSlots(**{**SMALL, "front_end": front_end}, max_epochs=1)
    model.fit(sources.sum(axis=1), sources)
    assert model.n_features_in_ == 33
    separated = model.separate(sources[0].sum(axis=0))
    assert separated.shape == (3, n_samples)
    np.testing.assert_allclose(separated.sum(axis=0), sources[0].sum(axis=0), atol=1e-4)
    batch = model.separate(torch.as_tensor(sources[:2].sum(axis=1)))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 3, n_samples)


# ------------------------------------------------------------------ bad input
def test_bad_training_inputs(data):
    mixtures, sources = data
    model = AudioSlots(**SMALL, max_epochs=1)
    with pytest.raises(ValueError, match="mixtures must be spectrograms"):
        model.fit(mixtures[None], sources)
    with pytest.raises(ValueError, match="sources must have shape"):
        model.fit(mixtures, sources[:-1])
    with pytest.raises(ValueError, match="sources must have shape"):
        model.fit(mixtures, sources[0])
    bad = mixtures.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, sources)
    many = np.concatenate([sources, sources[:, :2]], axis=1)  # 4 sources, 3 slots
    with pytest.raises(ValueError, match="n_slots=3"):
        model.fit(many.sum(axis=1), many)


def test_zero_padded_source_slots_beyond_n_slots_are_dropped(data):
    mixtures, sources = data
    padded = np.concatenate([sources[:8], np.zeros_like(sources[:8])], axis=1)  # 4 > 3
    model = AudioSlots(**SMALL, max_epochs=1).fit(mixtures[:8], padded)
    assert model.n_slots_ == 3 and model.max_sources_ == 2


def test_bad_parameters(data):
    mixtures, sources = data
    with pytest.raises(ValueError, match=r"embed_dim \(30\).*n_heads \(4\)"):
        AudioSlots(**{**SMALL, "embed_dim": 30}).fit(mixtures, sources)
    with pytest.raises(ValueError, match="n_slots"):
        AudioSlots(**{**SMALL, "n_slots": 0}).fit(mixtures, sources)
    with pytest.raises(ValueError, match="generation_weight"):
        AudioSlots(**{**SMALL, "generation_weight": -1.0}).fit(mixtures, sources)
    with pytest.raises(ValueError, match="front end that gives magnitudes"):
        AudioSlots(**{**SMALL, "front_end": Spectrogram(kind="log")}).fit(mixtures, sources)
    with pytest.raises(ValueError, match="decoder"):
        AudioSlots(**{**SMALL, "decoder": "mlp"}).fit(mixtures, sources)
    with pytest.raises(ValueError, match="training_windows"):
        AudioSlots(**{**SMALL, "training_windows": 0}).fit(mixtures, sources)


def test_training_windows_train_on_longer_crops_of_fixed_spectrograms(data):
    mixtures, sources = data  # 48 frames: crops of 16 + 2 * 8 frames
    model = AudioSlots(**SMALL, training_windows=3, max_epochs=2).fit(mixtures, sources)
    assert np.isfinite(model.history_["validation_loss"]).all()
    assert model.transform(mixtures[:2]).shape == (2, 3, N_FRAMES, N_BINS)


def test_bad_inference_inputs(fitted, data):
    mixtures, _ = data
    with pytest.raises(NotFittedError):
        AudioSlots().transform(mixtures)
    with pytest.raises(NotFittedError):
        AudioSlots().separate(np.zeros(800, dtype=np.float32))
    with pytest.raises(ValueError, match="33"):
        fitted.transform(mixtures[:, :, :20])
    with pytest.raises(ValueError, match="dimensions"):
        fitted.transform(mixtures[None])
    bad = mixtures[:2].copy()
    bad[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        fitted.transform(bad)
    with pytest.raises(ValueError, match="chunks of at most"):
        _network()(torch.ones(1, CHUNK + 1, N_BINS))


# -------------------------------------------------------------------- sklearn
def test_get_params_and_clone(fitted):
    params = fitted.get_params()
    for name in ("n_slots", "patch_frames", "patch_bins", "embed_dim", "n_layers",
                 "n_heads", "n_iterations", "decoder_hidden", "generation_weight",
                 "decoder", "n_levels", "base_channels",
                 "front_end", "chunk_frames", "max_epochs", "batch_size", "learning_rate",
                 "validation_fraction", "patience", "max_grad_norm", "max_seconds",
                 "checkpoint", "device", "random_state", "progress"):
        assert name in params
    copy = clone(fitted)
    assert copy.get_params() == params
    assert not hasattr(copy, "network_state_")
    copy.set_params(n_slots=5)
    assert copy.n_slots == 5 and fitted.n_slots == 3


def test_separate_stream_equals_separate(data):
    # A mixture many chunks and several segments long, streamed in odd blocks.
    mixtures, sources = data
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    model = AudioSlots(**{**SMALL, "front_end": front_end, "batch_size": 3}, max_epochs=1)
    model.fit(mixtures[:8], sources[:8])
    rng = np.random.default_rng(5)
    audio = (0.3 * rng.standard_normal(32 * 150 + 7)).astype(np.float32)  # 151 frames
    streamed = list(model.separate_stream(np.array_split(audio, 13), segment_frames=20))
    assert len(streamed) > 5
    joined = np.concatenate(streamed, axis=1)
    np.testing.assert_allclose(joined, model.separate(audio), rtol=0, atol=1e-5)


# ------------------------------------------------------------------ n_sources
def test_n_sources_merges_the_slots_and_is_saved(fitted, data, tmp_path):
    mixtures, _ = data
    every_slot = fitted.transform(mixtures[:2])
    merged = copy.deepcopy(fitted).set_params(n_sources=1).transform(mixtures[:2])
    # One source: every slot merged into the first output, the mixture itself.
    np.testing.assert_allclose(merged[:, 0], mixtures[:2], rtol=1e-4, atol=1e-5)
    assert not merged[:, 1:].any()
    two = copy.deepcopy(fitted).set_params(n_sources=2).transform(mixtures[:2])
    assert not two[:, 2].any()
    np.testing.assert_allclose(two.sum(axis=1), every_slot.sum(axis=1), rtol=1e-4, atol=1e-5)
    unchanged = copy.deepcopy(fitted).set_params(n_sources=3).transform(mixtures[:2])
    np.testing.assert_array_equal(unchanged, every_slot)
    told = copy.deepcopy(fitted).set_params(n_sources=2)
    loaded = decomp.load(told.save(tmp_path / "told.decomp"))
    assert loaded.n_sources == 2
    np.testing.assert_array_equal(loaded.transform(mixtures[:2]), two)


# ------------------------------------------------------------------ refine_passes
@pytest.fixture(scope="module")
def waveform_model(data):
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    mixtures, sources = data
    return AudioSlots(**{**SMALL, "front_end": front_end}, max_epochs=1).fit(mixtures[:8],
                                                                            sources[:8])


def _trio(n_samples=32 * 70):
    rng = np.random.default_rng(3)
    return (0.3 * rng.standard_normal((2, n_samples))).astype(np.float32)


def test_refine_passes_re_separate_the_rest_told_one_source_fewer(waveform_model):
    mixtures = _trio()
    told = copy.deepcopy(waveform_model).set_params(n_sources=3)
    plain = told.separate(mixtures)
    refined = copy.deepcopy(told).set_params(refine_passes=1)
    calls = []
    original = AudioSlots._separate_waveforms

    def recording(self, waveforms, labels):
        calls.append((self.n_sources, self.refine_passes, waveforms.clone()))
        return original(self, waveforms, labels)

    try:
        AudioSlots._separate_waveforms = recording
        once = refined.separate(mixtures)
    finally:
        AudioSlots._separate_waveforms = original
    assert [call[:2] for call in calls] == [(3, 1), (2, 0)]
    loudest = (plain ** 2).sum(axis=-1).argmax(axis=1)
    np.testing.assert_allclose(calls[1][2].numpy(),
                               mixtures - plain[np.arange(2), loudest], atol=1e-6)
    assert once.shape == plain.shape and once.dtype == np.float32
    np.testing.assert_array_equal(once[np.arange(2), loudest], plain[np.arange(2), loudest])
    assert not np.allclose(once, plain, atol=1e-4)
    # Masks sum to one, so every separation sums to what it separates, and so do the
    # refined sources.
    for passes in (1, 2, 3):
        sources = copy.deepcopy(told).set_params(refine_passes=passes).separate(mixtures)
        np.testing.assert_allclose(sources.sum(axis=1), mixtures, atol=1e-4)
    silent = copy.deepcopy(told).set_params(refine_passes=2).separate(np.zeros_like(mixtures))
    assert np.isfinite(silent).all() and not silent.any()
    # The rest of a duet is one source: nothing to refine.
    duet = copy.deepcopy(waveform_model).set_params(n_sources=2)
    np.testing.assert_array_equal(copy.deepcopy(duet).set_params(refine_passes=2)
                                  .separate(mixtures), duet.separate(mixtures))


@pytest.mark.parametrize("n_sources", [3, None])
def test_refine_passes_stream_in_bounded_memory_and_are_saved(waveform_model, tmp_path,
                                                              monkeypatch, n_sources):
    model = copy.deepcopy(waveform_model).set_params(n_sources=n_sources, refine_passes=2)
    hop = model.front_end_.hop_length
    audio = _trio(hop * 150 + 7)[0]
    # One segment: refined whole, as separate() refines a recording.
    whole = list(model.separate_stream(np.array_split(audio, 13), segment_frames=200))
    assert len(whole) == 1
    np.testing.assert_allclose(whole[0], model.separate(audio), rtol=0, atol=1e-5)
    # Several segments: each refined with one window of context on either side, no more,
    # in the order of the stream separated once.
    spans = []
    original = AudioSlots._refined_span

    def recording(self, mixture, sources):
        spans.append(mixture.size)
        return original(self, mixture, sources)

    monkeypatch.setattr(AudioSlots, "_refined_span", recording)
    streamed = list(model.separate_stream(np.array_split(audio, 13), segment_frames=20))
    segment, margin = 20 * hop, model.chunk_frames * hop
    assert len(streamed) == len(spans) == -(-audio.size // segment)
    assert max(spans) <= segment + 2 * margin < audio.size
    joined = np.concatenate(streamed, axis=1)
    np.testing.assert_allclose(joined.sum(axis=0), audio, atol=1e-4)
    once = np.concatenate(list(copy.deepcopy(model).set_params(refine_passes=0)
                               .separate_stream(np.array_split(audio, 13), segment_frames=20)),
                          axis=1)
    assert not np.allclose(joined, once, atol=1e-4)
    # A stretch's refined outputs follow the order of the outputs it was given.
    stretch = slice(0, segment + margin)
    first = original(model, audio[stretch], once[:, stretch])
    swapped = original(model, audio[stretch], once[[2, 0, 1], stretch])
    np.testing.assert_allclose(swapped, first[[2, 0, 1]], atol=1e-5)
    with pytest.raises(ValueError, match="blocks holds no samples"):
        list(model.separate_stream([]))  # as without refinement
    loaded = decomp.load(model.save(tmp_path / "refined.decomp"))
    assert loaded.refine_passes == 2
    np.testing.assert_array_equal(loaded.separate(audio), model.separate(audio))


@pytest.mark.parametrize("slots", [3, 4])
def test_blind_refine_passes_refine_the_recordings_that_sound_three(waveform_model, data,
                                                                   slots, monkeypatch):
    model = waveform_model
    if slots == 4:  # three sources of four slots: told three, the slots are merged first
        mixtures, sources = data
        model = AudioSlots(**{**SMALL, "n_slots": 4, "front_end": model.front_end},
                           max_epochs=1).fit(mixtures[:8], sources[:8])
    mixtures = _trio()
    blind = model.separate(mixtures)
    counted = []

    def count(energies):  # the first recording sounds three sources, the second two
        counted.append(energies)
        return np.array([3, 2])

    monkeypatch.setattr(audioslots_module, "count_sounding_outputs", count)
    refined = copy.deepcopy(model).set_params(refine_passes=2).separate(mixtures)
    np.testing.assert_allclose(counted[0], (blind.astype(np.float64) ** 2).sum(-1), rtol=1e-5)
    told = copy.deepcopy(model).set_params(n_sources=3, refine_passes=2).separate(mixtures[:1])
    np.testing.assert_allclose(refined[:1], told, atol=1e-5)
    np.testing.assert_array_equal(refined[1], blind[1])  # two sound: left as it was
    np.testing.assert_allclose(refined.sum(axis=1), mixtures, atol=1e-4)
    # More passes than a recording's count: one per source.
    monkeypatch.setattr(audioslots_module, "count_sounding_outputs",
                        lambda energies: np.array([3, 3]))
    if slots == 4:
        np.testing.assert_allclose(
            copy.deepcopy(model).set_params(refine_passes=4).separate(mixtures),
            copy.deepcopy(model).set_params(n_sources=3, refine_passes=3).separate(mixtures),
            atol=1e-6)


@pytest.mark.parametrize("params, match", [
    ({"refine_passes": 4}, r"at most n_slots_ \(3\) passes"),
    ({"refine_passes": 4, "n_sources": 3}, r"at most n_sources \(3\) passes"),
    ({"refine_passes": -1, "n_sources": 3}, "refine_passes"),
    ({"refine_passes": 1.5, "n_sources": 3}, "refine_passes"),
])
def test_bad_refine_passes(waveform_model, params, match):
    model = copy.deepcopy(waveform_model).set_params(**params)
    with pytest.raises(ValueError, match=match):
        model.separate(_trio()[0])
    with pytest.raises(ValueError, match=match):
        list(model.separate_stream([_trio()[0]]))


@pytest.mark.parametrize("value, match", [(4, r"at most n_slots_ \(3\)"),
                                          ("auto", "n_sources"), (0, "n_sources")])
def test_bad_n_sources(fitted, data, value, match):
    model = copy.deepcopy(fitted).set_params(n_sources=value)
    with pytest.raises(ValueError, match=match):
        model.transform(data[0][:1])
