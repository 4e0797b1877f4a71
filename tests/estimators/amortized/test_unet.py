"""MHUNet and SoundOfPixels: the shared U-Net, targets, curriculum, modes and contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import decomp
from decomp.audio import Spectrogram
from decomp.estimators.amortized.unet import (
    SOLOS_FRONT_END,
    MHUNet,
    SoundOfPixels,
    UNet,
    _per_class,
    binary_masks,
    curriculum_schedule,
    ratio_masks,
)

N_ITEMS, N_FRAMES, N_BINS = 24, 48, 33
CLASSES = np.array(["cello", "flute", "violin"])
SMALL = {"n_levels": 2, "base_channels": 4, "chunk_frames": 16, "batch_size": 8,
         "random_state": 0}


def _synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixtures of 2 (first half) or 3 sources: gamma activations x one template per class.

    Source slots are in random class order; a 2-source item's third slot is silent, ''.
    """
    rng = np.random.default_rng(seed)
    templates = rng.gamma(0.5, 1.0, size=(3, N_BINS))
    sources = np.zeros((N_ITEMS, 3, N_FRAMES, N_BINS), dtype=np.float32)
    labels = np.full((N_ITEMS, 3), "", dtype=object)
    for item in range(N_ITEMS):
        n_sources = 2 if item < N_ITEMS // 2 else 3
        classes = rng.permutation(3)[:n_sources]
        for slot, cls in enumerate(classes):
            activation = rng.gamma(1.0, 1.0, size=N_FRAMES) * (rng.random(N_FRAMES) < 0.7)
            activation[0] = 1.0  # never silent within a crop of the whole item
            sources[item, slot] = np.outer(activation, templates[cls])
            labels[item, slot] = CLASSES[cls]
    return sources.sum(axis=1), sources, labels.astype(str)


@pytest.fixture(scope="module")
def data():
    return _synthetic()


@pytest.fixture(scope="module")
def pit_model(data):
    mixtures, sources, _ = data
    return MHUNet(max_epochs=1, **SMALL).fit(mixtures, sources)


@pytest.fixture(scope="module")
def labelled_model(data):
    mixtures, sources, labels = data
    return MHUNet(max_epochs=1, **SMALL).fit(mixtures, sources, labels)


@pytest.fixture(scope="module")
def pixels_model(data):
    mixtures, sources, labels = data
    return SoundOfPixels(n_components=6, max_epochs=1, **SMALL).fit(mixtures, sources, labels)


def _batch(data, items=slice(0, 8), frames=slice(0, 16), labelled=False):
    mixtures, sources, labels = data
    batch = {"mixture": torch.as_tensor(mixtures[items, frames]),
             "sources": torch.as_tensor(sources[items, :, frames])}
    batch["present"] = batch["sources"].flatten(2).amax(dim=2) > 0
    if labelled:
        index = np.searchsorted(CLASSES, labels[items])
        index[labels[items] == ""] = -1
        batch["labels"] = torch.as_tensor(index, dtype=torch.int64)
    return batch


# ------------------------------------------------------------------------------ U-Net
@pytest.mark.parametrize("n_levels", [1, 2, 3])
def test_unet_output_matches_odd_input_size(n_levels):
    net = UNet(out_channels=2, n_levels=n_levels, base_channels=4, n_heads=3)
    out = net(torch.randn(2, 1, 17, 33))
    assert out.shape == (2, 3, 2, 17, 33)
    assert torch.isfinite(out).all()


def test_unet_heads_share_the_encoder_only():
    net = UNet(n_levels=2, base_channels=4, n_heads=2)
    assert len(net.encoder) == 2 and len(net.decoders) == 2
    out = net.eval()(torch.randn(1, 1, 8, 8))
    assert not torch.allclose(out[:, 0], out[:, 1])  # separately initialised decoders


def test_decode_each_decodes_every_map_alone_with_the_items_skips():
    torch.manual_seed(0)
    net = UNet(out_channels=2, n_levels=2, base_channels=4).eval()
    features = net.encode(torch.randn(2, 1, 17, 33))  # padded to 20 x 36
    deepest = torch.randn(2, 3, *features[-1].shape[1:])  # three maps per item
    with torch.no_grad():
        each = net.decode_each(features[:-1], deepest, 17, 33)
        assert each.shape == (2, 3, 2, 17, 33)
        for item in range(2):
            for output in range(3):
                alone = [level[item:item + 1] for level in features[:-1]]
                alone.append(deepest[item:item + 1, output])
                torch.testing.assert_close(each[item, output],
                                           net.decode(alone, 17, 33)[0, 0])


