"""Bad input for separation: silence, labels a model does not know, another sample rate."""

import warnings

import numpy as np
import pytest

from decomp.audio import AudioStream, Spectrogram, load_audio, write_audio
from decomp.estimators.amortized import AudioSlots, BlockVAE, MHUNet, SoundOfPixels
from decomp.exceptions import AudioWarning
from decomp.separation import NMFSeparator

FRONT_END = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
UNET = {"n_levels": 2, "base_channels": 4, "chunk_frames": 16, "batch_size": 8,
        "front_end": FRONT_END, "max_epochs": 1, "random_state": 0}


@pytest.fixture(scope="module")
def training():
    rng = np.random.default_rng(0)
    sources = (0.1 * rng.standard_normal((6, 2, 2000))).astype(np.float32)
    return sources.sum(axis=1), sources, np.array([["a", "b"]] * 6)


@pytest.fixture(scope="module")
def separators(training):
    """Every separator class, tiny, with the labels its ``separate`` takes (None: none)."""
    mixtures, sources, labels = training
    return {
        "AudioSlots": (AudioSlots(n_slots=2, embed_dim=16, n_layers=1, n_heads=2,
                                  decoder_hidden=16, front_end=FRONT_END, chunk_frames=16,
                                  max_epochs=1, random_state=0).fit(mixtures, sources), None),
        "BlockVAE": (BlockVAE(n_blocks=2, hidden_size=32, block_size=8, chunk_frames=16,
                              batch_size=8, front_end=FRONT_END, max_epochs=1,
                              random_state=0).fit(mixtures, sources), None),
        "MHUNet": (MHUNet(**UNET).fit(mixtures, sources), None),
        "MHUNet with labels": (MHUNet(**UNET).fit(mixtures, sources, labels), ["b", "a"]),
        "SoundOfPixels": (SoundOfPixels(n_components=4, **UNET).fit(mixtures, sources, labels),
                          ["a"]),
        "NMFSeparator": (NMFSeparator(n_components_per_source=2, front_end=FRONT_END,
                                      random_state=0).fit({"a": [sources[0, 0]],
                                                           "b": [sources[0, 1]]}), None),
    }


def test_a_silent_mixture_gives_silent_stems(separators):
    silence = np.zeros(3000, dtype=np.float32)
    for name, (separator, labels) in separators.items():
        stems = separator.separate(silence, labels)
        n_outputs = len(labels) if labels is not None else 2
        assert stems.shape == (n_outputs, 3000), name
        assert np.isfinite(stems).all() and not np.abs(stems).any(), name
        # A batch with one silent item: the other items are untouched by it.
        batch = np.stack([silence, 0.1 * np.ones(3000, dtype=np.float32)])
        stems = separator.separate(batch, labels)
        assert np.isfinite(stems).all() and not np.abs(stems[0]).any(), name


def test_a_silent_file_streams_silent_stems(separators, tmp_path):
    silent = write_audio(tmp_path / "silent.wav", np.zeros(5000, dtype=np.float32), 8000)
    for name, (separator, labels) in separators.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        with pytest.warns(AudioWarning, match="silent"):  # the reader says so
            paths = separator.separate_file(
                silent, lambda n, folder=folder: [folder / f"{k}.wav" for k in range(n)], labels)
        for path in paths:
            with pytest.warns(AudioWarning, match="silent"):
                stem, rate = load_audio(path, None)
            assert rate == 8000 and stem.shape == (5000,), name
            assert np.isfinite(stem).all() and not np.abs(stem).any(), name


MIXTURE = 0.1 * np.random.default_rng(1).standard_normal(2000).astype(np.float32)


def test_unknown_classes_are_one_line_naming_the_known_ones(separators):
    separator, _ = separators["NMFSeparator"]
    with pytest.raises(ValueError) as raised:
        separator.separate(MIXTURE, ["a", "violin"])
    assert str(raised.value) == ("unknown classes ['violin']; the separator was fitted on "
                                 "['a', 'b'].")
    with pytest.raises(ValueError, match="fitted without labels"):
        separators["AudioSlots"][0].separate(MIXTURE, ["a"])


def test_unknown_labels_are_one_line_naming_the_known_ones(separators):
    for name, labels in (("MHUNet with labels", ["a", "violin"]),
                         ("SoundOfPixels", ["violin"])):
        separator, _ = separators[name]
        with pytest.raises(ValueError) as raised:
            separator.separate(MIXTURE, labels)
        assert str(raised.value) == f"unknown labels ['violin']; {name.split()[0]} knows " \
            "['a', 'b']."
    with pytest.raises(ValueError) as raised:
        separators["SoundOfPixels"][0].separate(MIXTURE)
    assert "(known: ['a', 'b'])" in str(raised.value)


def test_a_file_at_another_rate_is_resampled_with_one_warning(separators, tmp_path):
    # 16 kHz for an 8 kHz model; blocks of 1000 frames: the warning is per file, not block.
    t = np.arange(32000) / 16000
    mixture = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_audio(tmp_path / "mix16k.wav", mixture, 16000)
    separator, _ = separators["NMFSeparator"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = separator.separate_file(path, [tmp_path / "a.wav", tmp_path / "b.wav"],
                                        block_frames=1000)
    told = [str(w.message) for w in caught if issubclass(w.category, AudioWarning)]
    assert told == [f"Audio file {str(path)!r} is sampled at 16000 Hz; resampling it to "
                    "8000 Hz, the model's rate."]
    stems = np.stack([load_audio(stem, None)[0] for stem in paths])
    assert stems.shape == (2, 16000)  # 4 s at the model's 8 kHz
    np.testing.assert_allclose(stems.sum(axis=0), load_audio(path, 8000)[0], atol=1e-4)


def test_audio_stream_warns_about_resampling_only_when_asked(tmp_path):
    path = write_audio(tmp_path / "a.wav", 0.1 * np.ones(4000, dtype=np.float32), 16000)
    for rate, asked, expected in ((8000, True, 1), (8000, False, 0), (16000, True, 0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            blocks = list(AudioStream(path, rate, block_frames=500, warn_resampling=asked))
        assert len(blocks) > 1
        assert sum("resampling it to" in str(w.message) for w in caught) == expected
