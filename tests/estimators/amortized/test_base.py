"""The amortized separators' shared base: data checks, training loop, chunked inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from decomp.audio import Spectrogram
from decomp.data.mixtures import MixtureSet
from decomp.estimators.amortized._batches import random_crops, tile_chunks
from decomp.estimators.amortized.base import AmortizedSeparator
from decomp.estimators.amortized.objectives import compress_magnitude, pit_magnitude_loss
from decomp.exceptions import NonFiniteLossError

N_BINS = 17


class FrameMasker(AmortizedSeparator):
    """A frame-wise softmax-mask network: the smallest model the base can train."""

    _parameter_constraints = {**AmortizedSeparator._parameter_constraints, "n_slots": [int],
                              "max_sources_curriculum": [int, None], "poison": ["boolean"]}

    def __init__(self, n_slots=2, *, max_sources_curriculum=None, poison=False, **params):
        super().__init__(**params)
        self.n_slots = n_slots
        self.max_sources_curriculum = max_sources_curriculum
        self.poison = poison

    def get_params(self, deep=True):
        # The base's parameters come through **params, which scikit-learn cannot see.
        params = {name: getattr(self, name) for name in AmortizedSeparator._get_param_names()}
        params.update(n_slots=self.n_slots, max_sources_curriculum=self.max_sources_curriculum,
                      poison=self.poison)
        return params

    def _n_slots(self, max_sources, n_classes):
        return self.n_slots

    def _curriculum(self, epoch, max_sources):
        self.seen_epochs = getattr(self, "seen_epochs", []) + [epoch]
        return self.max_sources_curriculum or max_sources

    def _build_network(self):
        return torch.nn.Sequential(torch.nn.Linear(self.n_features_in_, 32), torch.nn.Tanh(),
                                   torch.nn.Linear(32, self.n_features_in_ * self.n_slots_))

    def _forward(self, network, mixture, labels):
        logits = network(compress_magnitude(mixture, mixture))
        masks = logits.unflatten(-1, (self.n_slots_, -1)).transpose(1, 2).softmax(dim=1)
        return masks * mixture[:, None], masks

    def _training_losses(self, network, batch):
        self.batch_sizes = getattr(self, "batch_sizes", []) + [int(batch["mixture"].shape[0])]
        self.batch_sources = getattr(self, "batch_sources", []) + [batch["present"].sum(1)]
        estimates, _ = self._forward(network, batch["mixture"], None)
        loss, _ = pit_magnitude_loss(estimates, batch["sources"], batch["mixture"])
        if self.poison:
            loss = loss * float("nan")
        return {"loss": loss, "twice": 2 * loss}


def _data(n_items=20, n_frames=40, seed=0):
    """Two sources with fixed disjoint spectral templates and random activations."""
    rng = np.random.default_rng(seed)
    templates = np.zeros((2, N_BINS))
    templates[0, :8] = rng.random(8) + 0.5
    templates[1, 9:] = rng.random(N_BINS - 9) + 0.5
    activations = rng.random((n_items, 2, n_frames, 1)) + 0.1
    sources = (activations * templates[None, :, None, :]).astype(np.float32)
    return sources.sum(axis=1), sources


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def fitted(data):
    mixtures, sources = data
    return FrameMasker(chunk_frames=8, max_epochs=80, learning_rate=0.01, patience=80,
                       random_state=0).fit(mixtures, sources)


def test_training_lowers_the_validation_loss_and_records_history(fitted):
    history = fitted.history_
    assert history["validation_loss"].shape == (fitted.n_epochs_,)
    assert history["train_twice"] == pytest.approx(2 * history["train_loss"], rel=1e-5)
    assert fitted.best_validation_loss_ < 0.5 * history["validation_loss"][0]
    assert fitted.n_train_items_ + fitted.n_validation_items_ == 20
    assert fitted.n_validation_items_ == 2
    assert fitted.training_seconds_ > 0


def test_transform_shapes_and_types(fitted, data):
    mixtures, _ = data
    batch = fitted.transform(mixtures[:3])
    assert batch.shape == (3, 2, 40, N_BINS) and batch.dtype == np.float32
    single = fitted.transform(mixtures[0])
    np.testing.assert_allclose(single, batch[0], rtol=1e-5, atol=1e-6)
    tensor = fitted.transform(torch.as_tensor(mixtures[:2]))
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 2, 40, N_BINS)
    # Softmax masks: the slots sum to the mixture.
    np.testing.assert_allclose(batch.sum(axis=1), mixtures[:3], rtol=1e-4, atol=1e-5)


def test_transform_separates_the_planted_sources(fitted, data):
    mixtures, sources = data
    estimates = fitted.transform(mixtures[:4])
    for item in range(4):
        errors = [np.abs(estimates[item, order] - sources[item]).mean()
                  for order in ([0, 1], [1, 0])]
        assert min(errors) < 0.1 * np.abs(sources[item]).mean()


def test_chunks_keep_each_source_in_its_slot(fitted, data):
    mixtures, sources = data
    long_mixture = np.concatenate([mixtures[0], mixtures[1], mixtures[2]])  # 120 frames
    estimates = fitted.transform(long_mixture)  # 15 chunks of 8 frames
    first = sources[0, 0].mean(axis=0) > 0  # the bins of source 0
    slot = int(estimates[:, :8][:, :, first].sum(axis=(1, 2)).argmax())
    share = estimates[slot][:, first].sum() / estimates[:, :, first].sum()
    assert share > 0.95


def test_same_seed_same_model_and_resume_from_checkpoint(tmp_path, data):
    mixtures, sources = data
    params = dict(chunk_frames=8, random_state=3, patience=100)
    straight = FrameMasker(max_epochs=6, **params).fit(mixtures, sources)
    again = FrameMasker(max_epochs=6, **params).fit(mixtures, sources)
    for key, value in straight.network_state_.items():
        torch.testing.assert_close(value, again.network_state_[key])
    path = tmp_path / "run.ckpt"
    FrameMasker(max_epochs=3, checkpoint=path, **params).fit(mixtures, sources)
    resumed = FrameMasker(max_epochs=6, checkpoint=path, **params).fit(mixtures, sources)
    assert resumed.n_epochs_ == 6
    np.testing.assert_allclose(resumed.history_["train_loss"], straight.history_["train_loss"],
                               rtol=1e-5)
    for key, value in straight.network_state_.items():
        torch.testing.assert_close(value, resumed.network_state_[key])
    with pytest.raises(ValueError, match="other data or settings"):
        FrameMasker(max_epochs=6, checkpoint=path, **{**params, "learning_rate": 0.1}).fit(
            mixtures, sources)


def test_max_seconds_and_early_stopping(data):
    mixtures, sources = data
    timed = FrameMasker(chunk_frames=8, max_epochs=1000, max_seconds=0.5,
                        random_state=0).fit(mixtures, sources)
    assert 1 <= timed.n_epochs_ < 1000
    patient = FrameMasker(chunk_frames=8, max_epochs=1000, patience=2, learning_rate=0.3,
                          random_state=0).fit(mixtures, sources)
    assert patient.n_epochs_ < 1000
    assert patient.n_epochs_ - patient.best_epoch_ == 2


def test_curriculum_limits_the_items_of_early_epochs():
    rng = np.random.default_rng(1)
    sources = rng.random((10, 3, 12, N_BINS)).astype(np.float32)
    sources[:6, 2] = 0  # six mixtures of two sources, four of three
    model = FrameMasker(n_slots=3, max_sources_curriculum=2, chunk_frames=8, max_epochs=2,
                        validation_fraction=0, batch_size=64, random_state=0)
    model.fit(sources.sum(1), sources)
    # Training batches (not the validation pass) hold only two-source mixtures.
    training = [count for count in model.batch_sources if count.numel() == 6]
    assert training and all(int(count.max()) == 2 for count in training)
    assert model.seen_epochs == [1, 2]


def test_fit_accepts_waveforms_and_mixture_sets():
    rng = np.random.default_rng(2)
    front_end = Spectrogram(sample_rate=8000, n_fft=32, hop_length=16, kind="linear")
    sources = (0.1 * rng.standard_normal((6, 2, 800))).astype(np.float32)
    mixtures = sources.sum(axis=1)
    model = FrameMasker(front_end=front_end, chunk_frames=8, max_epochs=2, random_state=0)
    model.fit(mixtures, sources)
    assert model.n_features_in_ == N_BINS and model.transform(front_end(mixtures[0])).shape == \
        (2, 51, N_BINS)
    separated = model.separate(mixtures[:2])
    assert separated.shape == (2, 2, 800)
    np.testing.assert_allclose(separated.sum(axis=1), mixtures[:2], atol=1e-4)
    assert model.separate(torch.as_tensor(mixtures[0])).shape == (2, 800)

    labels = np.array([["flute", "oboe"]] * 6)
    mixture_set = MixtureSet(mixtures=mixtures, sources=sources, n_sources=np.full(6, 2),
                             instruments=labels, sample_rate=8000, peak_scale=np.ones(6))
    model.fit(mixture_set)
    assert list(model.classes_) == ["flute", "oboe"]


def test_zero_padded_source_slots_are_dropped_to_fit_the_slots():
    rng = np.random.default_rng(3)
    sources = np.zeros((8, 4, 12, N_BINS), dtype=np.float32)
    sources[:, 1] = rng.random((8, 12, N_BINS))
    sources[:, 3] = rng.random((8, 12, N_BINS))
    model = FrameMasker(n_slots=2, chunk_frames=8, max_epochs=1, random_state=0)
    model.fit(sources.sum(1), sources)
    sources[0, 0] = 1.0  # now one mixture has three sources for two slots
    with pytest.raises(ValueError, match="3 sources but the model has 2 slots"):
        model.fit(sources.sum(1), sources)


def test_crops_and_tiles():
    mixtures = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    sources = torch.stack([mixtures, torch.zeros_like(mixtures)], dim=1)
    present = torch.tensor([[True, False], [True, False]])
    crops = random_crops(mixtures, sources, present, None, np.array([1, 0]), 4,
                          np.random.default_rng(0), torch.device("cpu"))
    assert crops["mixture"].shape == (2, 4, 3) and crops["sources"].shape == (2, 2, 4, 3)
    torch.testing.assert_close(crops["sources"][:, 0], crops["mixture"])
    assert crops["present"].tolist() == [[True, False], [True, False]]
    tiles = tile_chunks(mixtures, sources, present, torch.tensor([[0, -1], [0, -1]]),
                         np.array([0, 1]), 4)
    assert tiles["mixture"].shape == (6, 4, 3)  # 3 tiles per item, as inference runs them
    torch.testing.assert_close(tiles["mixture"][1], mixtures[0, 4:8])
    torch.testing.assert_close(tiles["mixture"][2], mixtures[0, 6:10])  # overlaps, no padding
    torch.testing.assert_close(tiles["sources"][5, 0], mixtures[1, 6:10])
    short = tile_chunks(mixtures[:, :3], sources[:, :, :3], present, None, np.array([0]), 4)
    assert short["mixture"].shape == (1, 4, 3) and short["mixture"][0, 3].eq(0).all()
    assert tiles["labels"][:, 1].eq(-1).all()


def test_non_finite_loss_is_reported(data):
    mixtures, sources = data
    with pytest.raises(NonFiniteLossError, match="lower learning_rate"):
        FrameMasker(poison=True, chunk_frames=8, max_epochs=2).fit(mixtures, sources)


@pytest.mark.parametrize(
    ("mixtures", "sources", "match"),
    [
        (np.ones((2, 8, N_BINS)), np.ones((2, 8, N_BINS)), r"sources must have shape \(n_items"),
        (np.ones((2, 8, N_BINS)), np.ones((3, 2, 8, N_BINS)), "to match mixtures"),
        (np.ones((2, 8, N_BINS)), np.ones((2, 2, 8, N_BINS + 1)), "to match mixtures"),
        (np.ones((8,)), np.ones((2, 8)), r"got an array of shape \(8,\)"),
        (np.full((2, 8, N_BINS), np.nan), np.ones((2, 2, 8, N_BINS)), "NaN"),
        (np.ones((2, 8, N_BINS)), -np.ones((2, 2, 8, N_BINS)), "negative"),
        (np.ones((2, 100)), np.ones((2, 100)), r"\(n_items, n_sources, n_samples\)"),
    ],
)
def test_bad_training_data(mixtures, sources, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FrameMasker(chunk_frames=8, max_epochs=1).fit(mixtures, sources)


def test_bad_calls(fitted, data):
    mixtures, sources = data
    with pytest.raises(NotFittedError):
        FrameMasker().transform(mixtures)
    with pytest.raises(ValueError, match="bins"):
        fitted.transform(np.ones((8, N_BINS + 2)))
    with pytest.raises(ValueError, match="fitted without labels"):
        fitted.transform(mixtures, labels=["flute"])
    with pytest.raises(ValueError, match="needs the sources"):
        FrameMasker().fit(mixtures)
    with pytest.raises(ValueError, match="labels must have shape"):
        FrameMasker(chunk_frames=8, max_epochs=1).fit(mixtures, sources, labels=["a", "b"])
    with pytest.raises(ValueError, match="gives magnitudes"):
        FrameMasker(front_end=Spectrogram(kind="log")).fit(mixtures, sources)
    with pytest.raises(ValueError, match="chunk_frames"):
        FrameMasker(chunk_frames=0).fit(mixtures, sources)


# ------------------------------------------------------------------------- streaming
STREAM_FRONT_END = Spectrogram(sample_rate=8000, n_fft=32, hop_length=8, kind="linear")


@pytest.fixture(scope="module")
def stream_model(data):
    mixtures, sources = data
    return FrameMasker(front_end=STREAM_FRONT_END, chunk_frames=8, batch_size=3, max_epochs=2,
                       random_state=0).fit(mixtures, sources)


@pytest.mark.parametrize("n_samples", [5, 60, 2003, 2048])
def test_separate_stream_equals_separate(stream_model, n_samples):
    # Several segments of 16 hops, 3-chunk batches, blocks of odd sizes, an overlapping
    # last chunk; the whole-array path is the reference.
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(n_samples).astype(np.float32)
    blocks = np.array_split(audio, max(1, n_samples // 97))
    streamed = list(stream_model.separate_stream(blocks, segment_frames=16))
    joined = np.concatenate(streamed, axis=1)
    np.testing.assert_allclose(joined, stream_model.separate(audio), atol=1e-5)
    if n_samples > 16 * 8 + 40:
        assert len(streamed) > 1


def _copy(model, **params):
    """A fitted copy of ``model`` with ``params`` changed."""
    copy = FrameMasker(**{**model.get_params(), **params})
    copy.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    return copy


def _swapping(model):
    """A copy whose network swaps the two slots of every other item it runs (counting
    from its first call; ``calls.clear()`` on the returned list restarts the count)."""
    swapped = _copy(model)
    calls = []

    def forward(network, mixture, labels):
        estimate, masks = FrameMasker._forward(swapped, network, mixture, labels)
        flip = torch.tensor([(len(calls) * mixture.shape[0] + index) % 2 == 1
                             for index in range(mixture.shape[0])])
        calls.append(1)
        estimate = torch.where(flip[:, None, None, None], estimate.flip(1), estimate)
        masks = torch.where(flip[:, None, None, None], masks.flip(1), masks)
        return estimate, masks

    swapped._forward = forward
    return swapped, calls


def test_chunk_alignment_is_carried_across_segments(stream_model):
    # Swap the slots of every other chunk: the carried profile must undo it everywhere.
    swapped, calls = _swapping(stream_model)
    audio = np.random.default_rng(2).standard_normal(1500).astype(np.float32)
    streamed = np.concatenate(list(swapped.separate_stream([audio], segment_frames=16)), axis=1)
    calls.clear()
    np.testing.assert_allclose(streamed, swapped.separate(audio), atol=1e-5)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_swapped_slots_are_matched_back_with_and_without_overlap(stream_model, overlap):
    # A network whose slots come out swapped in every other forward item separates
    # exactly like the plain one once the windows are matched (up to one global order).
    plain = _copy(stream_model, inference_overlap=overlap)
    swapped, _ = _swapping(plain)
    audio = np.random.default_rng(2).standard_normal(1500).astype(np.float32)
    reference, result = plain.separate(audio), swapped.separate(audio)
    errors = [np.abs(result[list(order)] - reference).max() for order in ([0, 1], [1, 0])]
    assert min(errors) < 1e-4
    np.testing.assert_allclose(result.sum(axis=0), reference.sum(axis=0), atol=1e-4)


def test_overlapping_windows_cost_twice_the_frames_and_keep_the_masks_summing_to_one(
        stream_model, data):
    mixtures, _ = data
    frames = {}
    for overlap in (0.0, 0.5):
        model = _copy(stream_model, inference_overlap=overlap)
        seen = []
        forward = model._forward

        def counting(network, mixture, labels, forward=forward, seen=seen):
            seen.append(mixture.shape[0] * mixture.shape[1])
            return forward(network, mixture, labels)

        model._forward = counting
        long_mixture = np.concatenate(list(mixtures[:3]))  # 120 frames, chunks of 8
        estimates = model.transform(long_mixture)
        np.testing.assert_allclose(estimates.sum(axis=0), long_mixture, rtol=1e-4, atol=1e-5)
        frames[overlap] = sum(seen)
    assert frames[0.0] == 120 and frames[0.5] == 8 * 29  # windows every 4 frames
    with pytest.raises(ValueError, match="inference_overlap"):
        FrameMasker(inference_overlap=1.0).fit(mixtures, data[1])


def test_separate_file_writes_stems_atomically(stream_model, tmp_path):
    import soundfile

    from decomp.audio import write_audio

    audio = (0.1 * np.random.default_rng(3).standard_normal(3000)).astype(np.float32)
    mixture = write_audio(tmp_path / "mix.wav", audio, 8000)
    paths = stream_model.separate_file(mixture, lambda n: [tmp_path / f"s{k}.wav"
                                                           for k in range(n)],
                                       segment_frames=16, block_frames=500)
    assert [path.name for path in paths] == ["s0.wav", "s1.wav"]
    stems = np.stack([soundfile.read(path, dtype="float32")[0] for path in paths])
    np.testing.assert_allclose(stems, stream_model.separate(audio), atol=1e-5)

    def failing(blocks):
        for index, block in enumerate(blocks):
            if index == 3:
                raise RuntimeError("disk gone")
            yield block

    original = stream_model.separate_stream
    stream_model.separate_stream = lambda blocks, *args, **kwargs: original(
        failing(blocks), *args, **kwargs)
    try:
        with pytest.raises(RuntimeError, match="disk gone"):
            stream_model.separate_file(mixture, [tmp_path / "t0.wav", tmp_path / "t1.wav"],
                                       segment_frames=16, block_frames=500)
    finally:
        del stream_model.separate_stream
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mix.wav", "s0.wav", "s1.wav"]


def test_separate_stream_bad_input(stream_model):
    with pytest.raises(NotFittedError):
        next(FrameMasker().separate_stream([np.zeros(100, np.float32)]))
    with pytest.raises(ValueError, match="NaN"):
        list(stream_model.separate_stream([np.zeros(50, np.float32), np.full(50, np.nan)]))
    with pytest.raises(ValueError, match="no samples"):
        list(stream_model.separate_stream([]))
    with pytest.raises(ValueError, match="1-d"):
        list(stream_model.separate_stream([np.zeros((2, 50), np.float32)]))
    with pytest.raises(ValueError, match="segment_frames"):
        next(stream_model.separate_stream([np.zeros(100, np.float32)], segment_frames=0))
    torch_blocks = [torch.zeros(300), torch.ones(200) * 0.1]
    joined = np.concatenate(list(stream_model.separate_stream(torch_blocks)), axis=1)
    assert joined.shape == (2, 500)


def _splitting(model, part):
    """A copy of a two-slot model whose second slot comes out split over two slots: ``part``
    of it in slot 1 and the rest in slot 2 in even windows, the other way round in odd ones
    (so the split moves from window to window, as in a model with a spare slot)."""
    split = _copy(model)
    calls = []

    def forward(network, mixture, labels):
        estimate, masks = FrameMasker._forward(split, network, mixture, labels)
        odd = torch.tensor([(len(calls) * mixture.shape[0] + index) % 2 == 1
                            for index in range(mixture.shape[0])])[:, None, None]
        calls.append(1)
        share = torch.where(odd, 1 - part, part)

        def three(values):
            return torch.stack([values[:, 0], share * values[:, 1],
                                (1 - share) * values[:, 1]], dim=1)

        return three(estimate), three(masks)

    split._forward = forward
    return split, calls


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_merging_joins_a_source_split_over_two_slots(stream_model, overlap):
    plain = _copy(stream_model, inference_overlap=overlap)
    split, calls = _splitting(plain, 0.3)
    audio = np.random.default_rng(2).standard_normal(1500).astype(np.float32)
    reference = plain.separate(audio)
    unmerged = split.separate(audio)
    calls.clear()
    assert unmerged.shape[0] == 3 and np.abs(unmerged[1:] - reference[1]).max() > 0.01
    split._merged_count = lambda: 2
    merged = split.separate(audio)
    np.testing.assert_allclose(merged[:2], reference, atol=1e-4)
    assert not merged[2].any()
    np.testing.assert_allclose(merged.sum(axis=0), reference.sum(axis=0), atol=1e-4)
    calls.clear()
    streamed = np.concatenate(list(split.separate_stream(np.array_split(audio, 7),
                                                         segment_frames=16)), axis=1)
    np.testing.assert_allclose(streamed, merged, atol=1e-5)  # the same merge, streamed