def test_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_levels"):
        UNet(n_levels=0)
    with pytest.raises(ValueError, match="batch, channels"):
        UNet(n_levels=1)(torch.zeros(1, 8, 8))


# ---------------------------------------------------------------------------- targets
def test_ratio_masks_are_complementary():
    sources = torch.tensor([[[[3.0, 0.0]]], [[[1.0, 0.0]]], [[[0.0, 0.0]]]]).transpose(0, 1)
    masks = ratio_masks(sources)  # (1, 3, 1, 2)
    assert torch.allclose(masks[0, :, 0, 0], torch.tensor([0.75, 0.25, 0.0]))
    assert torch.equal(masks[0, :, 0, 1], torch.zeros(3))  # silent bin: no source owns it


def test_binary_masks_mark_the_loudest_class():
    # Bins: class 0 loudest, class 1 loudest, silence, class 2 loudest; class 1 has two
    # sources whose sum beats class 0 in the second bin, though neither does alone.
    sources = torch.tensor([[[[3.0, 2.0, 0.0, 0.0]],    # class 0
                             [[1.0, 1.5, 0.0, 0.0]],    # class 1
                             [[0.0, 1.5, 0.0, 1.0]],    # class 1 again
                             [[0.0, 0.0, 0.0, 2.0]]]])  # class 2
    labels = torch.tensor([[0, 1, 1, 2]])
    per_class = _per_class(sources, labels, 4)  # class 3 is absent
    assert torch.equal(per_class[0, 1, 0], torch.tensor([1.0, 3.0, 0.0, 1.0]))
    masks = binary_masks(per_class)
    expected = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert torch.equal(masks[0, :, 0], expected)


def test_per_class_ignores_unused_slots():
    sources = torch.ones(1, 2, 1, 3)
    per_class = _per_class(sources, torch.tensor([[1, -1]]), 2)
    assert torch.equal(per_class[0, :, 0], torch.tensor([[0.0, 0, 0], [1, 1, 1]]))


# ------------------------------------------------------------------------- curriculum
def test_curriculum_schedule_ramps_from_two_to_max():
    assert [curriculum_schedule(e, 7, 20) for e in (1, 2, 10, 19, 20, 50)] == [2, 2, 4, 6, 7, 7]
    assert [curriculum_schedule(e, 7, 6) for e in range(1, 8)] == [2, 3, 4, 5, 6, 7, 7]
    assert curriculum_schedule(1, 7, 0) == 7  # disabled
    assert curriculum_schedule(1, 2, 20) == 2
    assert curriculum_schedule(1, 1, 20) == 1
    assert MHUNet(curriculum_epochs=5)._curriculum(1, 4) == 2
    assert MHUNet(curriculum_epochs=5)._curriculum(5, 4) == 4


class _Recording(MHUNet):
    """Records the most sources in any training crop, per epoch."""

    def _curriculum(self, epoch, max_sources):
        allowed = super()._curriculum(epoch, max_sources)
        self.seen.append([allowed, 0])
        return allowed

    def _training_losses(self, network, batch):
        if network.training:
            self.seen[-1][1] = max(self.seen[-1][1], int(batch["present"].sum(dim=1).max()))
        return super()._training_losses(network, batch)


def test_fit_sees_only_allowed_items_early(data):
    mixtures, sources, _ = data
    model = _Recording(curriculum_epochs=3, max_epochs=3, validation_fraction=0, **SMALL)
    model.seen = []
    model.fit(mixtures, sources)
    assert [allowed for allowed, _ in model.seen] == [2, 2, 3]
    assert [most for _, most in model.seen] == [2, 2, 3]


# ---------------------------------------------------------------------------- MHUNet
def test_mhunet_transform_shapes(pit_model, data):
    mixtures = data[0]
    assert pit_model.n_slots_ == 3 and pit_model.classes_ is None
    single = pit_model.transform(mixtures[0])
    assert isinstance(single, np.ndarray) and single.shape == (3, N_FRAMES, N_BINS)
    assert pit_model.transform(mixtures[:4]).shape == (4, 3, N_FRAMES, N_BINS)
    tensor = pit_model.transform(torch.as_tensor(mixtures[:2]))
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 3, N_FRAMES, N_BINS)
    np.testing.assert_allclose(tensor.numpy(), pit_model.transform(mixtures[:2]), atol=1e-6)


