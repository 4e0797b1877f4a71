"""Separators trained on a MixtureStream: epochs of steps, fixed validation, resume."""

from __future__ import annotations

import argparse
import itertools
import shutil
import types

import numpy as np
import pytest
import torch

from decomp import NMF, SeparatorEnsemble
from decomp.audio import Spectrogram
from decomp.data import MixtureStream
from decomp.data.soundfonts import available_soundfonts
from decomp.estimators.amortized import AudioSlots, MHUNet
from decomp.separation import NMFSeparator
from tests.conftest import BENCHMARKS, load_benchmark

FRONT_END = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
MODELS = {
    "MHUNet": (MHUNet, dict(n_levels=2, base_channels=4, curriculum_epochs=0)),
    "AudioSlots": (AudioSlots, dict(n_slots=2, patch_frames=4, patch_bins=11, embed_dim=16,
                                    n_layers=1, n_heads=2, decoder_hidden=16)),
}


def _stream(random_state: int = 0, **mixing) -> MixtureStream:
    """Three tonal classes, two stems each, at 8 kHz: a stream of 2-source mixtures
    (``mixing``: other MixtureStream settings, e.g. ``max_sources=3``)."""
    rng = np.random.default_rng(7)
    time = np.arange(4000) / 8000
    stems, labels = [], []
    for label, frequency in (("low", 220.0), ("mid", 880.0), ("high", 2200.0)):
        for _ in range(2):
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 3) * time) ** 2
            stems.append(0.3 * envelope * np.sin(2 * np.pi * frequency * time
                                                 + rng.uniform(0, 2 * np.pi)))
            labels.append(label)
    return MixtureStream(np.array(stems, dtype=np.float32), labels, sample_rate=8000,
                         crop_samples=1024, random_state=random_state, **mixing)


def _model(name: str, **params):
    cls, architecture = MODELS[name]
    settings = dict(front_end=FRONT_END, chunk_frames=16, batch_size=4, steps_per_epoch=3,
                    max_epochs=2, validation_fraction=0.5, patience=10, learning_rate=3e-3,
                    device="cpu", random_state=0)
    return cls(**{**architecture, **settings, **params})


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """Mixture and source spectrograms (4, 16, 33) and (4, 2, 16, 33): fixed arrays, which
    a model on a waveform loss refuses."""
    sources = np.random.default_rng(0).gamma(1.0, 1.0, size=(4, 2, 16, 33)).astype(np.float32)
    return sources.sum(axis=1), sources


def _waveform_settings(**architecture) -> dict:
    """Training settings of the waveform-loss tests of models outside ``MODELS``: ten
    epochs at this learning rate lower their validation loss by more than 1 dB."""
    return dict(architecture, front_end=FRONT_END, chunk_frames=16, batch_size=4,
                steps_per_epoch=3, validation_fraction=0.5, patience=20, learning_rate=1e-2,
                device="cpu", random_state=0)


def _untrained_and_trained(cls, settings: dict) -> tuple:
    """``cls(**settings)`` fitted on ``_stream()`` for 0 and for 10 epochs."""
    stream = _stream()
    return (cls(**settings, max_epochs=0).fit(stream),
            cls(**settings, max_epochs=10).fit(stream))


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_on_a_stream_is_reproducible_and_resumes(name, tmp_path):
    stream = _stream()
    model = _model(name).fit(stream)
    assert model.n_epochs_ == 2 and model.history_["train_loss"].shape == (2,)
    assert np.isfinite(model.history_["validation_loss"]).all()
    assert model.n_train_items_ == 12 and model.n_validation_items_ == 6  # 0.5 * 3 * 4
    assert list(model.classes_) == ["high", "low", "mid"]
    assert stream.epoch == 0  # the caller's stream is left as it was
    mixture = FRONT_END(torch.as_tensor(next(iter(stream)).mixture))
    estimates = model.transform(mixture.numpy(), **({"labels": ["low", "mid"]}
                                                     if name == "MHUNet" else {}))
    assert estimates.shape == (2, *mixture.shape) and np.isfinite(estimates).all()

    again = _model(name).fit(_stream())
    for key, value in model.network_state_.items():
        torch.testing.assert_close(again.network_state_[key], value)
    np.testing.assert_array_equal(again.history_["train_loss"], model.history_["train_loss"])

    path = tmp_path / "run.ckpt"
    _model(name, checkpoint=path, max_epochs=1).fit(_stream())
    resumed = _model(name, checkpoint=path).fit(_stream())
    assert resumed.n_epochs_ == 2
    np.testing.assert_allclose(resumed.history_["validation_loss"],
                               model.history_["validation_loss"], rtol=1e-6)
    for key, value in model.network_state_.items():
        torch.testing.assert_close(resumed.network_state_[key], value)
    with pytest.raises(ValueError, match="other data or settings"):
        _model(name, checkpoint=path).fit(_stream(random_state=1))


def test_stream_labels_select_the_class_heads_and_another_stream_seed_changes_the_batches():
    model = _model("MHUNet").fit(_stream())
    assert model.n_slots_ == 3  # one head per class of the stream
    other = _model("MHUNet").fit(_stream(random_state=5))
    assert not np.array_equal(other.history_["train_loss"], model.history_["train_loss"])


def test_stream_without_validation_selects_on_the_training_loss():
    model = _model("AudioSlots", validation_fraction=0).fit(_stream())
    np.testing.assert_allclose(model.history_["validation_loss"], model.history_["train_loss"],
                               rtol=1e-6)
    assert np.isnan(model.history_["initial_validation_loss"]).all()
    assert model.n_validation_items_ == 0


def test_stream_refusals():
    with pytest.raises(ValueError, match="sample rate"):
        _model("MHUNet", front_end=Spectrogram(sample_rate=16000, n_fft=64, hop_length=32,
                                               kind="linear")).fit(_stream())
    with pytest.raises(ValueError, match="MixtureStream alone"):
        _model("AudioSlots").fit(_stream(), np.zeros((1, 2, 1024)))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        _model("AudioSlots", steps_per_epoch=0).fit(_stream())


def test_one_dataloader_worker_gives_the_batches_of_none():
    # The stream seeds each worker with its id, so one worker mixes what the main
    # process would (docs/guide/streams.md, Determinism).
    inline = _model("AudioSlots", max_epochs=1).fit(_stream())
    worker = _model("AudioSlots", max_epochs=1, num_workers=1).fit(_stream())
    for key, value in inline.network_state_.items():
        torch.testing.assert_close(worker.network_state_[key], value)


# --------------------------------------------------------------------- waveform loss
def _blind(**params) -> MHUNet:
    return _model("MHUNet", loss="si_sdr", heads="sources", **params)


def test_si_sdr_loss_trains_blind_heads_that_learn_to_separate():
    stream = _stream()
    untrained = _blind(max_epochs=0).fit(stream)
    model = _blind(max_epochs=12, learning_rate=1e-2).fit(stream)
    assert model.classes_ is None and model.n_slots_ == 2  # labels ignored: one head per slot
    assert model._permutation_invariant
    # The validation loss is the mean negative SI-SDR (dB) of the matched heads: it falls.
    assert model.best_validation_loss_ < untrained.best_validation_loss_ - 1.0
    example = next(iter(_stream(random_state=9)))
    estimates = model.separate(example.mixture)
    assert estimates.shape == (2, example.mixture.size)
    # Masks are normalised, so the heads partition the mixture.
    np.testing.assert_allclose(estimates.sum(axis=0), example.mixture, atol=1e-4)
    with pytest.raises(ValueError, match="classes"):
        model.separate(example.mixture, labels=["low"])


def test_si_sdr_loss_with_class_heads_and_resume(tmp_path):
    model = _model("MHUNet", loss="si_sdr", heads="classes").fit(_stream())
    assert list(model.classes_) == ["high", "low", "mid"] and model.n_slots_ == 3
    assert np.isfinite(model.history_["validation_loss"]).all()
    path = tmp_path / "run.ckpt"
    _model("MHUNet", loss="si_sdr", heads="classes", checkpoint=path, max_epochs=1).fit(_stream())
    resumed = _model("MHUNet", loss="si_sdr", heads="classes", checkpoint=path).fit(_stream())
    for key, value in model.network_state_.items():
        torch.testing.assert_close(resumed.network_state_[key], value)


def test_si_sdr_loss_needs_a_stream_with_crops_of_a_chunk():
    mixtures, sources = _arrays()
    with pytest.raises(ValueError, match="MixtureStream"):
        _blind().fit(mixtures, sources)
    with pytest.raises(ValueError, match=r"shorter than one training crop of 64 frames .*"
                                         r"lower chunk_frames\.$"):
        _blind(chunk_frames=64).fit(_stream())  # 63 hops of 32 > 1024 samples
    with pytest.raises(ValueError, match="labels"):
        _model("MHUNet", heads="classes").fit(mixtures, sources)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_separator_takes_a_validation_stream(name):
    default = _model(name, max_epochs=1).fit(_stream())
    other = _model(name, max_epochs=1).fit(_stream(), validation=_stream(random_state=11))
    assert other.history_["validation_loss"][0] != default.history_["validation_loss"][0]


def test_a_validation_stream_replaces_the_held_out_copy():
    stream, other = _stream(), _stream(random_state=11)
    model = _model("MHUNet", max_epochs=1).fit(stream, validation=other)
    default = _model("MHUNet", max_epochs=1).fit(_stream())
    # Same training batches, other validation mixtures: the same train loss, another
    # validation loss.
    np.testing.assert_array_equal(model.history_["train_loss"], default.history_["train_loss"])
    assert model.history_["validation_loss"][0] != default.history_["validation_loss"][0]
    assert other.epoch == 0
    with pytest.raises(TypeError, match="MixtureStream"):
        _model("MHUNet").fit(stream, validation=[1, 2])
    rng = np.random.default_rng(0)
    two_classes = MixtureStream(rng.standard_normal((2, 4000)).astype(np.float32),
                                ["low", "mid"], sample_rate=8000, crop_samples=1024)
    with pytest.raises(ValueError, match="classes and sample rate"):
        _model("MHUNet").fit(stream, validation=two_classes)
    with pytest.raises(ValueError, match="only when it trains on a MixtureStream"):
        _model("MHUNet").fit(*_arrays(), validation=stream)


def test_audioslots_learns_with_the_waveform_loss():
    stream = _stream()
    untrained = _model("AudioSlots", separation_loss="si_sdr", max_epochs=0).fit(stream)
    model = _model("AudioSlots", separation_loss="si_sdr", max_epochs=10,
                   learning_rate=1e-2).fit(stream)
    assert "train_separation" in model.history_  # the generation term is logged apart
    assert model.best_validation_loss_ < untrained.best_validation_loss_ - 1.0
    example = next(iter(_stream(random_state=9)))
    estimates = model.separate(example.mixture)
    np.testing.assert_allclose(estimates.sum(axis=0), example.mixture, atol=1e-4)
    with pytest.raises(ValueError, match="MixtureStream"):
        _model("AudioSlots", separation_loss="si_sdr").fit(*_arrays())