def test_mhunet_masks_partition_the_mixture(pit_model, data):
    mixtures = data[0][:2]
    estimates = pit_model.transform(mixtures)
    np.testing.assert_allclose(estimates.sum(axis=1), mixtures, rtol=1e-4, atol=1e-5)
    assert pit_model._permutation_invariant


def test_mhunet_pit_loss_is_invariant_to_target_order(pit_model, data):
    network = pit_model._get_network().eval()
    batch = _batch(data)
    permuted = dict(batch, sources=batch["sources"][:, [2, 0, 1]],
                    present=batch["present"][:, [2, 0, 1]])
    with torch.no_grad():
        loss = pit_model._training_losses(network, batch)["loss"]
        loss_permuted = pit_model._training_losses(network, permuted)["loss"]
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, loss_permuted)


@pytest.mark.parametrize("kind", ["l1", "bce"])
def test_one_step_lowers_the_mhunet_loss(data, kind):
    mixtures, sources, _ = data
    model = MHUNet(loss=kind, max_epochs=0, **SMALL).fit(mixtures, sources)
    network = model._get_network().train()
    batch = _batch(data)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    before = model._training_losses(network, batch)["loss"]
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = model._training_losses(network, batch)["loss"]
    assert float(after) < float(before.detach())


def test_mhunet_labels_mode_has_one_head_per_class(labelled_model, data):
    mixtures = data[0][:3]
    assert labelled_model.n_slots_ == 3
    assert list(labelled_model.classes_) == list(CLASSES)
    assert not labelled_model._permutation_invariant
    everything = labelled_model.transform(mixtures)
    chosen = labelled_model.transform(mixtures, labels=["violin", "cello"])
    np.testing.assert_allclose(chosen, everything[:, [2, 0]], atol=1e-6)
    per_item = labelled_model.transform(mixtures, labels=[["flute"], ["violin"], ["cello"]])
    np.testing.assert_allclose(per_item[:, 0], everything[[0, 1, 2], [1, 2, 0]], atol=1e-6)


def test_mhunet_labels_mode_loss_follows_the_labels(labelled_model, data):
    network = labelled_model._get_network().eval()
    batch = _batch(data, labelled=True)
    order = [2, 0, 1]
    moved = dict(batch, sources=batch["sources"][:, order], present=batch["present"][:, order],
                 labels=batch["labels"][:, order])
    relabelled = dict(batch, labels=batch["labels"][:, order])
    with torch.no_grad():
        loss = labelled_model._training_losses(network, batch)["loss"]
        # Sources moved with their labels train the same heads: same loss.
        torch.testing.assert_close(loss, labelled_model._training_losses(network, moved)["loss"])
        # Sources assigned to other classes train other heads: another loss.
        other = labelled_model._training_losses(network, relabelled)["loss"]
    assert abs(float(other) - float(loss)) > 1e-6


def test_mhunet_refuses_labels_when_fitted_without(pit_model, data):
    with pytest.raises(ValueError, match="without labels"):
        pit_model.transform(data[0][:1], labels=["cello"])


def test_mhunet_unknown_label(labelled_model, data):
    with pytest.raises(ValueError, match="unknown labels"):
        labelled_model.transform(data[0][:1], labels=["tuba"])


# --------------------------------------------------------------------- SoundOfPixels
def test_pixels_transform_shapes(pixels_model, data):
    mixtures = data[0]
    assert pixels_model.n_slots_ == 3 and not pixels_model._permutation_invariant
    single = pixels_model.transform(mixtures[0], labels=["flute"])
    assert isinstance(single, np.ndarray) and single.shape == (1, N_FRAMES, N_BINS)
    batch = pixels_model.transform(mixtures[:4], labels=["violin", "cello", "flute"])
    assert batch.shape == (4, 3, N_FRAMES, N_BINS)
    tensor = pixels_model.transform(torch.as_tensor(mixtures[:4]),
                                    labels=["violin", "cello", "flute"])
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy(), batch, atol=1e-6)
    # A class's estimate does not depend on what else is requested alongside it.
    np.testing.assert_allclose(pixels_model.transform(mixtures[:4], labels=["cello"])[:, 0],
                               batch[:, 1], atol=1e-6)
    assert np.all(batch <= mixtures[:4, None] + 1e-6)  # masks lie in [0, 1]