def test_blockvae_learns_with_the_waveform_loss():
    from decomp.estimators.amortized import BlockVAE

    settings = _waveform_settings(n_blocks=3, block_size=4, hidden_size=16,
                                  separation_loss="si_sdr")
    untrained, model = _untrained_and_trained(BlockVAE, settings)
    # The validation loss is the soft-matched mean cost in dB (negative SI-SDR; a silent
    # block against its padded silent target pays its level): it falls.
    assert model.best_validation_loss_ < untrained.best_validation_loss_ - 1.0
    assert {"train_reconstruction", "train_kl", "train_hungarian"} <= set(model.history_)
    # The soft matching never scores below the best hard one (Sinkhorn tolerance apart).
    assert np.all(model.history_["train_reconstruction"]
                  >= model.history_["train_hungarian"] - 1e-3)
    example = next(iter(_stream(random_state=9)))
    estimates = model.separate(example.mixture)
    assert estimates.shape == (3, example.mixture.size)
    np.testing.assert_allclose(estimates.sum(axis=0), example.mixture, atol=1e-4)
    with pytest.raises(ValueError, match="MixtureStream"):
        BlockVAE(**settings).fit(*_arrays())
    with pytest.raises(ValueError, match="separation_loss"):
        BlockVAE(**{**settings, "separation_loss": "l1"}).fit(_stream())


def test_sound_of_pixels_learns_with_the_waveform_loss():
    from decomp.estimators.amortized import SoundOfPixels

    settings = _waveform_settings(n_components=4, n_levels=2, base_channels=4, loss="si_sdr")
    untrained, model = _untrained_and_trained(SoundOfPixels, settings)
    assert model.best_validation_loss_ < untrained.best_validation_loss_ - 1.0
    assert {"train_present", "train_absent"} <= set(model.history_)
    example = next(iter(_stream(random_state=9)))
    assert model.separate(example.mixture, labels=["low", "high"]).shape == (
        2, example.mixture.size)


# ------------------------------------------------------------------ source counting
def test_count_sources_learns_the_count_and_keeps_that_many_heads():
    # Three heads for 2-3 sources: one head has no source in every 2-source mixture.
    stream = _stream(max_sources=3)
    model = _model("MHUNet", loss="si_sdr", heads="sources", count_sources=True,
                   max_epochs=6, learning_rate=1e-2).fit(stream)
    assert model.n_slots_ == 3 and "count.weight" in model.network_state_
    assert {"train_separation", "train_count"} <= set(model.history_)
    assert model.history_["train_count"][-1] < model.history_["train_count"][0]
    network = model._get_network().eval()
    examples = list(itertools.islice(iter(stream), 8))
    mixture = model.front_end_(torch.as_tensor(np.stack([e.mixture for e in examples])))
    with torch.no_grad():
        masks, count_logits = model._counted_masks(network, mixture)
        logits, _ = network(mixture)
        two, _ = model._counted_masks(network, mixture, torch.full((8,), 2))
    assert count_logits.shape == (8, 3) and masks.shape[:2] == (8, 3)
    share = (torch.sigmoid(logits) * mixture[:, None]).sum(dim=(2, 3))
    order = share.argsort(dim=1, descending=True)  # heads by the magnitude they take
    # Inference: the head ranked r is weighted by P(count > r) before the normalisation.
    probabilities = count_logits.softmax(dim=1)
    at_least = torch.stack([probabilities[:, 0:].sum(1), probabilities[:, 1:].sum(1),
                            probabilities[:, 2:].sum(1)], dim=1)
    weighted = torch.sigmoid(logits) * torch.zeros_like(share).scatter(
        1, order, at_least)[:, :, None, None]
    torch.testing.assert_close(masks, weighted / weighted.sum(dim=1, keepdim=True),
                               rtol=1e-5, atol=1e-6)
    # With a given count of 2, the two heads that take the most of the mixture stay.
    expected = torch.zeros_like(share, dtype=torch.bool).scatter(1, order[:, :2], True)
    torch.testing.assert_close(two.flatten(2).amax(dim=2) > 0, expected)
    sums = two.sum(dim=1)
    torch.testing.assert_close(sums[mixture > 0], torch.ones_like(sums[mixture > 0]))
    estimates = model.separate(examples[0].mixture)
    assert estimates.shape == (3, examples[0].mixture.size)
    np.testing.assert_allclose(estimates.sum(axis=0), examples[0].mixture, atol=1e-4)
    # A known number of sources keeps that many heads at inference.
    model.set_params(n_sources=2)
    with torch.no_grad():
        torch.testing.assert_close(model._masks(network, mixture), two)
    known = model.separate(examples[0].mixture)
    assert (np.abs(known).max(axis=1) > 0).sum() == 2
    np.testing.assert_allclose(known.sum(axis=0), examples[0].mixture, atol=1e-4)
    with pytest.raises(ValueError, match=r"at most n_slots_ \(3\)"):
        model.set_params(n_sources=4).separate(examples[0].mixture)


def test_count_sources_needs_blind_heads_and_the_waveform_loss():
    stream = _stream()
    with pytest.raises(ValueError, match="needs count_sources=True"):
        _blind(max_epochs=0, n_sources=2).fit(stream).separate(next(iter(stream)).mixture)
    with pytest.raises(ValueError, match="heads='sources'"):
        _model("MHUNet", loss="si_sdr", count_sources=True).fit(_stream())  # auto: classes
    with pytest.raises(ValueError, match="waveform loss"):
        _model("MHUNet", loss="bce", heads="sources", count_sources=True).fit(_stream())


def test_pit_waveform_loss_can_ignore_slots_without_a_source():
    from decomp.estimators.amortized.objectives import pit_waveform_loss
    from decomp.losses import separation_cost

    front_end = FRONT_END
    rng = np.random.default_rng(3)
    sources = torch.tensor(rng.standard_normal((2, 3, 1024)) * 0.1, dtype=torch.float32)
    sources[0, 2] = 0  # item 0 has two sources, item 1 three
    mixture = sources.sum(dim=1)
    n_frames = front_end(mixture).shape[1]
    masks = torch.tensor(rng.uniform(0.05, 1.0, (2, 3, n_frames, front_end(mixture).shape[2])),
                         dtype=torch.float32)
    masks = masks / masks.sum(dim=1, keepdim=True)
    loss, permutation = pit_waveform_loss(masks, mixture, sources, front_end, absent="ignore")
    estimates = front_end._apply_masks(mixture, masks)
    matched = torch.stack([separation_cost(estimates[item, permutation[item]], sources[item],
                                           mixture[item]) for item in range(2)])
    # Item 0's silent target costs nothing and is not counted.
    expected = (matched[0, :2].mean() + matched[1].mean()) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    silence, _ = pit_waveform_loss(masks, mixture, sources, front_end)
    assert not torch.isclose(silence, loss)
    with pytest.raises(ValueError, match="absent must be"):
        pit_waveform_loss(masks, mixture, sources, front_end, absent="zero")


def test_pit_waveform_loss_scores_a_silent_slot_at_the_silence_floor():
    from decomp.estimators.amortized.objectives import pit_waveform_loss

    sources = torch.tensor(np.random.default_rng(4).standard_normal((1, 1, 1024)) * 0.1,
                           dtype=torch.float32)
    mixture = sources[:, 0]
    spectrogram = FRONT_END(mixture)
    # Slot 0 passes the mixture (its one source), slot 1 is exactly silent.
    masks = torch.zeros(1, 2, *spectrogram.shape[1:])
    masks[:, 0] = 1.0
    losses = {floor: pit_waveform_loss(masks, mixture, sources, FRONT_END,
                                       silence_floor_db=floor)
              for floor in (-30.0, -10.0)}
    for _, permutation in losses.values():
        assert permutation.tolist() == [[0, 1]]
    # The silent slot costs the floor itself, and the loss is the mean over both slots.
    torch.testing.assert_close(losses[-10.0][0] - losses[-30.0][0], torch.tensor(10.0))
    assert losses[-30.0][0] < -10.0  # the passed source alone is near perfect


@pytest.mark.parametrize("case", ["audioslots", "blind", "class heads", "sop", "blockvae"])
def test_every_waveform_loss_uses_the_models_silence_floor(case, monkeypatch):
    from decomp.estimators.amortized import BlockVAE, SoundOfPixels, blockvae, objectives, unet

    floors = []

    def recording(function):
        def wrapper(*args, silence_floor_db, **kwargs):
            floors.append(silence_floor_db)
            return function(*args, silence_floor_db=silence_floor_db, **kwargs)
        return wrapper

    for module, name in ((objectives, "pairwise_separation_cost"), (unet, "separation_cost"),
                         (blockvae, "pairwise_separation_cost")):
        monkeypatch.setattr(module, name, recording(getattr(module, name)))
    settings = dict(max_epochs=1, silence_floor_db=-12.5)
    model = {
        "audioslots": lambda: _model("AudioSlots", separation_loss="si_sdr", n_slots=3,
                                     **settings),
        "blind": lambda: _blind(**settings),
        "class heads": lambda: _model("MHUNet", loss="si_sdr", heads="classes", **settings),
        "sop": lambda: SoundOfPixels(**_waveform_settings(
            n_components=4, n_levels=2, base_channels=4, loss="si_sdr"), **settings),
        "blockvae": lambda: BlockVAE(**_waveform_settings(
            n_blocks=3, block_size=4, hidden_size=16, separation_loss="si_sdr"), **settings),
    }[case]()
    model.fit(_stream())
    assert floors and set(floors) == {-12.5}  # training and validation alike
    # The floor is a level below the mixture's (0 dB): 0 and above are refused.
    with pytest.raises(ValueError, match="silence_floor_db"):
        model.set_params(silence_floor_db=0.0).fit(_stream())


# ------------------------------------------------------------------------ fine-tuning
def test_init_from_starts_the_training_at_a_fitted_models_weights():
    stream = _stream(max_sources=3)
    base = _blind(max_epochs=2).fit(stream)
    before = {key: value.clone() for key, value in base.network_state_.items()}
    # No epoch: the weights are the base's; its validation loss is where training starts.
    copy = _blind(max_epochs=0).fit(stream, init_from=base)
    assert copy.history_["initial_validation_loss"][0] == pytest.approx(
        base.best_validation_loss_, rel=1e-5)
    # A layer the base lacks (the count of count_sources=True) starts at random.
    counting = _blind(max_epochs=0, count_sources=True).fit(stream, init_from=base)
    assert set(counting.network_state_) - set(before) == {"count.weight", "count.bias"}
    for key, value in before.items():
        torch.testing.assert_close(counting.network_state_[key], value)
    tuned = _blind(max_epochs=2, count_sources=True).fit(stream, init_from=base)
    assert not torch.equal(tuned.network_state_["unet.decoders.0.output.weight"],
                           before["unet.decoders.0.output.weight"])
    for key, value in before.items():  # the base itself is left as it was
        torch.testing.assert_close(base.network_state_[key], value)