def test_pixels_normalized_masks_share_the_mixture_among_the_requested_labels(
        pixels_model, data):
    mixtures = data[0][:4]
    requested = ["violin", "cello"]
    raw = pixels_model.transform(mixtures, labels=requested)
    normalized = clone(pixels_model).set_params(normalize_masks=True)
    normalized.__dict__.update({key: value for key, value in vars(pixels_model).items()
                                if key.endswith("_")})  # the same fitted network
    shared = normalized.transform(mixtures, labels=requested)
    assert shared.shape == raw.shape
    np.testing.assert_allclose(shared.sum(axis=1), mixtures, rtol=1e-4, atol=1e-5)
    # Each class keeps its raw mask's share: the ratio of the two estimates is unchanged.
    ratio = raw[:, 0] / np.maximum(raw.sum(axis=1), 1e-12)
    inside = mixtures > 1e-3
    np.testing.assert_allclose(shared[:, 0][inside] / mixtures[inside], ratio[inside],
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(normalized.transform(mixtures, labels=["flute"])[:, 0],
                               mixtures, rtol=1e-5, atol=1e-6)


def test_pixels_requires_labels(data, pixels_model):
    mixtures, sources, _ = data
    with pytest.raises(ValueError, match="needs labels"):
        SoundOfPixels(**SMALL).fit(mixtures, sources)
    with pytest.raises(ValueError, match="pass labels"):
        pixels_model.transform(mixtures[0])
    with pytest.raises(ValueError, match="unknown labels"):
        pixels_model.transform(mixtures[0], labels=["tuba"])
    with pytest.raises(ValueError, match="labels must"):
        pixels_model.transform(mixtures[:2], labels=[["cello"]] * 3)


def test_pixels_loss_scores_present_and_absent_queries(pixels_model, data):
    network = pixels_model._get_network().eval()
    batch = _batch(data, labelled=True)  # items 0-7 have 2 of 3 classes: absent queries
    with torch.no_grad():
        losses = pixels_model._training_losses(network, batch)
    expected = losses["present"] + pixels_model.absent_weight * losses["absent"]
    torch.testing.assert_close(losses["loss"], expected)
    assert float(losses["absent"]) > 0


def test_one_step_lowers_the_pixels_loss(data):
    mixtures, sources, labels = data
    model = SoundOfPixels(n_components=6, max_epochs=0, **SMALL).fit(mixtures, sources, labels)
    network = model._get_network().train()
    batch = _batch(data, labelled=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    before = model._training_losses(network, batch)["loss"]
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = model._training_losses(network, batch)["loss"]
    assert float(after) < float(before.detach())


# ------------------------------------------------------------------- shared contracts
@pytest.mark.parametrize("fixture", ["pit_model", "labelled_model", "pixels_model"])
def test_save_load_round_trip(fixture, request, tmp_path, data):
    model = request.getfixturevalue(fixture)
    labels = None if fixture == "pit_model" else ["flute", "cello"]
    path = model.save(tmp_path / "model.pt")
    loaded = decomp.load(path)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    np.testing.assert_allclose(loaded.transform(data[0][:2], labels=labels),
                               model.transform(data[0][:2], labels=labels), atol=1e-6)


def test_default_front_end_is_solos_like(pit_model):
    assert pit_model.front_end is None and pit_model.front_end_ == SOLOS_FRONT_END
    assert SOLOS_FRONT_END.frequency_scale == "log" and SOLOS_FRONT_END.kind == "linear"


def _waveforms(n_items: int = 6, n_samples: int = 1600):
    rng = np.random.default_rng(1)
    t = np.arange(n_samples) / 8000
    sources = np.zeros((n_items, 2, n_samples), dtype=np.float32)
    labels = np.empty((n_items, 2), dtype="<U6")
    for item in range(n_items):
        for slot, cls in enumerate(rng.permutation(3)[:2]):
            envelope = np.interp(t, [0, t[-1]], rng.uniform(0.2, 1.0, 2))
            sources[item, slot] = envelope * np.sin(2 * np.pi * [300, 1100, 2500][cls] * t)
            labels[item, slot] = CLASSES[cls]
    return sources.sum(axis=1), sources, labels


def test_separate_waveforms():
    mixtures, sources, labels = _waveforms()
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    mhunet = MHUNet(front_end=front_end, max_epochs=1, **SMALL).fit(mixtures, sources)
    assert mhunet.n_features_in_ == 33
    single = mhunet.separate(mixtures[0])
    assert single.shape == (2, mixtures.shape[1])
    np.testing.assert_allclose(single.sum(axis=0), mixtures[0], atol=1e-4)  # masks sum to 1
    batch = mhunet.separate(torch.as_tensor(mixtures[:3]))
    assert isinstance(batch, torch.Tensor) and batch.shape == (3, 2, mixtures.shape[1])

    pixels = SoundOfPixels(n_components=4, front_end=front_end, max_epochs=1, **SMALL)
    pixels.fit(mixtures, sources, labels)
    assert pixels.separate(mixtures[0], labels=["violin"]).shape == (1, mixtures.shape[1])
    assert pixels.separate(mixtures[:3], labels=["cello", "flute"]).shape == \
        (3, 2, mixtures.shape[1])


def test_front_end_must_give_magnitudes(data):
    mixtures, sources, labels = data
    with pytest.raises(ValueError, match="magnitudes"):
        MHUNet(front_end=Spectrogram(kind="log"), **SMALL).fit(mixtures, sources)
    with pytest.raises(ValueError, match="magnitudes"):
        SoundOfPixels(front_end=Spectrogram(kind="linear", db_normalization=True),
                      **SMALL).fit(mixtures, sources, labels)


@pytest.mark.parametrize("estimator", [MHUNet, SoundOfPixels])
def test_bad_inputs(estimator, data, request):
    mixtures, sources, labels = data
    model = estimator(**SMALL)
    with pytest.raises(NotFittedError):
        model.transform(mixtures[0], labels=["cello"])
    with pytest.raises(ValueError, match="sources must have shape"):
        model.fit(mixtures, sources[:-1], labels[:-1])
    with pytest.raises(ValueError, match="mixtures must be"):
        model.fit(mixtures[..., None], sources, labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        model.fit(mixtures, sources, labels[:, :2])
    bad = mixtures.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        model.fit(bad, sources, labels)
    with pytest.raises(ValueError, match="n_levels"):
        estimator(n_levels=0).fit(mixtures, sources, labels)

    fitted = request.getfixturevalue("labelled_model" if estimator is MHUNet else "pixels_model")
    with pytest.raises(ValueError):
        fitted.transform(mixtures[0, :, :-1], labels=["cello"])  # wrong bin count
    with pytest.raises(ValueError):
        fitted.transform(mixtures[0, 0], labels=["cello"])  # rank 1
    with pytest.raises(ValueError):
        fitted.transform(sources[:2], labels=["cello"])  # rank 4
    nan = mixtures[0].copy()
    nan[3, 3] = np.nan
    with pytest.raises(ValueError):
        fitted.transform(nan, labels=["cello"])


def test_mhunet_rejects_bad_parameters(data):
    with pytest.raises(ValueError, match="loss"):
        MHUNet(loss="mse").fit(*data[:2])
    with pytest.raises(ValueError, match="curriculum_epochs"):
        MHUNet(curriculum_epochs=-1).fit(*data[:2])
    with pytest.raises(ValueError, match="absent_weight"):
        SoundOfPixels(absent_weight=-1.0).fit(*data)


@pytest.mark.parametrize("estimator", [MHUNet, SoundOfPixels])
def test_clone_keeps_parameters(estimator):
    model = estimator(n_levels=3, base_channels=8, chunk_frames=32, random_state=4)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert copy.n_levels == 3 and copy.front_end is None
    assert not hasattr(copy, "network_state_")


@pytest.mark.parametrize("labelled", [False, True])
def test_separate_stream_equals_separate(data, labelled):
    mixtures, sources, labels = data
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=16, kind="linear")
    model = MHUNet(max_epochs=1, **{**SMALL, "front_end": front_end, "batch_size": 2})
    model.fit(mixtures, sources, labels if labelled else None)
    request = ["flute", "cello"] if labelled else None
    audio = (0.3 * np.random.default_rng(4).standard_normal(16 * 100 + 3)).astype(np.float32)
    streamed = list(model.separate_stream(np.array_split(audio, 9), request, segment_frames=24))
    assert len(streamed) > 3
    joined = np.concatenate(streamed, axis=1)
    np.testing.assert_allclose(joined, model.separate(audio, request), rtol=0, atol=1e-5)