def test_init_from_refusals():
    stream = _stream(max_sources=3)
    base = _blind(max_epochs=0).fit(stream)
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        _blind().fit(stream, init_from=_blind())
    with pytest.raises(TypeError, match="takes a fitted MHUNet; got AudioSlots"):
        _blind().fit(stream, init_from=_model("AudioSlots", max_epochs=0).fit(_stream()))
    with pytest.raises(ValueError, match="shapes that differ"):
        _blind(base_channels=8).fit(stream, init_from=base)
    with pytest.raises(ValueError, match="layers it has that this network lacks"):
        _blind().fit(stream, init_from=_blind(max_epochs=0, count_sources=True).fit(stream))
    other = Spectrogram(sample_rate=8000, n_fft=128, hop_length=32, kind="linear")
    with pytest.raises(ValueError, match="another front end"):
        _blind(front_end=other).fit(stream, init_from=base)


def test_audioslots_fine_tune_may_change_the_number_of_slots():
    base = _model("AudioSlots", max_epochs=0).fit(_stream())
    # No weight depends on n_slots: a 3-slot fine-tune of the 2-slot model starts from all
    # of them; only the fixed evaluation noise (one row per slot) is drawn for 3 slots.
    tuned = _model("AudioSlots", n_slots=3, max_epochs=0).fit(_stream(max_sources=3),
                                                               init_from=base)
    assert set(tuned.network_state_) == set(base.network_state_)
    for key, value in base.network_state_.items():
        if key.endswith("eval_noise"):
            assert value.shape == (2, 16)
            assert tuned.network_state_[key].shape == (3, 16)
        else:
            torch.testing.assert_close(tuned.network_state_[key], value)
    assert tuned.separate(np.zeros(2048, dtype=np.float32)).shape[0] == 3
    with pytest.raises(ValueError, match="shapes that differ"):  # other sizes still refused
        _model("AudioSlots", embed_dim=8, max_epochs=0).fit(_stream(), init_from=base)


def test_audioslots_fine_tune_may_lengthen_the_chunk():
    base = _model("AudioSlots", max_epochs=0).fit(_stream())
    # Only the positional embeddings depend on chunk_frames: a fine-tune on chunks twice as
    # long starts from them stretched along time (ends kept), and from every other weight.
    tuned = _model("AudioSlots", chunk_frames=32, max_epochs=0).fit(_stream(), init_from=base)
    for key, value in base.network_state_.items():
        if key.endswith("_position"):
            stretched = tuned.network_state_[key]
            assert value.shape == (4, 3, 16) and stretched.shape == (8, 3, 16)
            torch.testing.assert_close(stretched[[0, -1]], value[[0, -1]])
            # Linear in between: row 1 of 8 lies 3/7 of the way from old row 0 to row 1.
            torch.testing.assert_close(stretched[1], value[0] + 3 / 7 * (value[1] - value[0]))
        else:
            torch.testing.assert_close(tuned.network_state_[key], value)
    assert tuned.separate(np.zeros(2048, dtype=np.float32)).shape[0] == 2
    with pytest.raises(ValueError, match="shapes that differ"):  # the bins still refused
        _model("AudioSlots", patch_bins=5, max_epochs=0).fit(_stream(), init_from=base)


def test_restart_heads_copies_head_zero_with_noise_and_keeps_the_original(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # train_separators imports separation_table
    restart_heads = load_benchmark("train_separators").restart_heads
    model = _blind(max_epochs=0).fit(_stream(max_sources=3))
    before = {key: value.clone() for key, value in model.network_state_.items()}
    restarted = restart_heads(model, [2], noise=0.05, seed=0)
    for key, value in before.items():
        torch.testing.assert_close(model.network_state_[key], value)
        if not key.startswith("unet.decoders.2."):
            torch.testing.assert_close(restarted.network_state_[key], value.float())
    weight = "unet.decoders.{}.output.weight"
    live, copy = before[weight.format(0)], restarted.network_state_[weight.format(2)]
    relative = (copy - live).std() / live.std()
    assert 0.03 < float(relative) < 0.07  # 5 % of the tensor's spread
    again = restart_heads(model, [2], noise=0.05, seed=0).network_state_[weight.format(2)]
    torch.testing.assert_close(again, copy)
    with pytest.raises(SystemExit, match="blind heads 1..2"):
        restart_heads(model, [0])
    with pytest.raises(SystemExit, match="blind heads 1..2"):
        restart_heads(model, [3])


def test_told_the_count_keeps_that_many_heads_and_refuses_mixed_counts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    told_the_count = load_benchmark("separation_table").told_the_count
    model = _model("MHUNet", loss="si_sdr", heads="sources", count_sources=True,
                   max_epochs=1).fit(_stream(max_sources=3))
    examples = list(itertools.islice(iter(_stream(random_state=9)), 3))
    mixtures = np.stack([example.mixture for example in examples])
    test = types.SimpleNamespace(mixtures=mixtures, n_sources=np.array([2, 2, 2]))
    estimates = told_the_count(model, test)
    assert model.n_sources is None  # the model itself is left as it was
    assert estimates.shape == (3, 3, mixtures.shape[1])
    # Two heads keep their masks; the third is silent but for noise 100 dB down.
    energy = np.square(estimates).mean(axis=-1)
    assert np.all(np.sort(energy, axis=1)[:, 0] < 1e-9)
    assert np.all(np.sort(energy, axis=1)[:, 1] > 1e-6)
    test.n_sources = np.array([2, 3, 2])
    with pytest.raises(ValueError, match="one number of sources"):
        told_the_count(model, test)
    # AudioSlots told the count merges its slots: the last output is silent, the others
    # hold the whole mixture between them.
    slots = _model("AudioSlots", n_slots=3, max_epochs=0).fit(_stream(max_sources=3))
    test.n_sources = np.array([2, 2, 2])
    estimates = told_the_count(slots, test)
    assert slots.n_sources is None and estimates.shape[1] == slots.n_slots_ == 3
    assert np.all(np.square(estimates[:, 2]).mean(axis=-1) < 1e-9)
    np.testing.assert_allclose(estimates.sum(axis=1), mixtures, atol=1e-3)
    # shipped-slots-refined: a model with refine_passes, told three, refines on the copy.
    test.n_sources = np.array([3, 3, 3])
    plain = told_the_count(slots, test)
    refined = told_the_count(slots.set_params(refine_passes=2), test)
    assert slots.n_sources is None
    assert not np.allclose(refined, plain, atol=1e-4)
    np.testing.assert_allclose(refined.sum(axis=1), mixtures, atol=1e-3)


def test_separation_table_scores_saved_separators_by_name(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    table = load_benchmark("separation_table")
    parser = argparse.ArgumentParser(prog="separation_table")
    stream = _stream(max_sources=3)
    blind = _blind(max_epochs=0).fit(stream)
    by_class = _model("MHUNet", max_epochs=0).fit(stream)
    blind_path = blind.save(tmp_path / "blind.decomp")
    loaded = table.load_models([f"mine={blind_path}",
                                f"classes={by_class.save(tmp_path / 'classes.decomp')}"],
                               parser)
    assert list(loaded) == ["mine", "classes"]
    assert loaded["mine"].n_slots_ == 3 and loaded["mine"].training_seconds_ >= 0
    assert not table.takes_labels(loaded["mine"]) and table.takes_labels(loaded["classes"])
    nmf = NMF(max_iter=5, random_state=0).fit(np.ones((3, 2)))
    refusals = {
        f"mine{blind_path}": "needs NAME=PATH",
        f"nmf={blind_path}": "the name is taken",
        f"other={nmf.save(tmp_path / 'nmf.decomp')}": "holds an NMF, not an AmortizedSeparator",
        f"other={tmp_path / 'missing.decomp'}": "missing.decomp",
    }
    for spec, message in refusals.items():
        with pytest.raises(SystemExit):
            table.load_models([spec], parser)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        table.load_models([f"mine={blind_path}", f"mine={blind_path}"], parser)
    rows = {("nmf", "instruments-2"): {"si_sdr_improvement": 5.0},
            ("mine", "instruments-2"): {"si_sdr_improvement": 7.5},
            ("classes", "instruments-2"): {"si_sdr_improvement": 6.0}}
    assert table.targets(rows, {}, ("mine", "classes")) == [
        "mine 2-source instruments: +2.50 dB SI-SDRi over NMF (target >= +2): PASS",
        "classes 2-source instruments: +1.00 dB SI-SDRi over NMF (target >= +2): FAIL"]
    assert table.targets(rows, {}) == []  # a name not passed as loaded is not judged
    shipped = {("shipped", "instruments-3"): {"si_sdr_improvement": 7.16},
               ("shipped-slots", "instruments-3"): {"si_sdr_improvement": 6.0},
               ("shipped-slots", "fluidr3-instruments-3"): {"si_sdr_improvement": 7.3}}
    assert table.targets(shipped, {}) == [
        "shipped instruments-3: SI-SDRi 7.16 dB (target >= 7): PASS",
        "shipped instruments-slots on instruments-3: SI-SDRi 6.00 dB (target >= 7): FAIL"]
    both = SeparatorEnsemble([blind, blind]).fit().save(tmp_path / "both.decomp")
    assert isinstance(table.load_models([f"both={both}"], parser)["both"], SeparatorEnsemble)
    assert table.targets({}, {"both": 0.01, "instruments": 0.06}, ("both",)) == [
        "both: 4-s mixture in 0.0100 x real time (target <= 0.05): PASS",
        "shipped instruments: 4-s mixture in 0.0600 x real time (target <= 0.05): FAIL"]


def test_ensemble_weights_scores_the_ensembles_outputs_and_chooses_by_count(monkeypatch):
    """benchmarks/ensemble_weights.py: a weighted sum of the matched outputs is the
    ensemble's output with those weights, its scores are evaluate_separation's, and the
    weights are chosen per count on the training fonts' sets only."""
    from decomp.data import MixtureSet
    from decomp.separation import evaluate_separation

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    screen = load_benchmark("ensemble_weights")
    grid = screen.weight_grid(3, 0.25, 0.5)
    assert grid.shape == (8, 3)  # not (0.5, 0.5): the first member keeps a weight
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    np.testing.assert_allclose(grid[0], [1.0, 0.0, 0.0])
    assert (grid[:, 1:] <= 0.5).all() and (grid[:, 0] > 0).all()

    noise = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    nmf = NMFSeparator(n_components_per_source=2, max_iter=5, n_sources=2,
                       random_state=0).fit({"a": [noise[0]], "b": [noise[1]]})
    other = NMFSeparator(n_components_per_source=3, max_iter=5, n_sources=2,
                         random_state=1).fit({"a": [noise[0]], "b": [noise[1]]})
    sources = np.random.default_rng(1).standard_normal((3, 2, 4000)).astype(np.float32)
    test = MixtureSet(mixtures=sources.sum(axis=1), sources=sources,
                      n_sources=np.full(3, 2), instruments=np.full((3, 2), "a"),
                      sample_rate=16000, peak_scale=np.ones(3))
    matched = screen.matched_outputs(SeparatorEnsemble([nmf, other]).fit(), test)
    grid = screen.weight_grid(2, 0.25, 0.5)
    scores = screen.item_scores(matched, test, grid)
    for weights, row in zip(grid, scores, strict=True):
        ensemble = SeparatorEnsemble([nmf, other], weights=list(weights + 1e-12)).fit()
        estimates = ensemble.separate(test.mixtures)
        np.testing.assert_allclose(sum(w * m for w, m in zip(weights, matched,
                                                             strict=True)).numpy(),
                                   estimates, atol=1e-5)
        expected = evaluate_separation(estimates, test.sources, test.mixtures,
                                       filter_length=32).item_means()["si_sdr_improvement"]
        np.testing.assert_allclose(row, expected, atol=1e-3)

    # Per count, the row with the best sum over the training sets; held-out sets ignored.
    scores = {"fluidr3-x": np.array([[1.0, 5.0], [2.0, 0.0]]),
              "timgm6mb-x": np.array([[1.0, 5.0], [2.0, 0.0]]),
              "x": np.array([[9.0, 9.0], [0.0, 0.0]])}
    counts = {name: np.array([2, 3]) for name in scores}
    assert screen.choose(scores, counts, ["fluidr3-x", "timgm6mb-x"]) == {2: 1, 3: 0}
    assert screen.by_count(scores, counts, {2: 1, 3: 0}, 0) == {
        "fluidr3-x": 3.5, "timgm6mb-x": 3.5, "x": 4.5}
    assert screen.by_count(scores, counts, {}, 1) == {"fluidr3-x": 1.0, "timgm6mb-x": 1.0,
                                                      "x": 0.0}


def test_separation_table_prints_scores_by_label_worst_first(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    table = load_benchmark("separation_table")

    def group(score: float, count: int) -> dict[str, float]:
        return {"si_sdr_improvement": score, "n_sources": count}

    rows = {("shipped", "instruments-2"): {"by_label": {"flute": group(12.0, 4),
                                                        "oboe": group(3.5, 2)}},
            ("nmf", "instruments-2"): {"by_label": {"flute": group(6.0, 4)}},
            # A diagnostic row without per-label scores is left out, not a KeyError.
            ("shipped-oracle-order", "instruments-2"): {"si_sdr_improvement": 9.0}}
    table.print_by_label(rows)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "SI-SDRi by source label, instruments-2 (sources):"
    assert lines[1].split() == ["label", "shipped", "nmf"]
    assert lines[2].split() == ["oboe", "3.50", "(", "2)"]  # the worst first
    assert lines[3].split() == ["flute", "12.00", "(", "4)", "6.00", "(", "4)"]


def test_train_separators_builds_the_unet_variants_from_its_flags(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_benchmark("train_separators")

    def built(*flags: str):
        return script.build(script.build_parser().parse_args(list(flags)),
                            tmp_path / "checkpoint.pt", 60.0)

    blockvae = built("--model", "blockvae", "--architecture", "unet", "--n-blocks", "3",
                     "--base-channels", "8", "--n-levels", "3")
    assert (blockvae.architecture, blockvae.n_blocks, blockvae.base_channels,
            blockvae.n_levels) == ("unet", 3, 8, 3)
    default = built("--model", "blockvae")
    assert (default.architecture, default.n_blocks) == ("conv", 4)
    slots = built("--model", "audioslots", "--decoder", "unet", "--n-slots", "3",
                  "--base-channels", "8")
    assert (slots.decoder, slots.n_slots, slots.base_channels) == ("unet", 3, 8)
    assert built("--model", "audioslots").get_params()["decoder"] == "broadcast"
    for model in ("audioslots", "mhunet", "sop", "blockvae"):
        assert built("--model", model).silence_floor_db == -30.0
        assert built("--model", model, "--silence-floor-db", "-10").silence_floor_db == -10.0
    assert built("--model", "audioslots").training_windows == 1
    windows = built("--model", "audioslots", "--training-windows", "4",
                    "--generation-weight", "0")
    assert (windows.training_windows, windows.generation_weight) == (4, 0.0)
    assert windows._training_frames == 64 + 3 * 32  # the crop the streams are cut to
    assert built("--model", "mhunet", "--training-windows", "4")._training_frames == 64
    # The recorded settings name a variant only when one was asked for.
    assert script.build_parser().parse_args(["--model", "mhunet"]).architecture is None


def test_audioslots_trains_on_crops_of_several_windows_with_the_slots_carried():
    seen = []
    model = _model("AudioSlots", separation_loss="si_sdr", training_windows=3, max_epochs=1)
    carried = model._carried_windows

    def spy(network, mixture):
        seen.append(mixture.shape[1])
        return carried(network, mixture)

    model._carried_windows = spy
    model.fit(_stream())  # 2 + 1 half windows of 16 frames: 32 frames of the 1024 samples
    assert model._training_frames == 16 + 2 * 8
    assert set(seen) == {32} and np.isfinite(model.history_["validation_loss"]).all()
    mixture = next(iter(_stream(random_state=9))).mixture
    assert model.separate(mixture).shape == (2, mixture.size)  # inference unchanged
    with pytest.raises(ValueError, match="raise crop_samples or lower chunk_frames or "
                                         "training_windows"):
        _model("AudioSlots", separation_loss="si_sdr", training_windows=4).fit(_stream())


@pytest.mark.parametrize("name", ["AudioSlots", "BlockVAE"])
def test_unordered_models_record_a_streams_labels_but_refuse_them_at_inference(name):
    from decomp.estimators.amortized import BlockVAE

    model = (_model("AudioSlots", embed_dim=8, max_epochs=1) if name == "AudioSlots" else
             BlockVAE(**_waveform_settings(n_blocks=2, block_size=4, hidden_size=16,
                                           max_epochs=1)))
    model.fit(_stream())
    assert model.classes_.tolist() == ["high", "low", "mid"]  # recorded only
    mixture = next(iter(_stream(random_state=9))).mixture
    assert model.separate(mixture).shape == (model.n_slots_, mixture.size)
    message = f"the outputs of {name} have no classes; call it without labels"
    with pytest.raises(ValueError, match=message):
        model.separate(mixture, labels=["low", "mid"])
    with pytest.raises(ValueError, match=message):
        model.transform(model.front_end_(mixture), labels=["low"])


def test_paired_differences_subtract_the_reference_on_the_same_mixtures(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    paired_differences = load_benchmark("separation_table").paired_differences
    shipped = np.array([1.0, 5.0, 9.0, 3.0])
    item_scores = {("shipped", "instruments-2"): shipped,
                   ("mine", "instruments-2"): shipped + np.array([1.0, 2.0, 3.0, -2.0]),
                   ("mine", "instruments-3"): np.array([4.0, 4.0])}
    differences = paired_differences(item_scores, "shipped")
    # No reference score on instruments-3, and the reference is not compared with itself.
    assert list(differences) == [("mine", "instruments-2")]
    difference = differences[("mine", "instruments-2")]
    assert difference["mean"] == pytest.approx(1.0)
    assert difference["se"] == pytest.approx(np.std([1, 2, 3, -2], ddof=1) / 2)
    assert difference["better"] == pytest.approx(0.75)
    # The mixtures' own spread (1 to 9 dB) cancels: a constant shift has no error.
    differences = paired_differences({("shipped", "speech-2"): shipped,
                                      ("mine", "speech-2"): shipped + 0.5}, "shipped")
    assert differences[("mine", "speech-2")] == pytest.approx(
        {"mean": 0.5, "se": 0.0, "better": 1.0})


def test_paired_reference_defaults_to_shipped_and_refuses_a_method_not_run(monkeypatch,
                                                                           capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    paired_reference = load_benchmark("separation_table").paired_reference
    parser = argparse.ArgumentParser(prog="separation_table")

    def settings(methods, reference=None):
        return argparse.Namespace(methods=methods, reference=reference)

    assert paired_reference(settings(["shipped", "nmf"]), {}, parser) == "shipped"
    assert paired_reference(settings(["nmf", "irm"]), {}, parser) == "nmf"
    assert paired_reference(settings(["nmf"], "mine"), {"mine": object()}, parser) == "mine"
    with pytest.raises(SystemExit):
        paired_reference(settings(["nmf", "irm"], "shipped"), {}, parser)
    assert "--reference shipped: not a method of this run; choose one of nmf, irm" in (
        capsys.readouterr().err)


@pytest.mark.slow
def test_separation_table_renders_the_same_test_mixtures_with_each_training_font(
        monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    table = load_benchmark("separation_table")
    fonts = (table.TEST_FONT, *table.TRAIN_FONTS)
    if shutil.which("fluidsynth") is None or not set(fonts) <= set(available_soundfonts()):
        pytest.skip("needs fluidsynth and the three SoundFonts")
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(tmp_path))
    held_out = table.test_sets("instruments", 2, duration=0.5, speech_duration=0.5)
    assert list(held_out) == ["instruments-2", "instruments-3"]
    sets = table.test_sets("instruments", 2, duration=0.5, speech_duration=0.5,
                           training_fonts=True)
    assert list(sets) == ["instruments-2", "instruments-3",
                          *(f"{font}-instruments-{count}" for font in table.TRAIN_FONTS
                            for count in (2, 3))]
    np.testing.assert_array_equal(sets["instruments-2"].mixtures,
                                  held_out["instruments-2"].mixtures)
    for font in table.TRAIN_FONTS:
        for count in (2, 3):
            other, reference = sets[f"{font}-instruments-{count}"], sets[f"instruments-{count}"]
            # The same plan (instruments, number of sources), another timbre.
            np.testing.assert_array_equal(other.instruments, reference.instruments)
            np.testing.assert_array_equal(other.n_sources, reference.n_sources)
            assert not np.allclose(other.mixtures, reference.mixtures)


def test_oracle_chunk_order_undoes_slot_swaps_between_chunks(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    oracle_chunk_order = load_benchmark("separation_table").oracle_chunk_order
    rng = np.random.default_rng(0)
    sources = rng.standard_normal((2, 3, 40))  # item 0: 2 sources (+ padding), item 1: 3
    sources[0, 2] = 0.0
    n_sources = np.array([2, 3])
    estimates = sources.copy()
    estimates[0, :, 10:20] = sources[0, [1, 0, 2], 10:20]  # swapped in the second chunk
    estimates[1, :, 30:] = sources[1, [2, 0, 1], 30:]  # rotated in the last
    ordered = oracle_chunk_order(estimates, sources, n_sources, segment_samples=10)
    np.testing.assert_array_equal(ordered, sources)
    np.testing.assert_array_equal(estimates[0, :, 10:20], sources[0, [1, 0, 2], 10:20])
