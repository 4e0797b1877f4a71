"""Tests for decomp.data.stems (a tiny bank: 2 instruments, 1 melody, 1 s; else synthetic stems)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from decomp.data import (
    PEAK_CEILING,
    TRAINING_SOUNDFONTS,
    Augmentation,
    MixtureExample,
    MixtureSet,
    MixtureStream,
    StemBank,
    instrument_stems,
    speech_stems,
)
from decomp.data import mixtures as mixtures_module
from decomp.data import stems as stems_module
from decomp.data.protocol import DEFAULT_PROTOCOL
from decomp.data.soundfonts import resolve_soundfont

from .conftest import requires_fluidsynth, requires_font

requires_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="needs `apt-get install espeak-ng`"
)

RATE = 8000
TINY = {"instruments": ["violin", "flute"], "n_melodies": 1, "seconds": 1.0}


@pytest.fixture
def counting_renderer(monkeypatch: pytest.MonkeyPatch):
    """Replace FluidSynth by seeded noise and record the fonts it is called with."""
    calls = []

    def fake_render(program, notes, font_path, sample_rate):
        calls.append(font_path)
        end = max(note[3] for note in notes)
        rng = np.random.default_rng([program, len(notes), int(sum(n[0] for n in notes))])
        return (0.1 * rng.standard_normal(int((end + 0.5) * sample_rate))).astype(np.float32)

    monkeypatch.setattr(mixtures_module, "_render_stem", fake_render)
    return calls


def synthetic(n_classes: int = 4, per_class: int = 2, n_samples: int = 2 * RATE, seed: int = 0):
    """Noise stems with distinct spectra per class; labels 'c0', 'c1', ..."""
    rng = np.random.default_rng(seed)
    stems = 0.1 * rng.standard_normal((n_classes * per_class, n_samples)).astype(np.float32)
    labels = [f"c{index // per_class}" for index in range(n_classes * per_class)]
    return stems, labels


def stream_of(**kwargs) -> MixtureStream:
    stems, labels = synthetic()
    options = {"sample_rate": RATE, "crop_samples": RATE // 2, "min_sources": 1,
               "max_sources": 3, "random_state": 3}  # fmt: skip
    options.update(kwargs)
    return MixtureStream(stems, labels, **options)


def first(stream: MixtureStream, n: int) -> list[MixtureExample]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(n)]


# ----------------------------------------------------------------------------- bank


@pytest.mark.slow
@requires_fluidsynth
@requires_font("fluidr3")
@requires_font("timgm6mb")
def test_bank_renders_once_then_reads_the_cache(fresh_cache_dir, monkeypatch):
    calls = []
    real = mixtures_module._render_stem

    def counted(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(mixtures_module, "_render_stem", counted)
    bank = instrument_stems(**TINY)
    assert len(calls) == 4  # one FluidSynth run per (font, instrument)
    assert bank.stems.shape == (4, RATE * 2) and bank.stems.dtype == np.float32
    assert bank.labels.tolist() == ["violin", "flute", "violin", "flute"]
    assert bank.fonts.tolist() == ["fluidr3", "fluidr3", "timgm6mb", "timgm6mb"]
    assert bank.sample_rate == 16000 and bank.classes == ("flute", "violin")
    assert np.all(np.sqrt(np.mean(bank.stems**2, axis=1)) > 1e-3)
    again = instrument_stems(**TINY)
    assert len(calls) == 4  # nothing rendered the second time
    np.testing.assert_array_equal(again.stems, bank.stems)


def test_bank_uses_only_the_training_fonts(fresh_cache_dir, counting_renderer):
    assert set(TRAINING_SOUNDFONTS) == {"fluidr3", "timgm6mb"}
    assert DEFAULT_PROTOCOL.test_soundfont not in TRAINING_SOUNDFONTS
    bank = instrument_stems(**TINY, cache=False)
    assert set(bank.fonts.tolist()) == set(TRAINING_SOUNDFONTS)
    training_files = {resolve_soundfont(font) for font in TRAINING_SOUNDFONTS}
    assert len(counting_renderer) == 4 and set(counting_renderer) == training_files


def test_bank_refuses_the_test_font(counting_renderer):
    with pytest.raises(ValueError, match="held-out test font 'musescore-lite'"):
        instrument_stems(["fluidr3", "musescore-lite"], **TINY)
    assert counting_renderer == []


@requires_font("musescore-lite")
def test_bank_refuses_the_test_font_given_as_a_path(counting_renderer):
    with pytest.raises(ValueError, match="held-out test font 'musescore-lite'"):
        instrument_stems([resolve_soundfont("musescore-lite")], **TINY)
    assert counting_renderer == []


def test_bank_melodies_depend_on_seed_font_and_instrument_only(fresh_cache_dir,
                                                               counting_renderer):
    full = instrument_stems(["timgm6mb"], ["violin", "flute"], n_melodies=2, seconds=1.0)
    alone = instrument_stems(["timgm6mb"], ["flute"], n_melodies=2, seconds=1.0)
    np.testing.assert_array_equal(full.select(labels=["flute"]).stems, alone.stems)
    other_seed = instrument_stems(["timgm6mb"], ["flute"], n_melodies=2, seconds=1.0,
                                  random_state=1)
    assert not np.array_equal(other_seed.stems, alone.stems)


def test_bank_cuts_the_joint_render_at_the_melody_starts(counting_renderer, monkeypatch):
    # A renderer that writes each note's index into its samples shows where cuts fall.
    def marking(program, notes, font_path, sample_rate):
        audio = np.zeros(int((max(n[3] for n in notes) + 0.5) * sample_rate), np.float32)
        for pitch, _, start, end in notes:
            audio[int(start * sample_rate):int(end * sample_rate)] = pitch / 127
        return audio

    monkeypatch.setattr(mixtures_module, "_render_stem", marking)
    bank = instrument_stems(["timgm6mb"], ["cello"], n_melodies=3, seconds=2.0, cache=False)
    rng = stems_module._entry_rng(0, "instrument-stems", "timgm6mb", "cello")
    for k in range(3):
        melody = mixtures_module._random_melody(rng, mixtures_module.INSTRUMENTS["cello"],
                                                2.0, (60, 110))
        pitch, _, start, end = melody[0]
        middle = int((start + end) / 2 * 16000)
        assert bank.stems[k, middle] == pytest.approx(pitch / 127)


def test_bank_select_and_concatenate():
    bank = StemBank(np.ones((3, 4), np.float32), np.array(["a", "b", "a"]),
                    np.array(["f1", "f1", "f2"]), 100)  # fmt: skip
    assert bank.select(fonts=["f1"], labels=["a"]).n_stems == 1
    assert StemBank.concatenate([bank, bank]).n_stems == 6
    with pytest.raises(ValueError, match="leaves no stem"):
        bank.select(fonts=["f3"])
    with pytest.raises(TypeError, match="fonts must be a sequence"):
        bank.select(fonts="f1")
    other = StemBank(np.ones((1, 5), np.float32), np.array(["a"]), np.array(["f1"]), 100)
    with pytest.raises(ValueError, match="share sample_rate and stem length"):
        StemBank.concatenate([bank, other])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"soundfonts": "fluidr3"}, TypeError, "soundfonts must be a sequence"),
        ({"soundfonts": []}, ValueError, "at least one SoundFont"),
        ({"soundfonts": ["fluidr3", "fluidr3"]}, ValueError, "soundfonts must be distinct"),
        ({"n_melodies": 0}, ValueError,
         r"'n_melodies' parameter of instrument_stems must be an int in the range \[1, inf\)"),
        ({"seconds": 0.1}, ValueError, r"'seconds' parameter .* \[0.5, 60.0\]. Got 0.1"),
        ({"seconds": "2"}, TypeError, "'seconds' parameter .* Got '2'"),
        ({"sample_rate": 100}, ValueError, r"'sample_rate' parameter .* \[8000, 96000\]"),
        ({"random_state": None}, TypeError, "'random_state' parameter .* Got None"),
        ({"random_state": -1}, ValueError, r"'random_state' parameter .* \[0, inf\). Got -1"),
        ({"instruments": ["kazoo"]}, ValueError, "unknown instrument 'kazoo'"),
        ({"velocity_range": (0, 200)}, ValueError, "velocity_range"),
        ({"cache": 1}, TypeError, "'cache' parameter .* Got 1"),
    ],
)
def test_bank_bad_arguments(kwargs, error, match, counting_renderer):
    options = dict(TINY)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        instrument_stems(**options)
    assert counting_renderer == []


@pytest.mark.slow
@requires_espeak
def test_speech_bank(fresh_cache_dir, monkeypatch):
    voices = ["en-us+m1", "en-gb+f2"]
    bank = speech_stems(voices, n_utterances=2, seconds=1.0)
    assert bank.stems.shape == (4, 16000)
    assert bank.labels.tolist() == ["en-us+m1", "en-us+m1", "en-gb+f2", "en-gb+f2"]
    assert set(bank.fonts.tolist()) == {"espeak-ng"}

    def no_synthesis(*args):
        raise AssertionError("espeak-ng ran although the bank is cached")

    monkeypatch.setattr(mixtures_module, "_synthesise", no_synthesis)
    np.testing.assert_array_equal(speech_stems(voices, n_utterances=2, seconds=1.0).stems,
                                  bank.stems)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"voices": "en-us+m1"}, TypeError, "voices must be a sequence"),
        ({"voices": []}, ValueError, "non-empty sequence of voice names"),
        ({"voices": ["en-us+m1", "en-us+m1"]}, ValueError, "voices must be distinct"),
        ({"n_utterances": 0}, ValueError, "'n_utterances' parameter of speech_stems"),
    ],
)
def test_speech_bank_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        speech_stems(**kwargs)


# ----------------------------------------------------------------------------- stream


def test_stream_examples_sum_bounds_counts_and_distinct_labels():
    stream = stream_of(augmentation=Augmentation(gain_range=(10.0, 20.0)))
    counts = set()
    for example in first(stream, 60):
        assert example.mixture.dtype == np.float32 and example.sources.dtype == np.float32
        assert example.mixture.shape == (RATE // 2,)
        assert example.sources.shape == (3, RATE // 2) and example.labels.shape == (3,)
        count = int(example.n_sources)
        counts.add(count)
        assert 1 <= count <= 3
        np.testing.assert_allclose(example.mixture, example.sources.sum(axis=0), atol=1e-6)
        assert np.abs(example.mixture).max() <= PEAK_CEILING + 1e-6
        assert np.abs(example.sources).max() <= PEAK_CEILING + 1e-6
        used = example.labels[:count]
        assert np.all(used >= 0) and len(set(used.tolist())) == count
        assert np.all(example.labels[count:] == -1)
        assert np.all(example.sources[count:] == 0)
        assert np.all(np.abs(example.sources[:count]).max(axis=1) > 0)
    assert counts == {1, 2, 3}
    assert stream.classes == ("c0", "c1", "c2", "c3")


def test_stream_levels_follow_level_range():
    stream = stream_of(level_range=(-30.0, -30.0), min_sources=1, max_sources=1)
    for example in first(stream, 10):
        rms = np.sqrt(np.mean(example.sources[0].astype(np.float64) ** 2))
        assert 20 * np.log10(rms) == pytest.approx(-30.0, abs=1e-3)


def test_stream_is_deterministic_for_a_seed():
    a, b = first(stream_of(), 5), first(stream_of(), 5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.mixture, y.mixture)
        np.testing.assert_array_equal(x.labels, y.labels)
    c = first(stream_of(random_state=4), 5)
    assert not np.array_equal(a[0].mixture, c[0].mixture)
    stream = stream_of()
    stream.set_epoch(1)
    assert not np.array_equal(first(stream, 1)[0].mixture, a[0].mixture)


def _batches(stream: MixtureStream, num_workers: int, n: int = 3) -> list:
    loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=num_workers)
    iterator = iter(loader)
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_is_deterministic_with_dataloader_workers(num_workers):
    first_run = _batches(stream_of(augmentation=Augmentation()), num_workers)
    second_run = _batches(stream_of(augmentation=Augmentation()), num_workers)
    for x, y in zip(first_run, second_run, strict=True):
        assert isinstance(x, MixtureExample) and x.sources.shape == (4, 3, RATE // 2)
        torch.testing.assert_close(x.mixture, y.mixture, rtol=0, atol=0)
        torch.testing.assert_close(x.sources, y.sources, rtol=0, atol=0)
        torch.testing.assert_close(x.labels, y.labels, rtol=0, atol=0)
    if num_workers == 2:
        # Worker 0 draws the single-process sequence; the workers take turns by batch.
        single = _batches(stream_of(augmentation=Augmentation()), 0, n=1)[0]
        torch.testing.assert_close(first_run[0].mixture, single.mixture, rtol=0, atol=0)
        assert not torch.equal(first_run[1].mixture, single.mixture)


def test_stream_torch_output_and_take():
    example = first(stream_of(output="torch"), 1)[0]
    assert isinstance(example.mixture, torch.Tensor) and example.mixture.dtype == torch.float32
    data = stream_of().take(4)
    assert isinstance(data, MixtureSet) and data.sources.shape == (4, 3, RATE // 2)
    reference = first(stream_of(), 4)
    np.testing.assert_array_equal(data.mixtures[3], reference[3].mixture)
    assert data.instruments[0, int(data.n_sources[0]):].tolist() == \
        [""] * (3 - int(data.n_sources[0]))


def test_stream_from_a_bank_and_short_stems():
    bank = StemBank(*synthetic(n_classes=2, per_class=1, n_samples=RATE // 4)[:1],
                    np.array(["x", "y"]), np.array(["f", "f"]), RATE)  # fmt: skip
    example = first(MixtureStream(bank, crop_samples=RATE // 2), 1)[0]
    assert example.sources.shape == (2, RATE // 2)
    assert np.all(example.sources[:, RATE // 4:] == 0)  # zero-padded beyond the stem


def test_stream_skips_silent_offsets():
    stems = np.zeros((2, 4 * RATE), np.float32)
    stems[:, RATE:RATE + RATE // 2] = 0.1  # sound in a quarter of each stem
    stream = MixtureStream(stems, ["a", "b"], sample_rate=RATE, crop_samples=RATE // 2)
    for example in first(stream, 10):
        assert np.all(np.abs(example.sources).max(axis=1) > 0)


# ----------------------------------------------------------------------------- augmentation

ONLY = {"gain_probability": 0.0, "tilt_probability": 0.0, "pitch_probability": 0.0,
        "reverb_probability": 0.0}  # fmt: skip


def only(kind: str, **ranges) -> Augmentation:
    return Augmentation(**{**ONLY, f"{kind}_probability": 1.0, **ranges})


def _single(augmentation: Augmentation | None, stems: np.ndarray, seed: int = 0,
            level_range=(-30.0, -30.0)) -> np.ndarray:
    stream = MixtureStream(stems, ["a"], sample_rate=RATE, crop_samples=stems.shape[1],
                           min_sources=1, max_sources=1, level_range=level_range,
                           augmentation=augmentation, random_state=seed)  # fmt: skip
    return first(stream, 1)[0].sources[0].astype(np.float64)


def _tone(frequency: float, n_samples: int = RATE) -> np.ndarray:
    return (0.1 * np.sin(2 * np.pi * frequency * np.arange(n_samples) / RATE))[None].astype(
        np.float32)


def test_probability_zero_changes_nothing():
    stems = synthetic(n_classes=1, per_class=1)[0]
    np.testing.assert_array_equal(_single(Augmentation(**ONLY), stems), _single(None, stems))


def test_gain_moves_the_level_within_its_range():
    stems = synthetic(n_classes=1, per_class=1)[0]
    plain = _single(None, stems)
    louder = _single(only("gain", gain_range=(6.0, 6.0)), stems)
    assert 20 * np.log10(np.abs(louder).max() / np.abs(plain).max()) == pytest.approx(6.0,
                                                                                      abs=1e-4)


def test_tilt_raises_highs_and_lowers_lows():
    stems = _tone(250.0) + _tone(2000.0)  # two octaves below and one above 1 kHz
    for tilt in (4.0, -4.0):
        tilted = _single(only("tilt", tilt_range=(tilt, tilt)), stems, level_range=(-20, -20))
        spectrum = np.abs(np.fft.rfft(tilted))
        low, high = spectrum[250], spectrum[2000]  # 1 Hz bins: 1 s at 8 kHz
        assert 20 * np.log10(high / low) == pytest.approx(3 * tilt, abs=0.05)


def test_pitch_shift_keeps_the_length_and_moves_the_pitch():
    stems = _tone(440.0, 2 * RATE)
    for semitones in (1.0, -1.0):
        shifted = _single(only("pitch", pitch_range=(semitones, semitones)), stems)
        assert shifted.size == 2 * RATE
        spectrum = np.abs(np.fft.rfft(shifted * np.hanning(shifted.size)))
        peak = np.argmax(spectrum) * RATE / shifted.size
        assert peak == pytest.approx(440.0 * 2 ** (semitones / 12), abs=1.0)


def test_reverb_adds_a_tail_that_grows_with_rt60():
    stems = np.zeros((1, RATE), np.float32)
    stems[0, : RATE // 10] = np.random.default_rng(0).standard_normal(RATE // 10) * 0.1

    def tail_energy(rt60):
        wet = _single(only("reverb", rt60_range=(rt60, rt60)), stems)
        window = wet[RATE // 10 + RATE // 20:]  # from 50 ms after the burst ends
        return np.sum(window**2) / np.sum(wet**2)

    dry = _single(None, stems)
    assert np.sum(dry[RATE // 10:] ** 2) == 0
    short, long = tail_energy(0.2), tail_energy(0.8)
    assert 0 < short < long


def test_augmentation_draws_stay_in_range(monkeypatch):
    drawn = {"pitch": [], "tilt": [], "rt60": []}
    real_ratio, real_tilt, real_reverb = (stems_module._pitch_ratio, stems_module._tilt,
                                          stems_module._reverb)  # fmt: skip
    monkeypatch.setattr(stems_module, "_pitch_ratio",
                        lambda s: drawn["pitch"].append(s) or real_ratio(s))
    monkeypatch.setattr(stems_module, "_tilt",
                        lambda a, t, o: drawn["tilt"].append(t) or real_tilt(a, t, o))
    monkeypatch.setattr(stems_module, "_reverb",
                        lambda a, r, s, g: drawn["rt60"].append(r) or real_reverb(a, r, s, g))
    augmentation = Augmentation(pitch_range=(-0.5, 0.25), tilt_range=(1.0, 2.0),
                                rt60_range=(0.2, 0.3))
    first(stream_of(augmentation=augmentation), 40)
    for name, (low, high) in (("pitch", (-0.5, 0.25)), ("tilt", (1.0, 2.0)),
                              ("rt60", (0.2, 0.3))):
        values = np.array(drawn[name])
        assert 20 < values.size < 100  # about half of ~80 sources
        assert values.min() >= low and values.max() <= high
    assert abs(np.log2(1 / (lambda r: r[0] / r[1])(real_ratio(1.0))) * 12 - 1.0) < 0.02


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_sources": 0}, ValueError,
         r"'min_sources' parameter of MixtureStream must be an int in the range \[1, 4\]"),
        ({"max_sources": 5}, ValueError, r"'max_sources' .* an int in the range \[1, 4\]"),
        ({"min_sources": 3, "max_sources": 2}, ValueError,
         r"'max_sources' .* an int in the range \[3, 4\]. Got 2"),
        ({"min_sources": 4, "max_sources": 4}, None, None),
        ({"max_sources": 2.0}, TypeError, "'max_sources' parameter .* Got 2.0"),
        ({"crop_samples": 0}, ValueError, r"'crop_samples' .* \[16, inf\). Got 0"),
        ({"level_range": (-10, -20)}, ValueError, "level_range must satisfy"),
        ({"level_range": "loud"}, TypeError, "level_range must be a pair"),
        ({"augmentation": {"gain": 1}}, TypeError, "augmentation must be an Augmentation"),
        ({"random_state": -1}, ValueError, r"'random_state' .* \[0, inf\) or None. Got -1"),
        ({"random_state": 1.5}, TypeError, "'random_state' parameter .* Got 1.5"),
        ({"output": "jax"}, ValueError, "'output' parameter .* a str among .* Got 'jax'"),
        ({"sample_rate": None}, ValueError, "labels and sample_rate are required"),
    ],
)
def test_stream_bad_arguments(kwargs, error, match):
    if error is None:  # a valid edge case
        stream_of(**kwargs)
        return
    with pytest.raises(error, match=match):
        stream_of(**kwargs)


def test_stream_bad_stems_and_labels():
    stems, labels = synthetic()
    with pytest.raises(ValueError, match="labels must be 8 str or int"):
        MixtureStream(stems, labels[:-1], sample_rate=RATE)
    with pytest.raises(TypeError, match="labels must be a sequence"):
        MixtureStream(stems, "c0", sample_rate=RATE)
    with pytest.raises(ValueError, match="stems must be a StemBank, an array of shape"):
        MixtureStream(stems[0], ["a"], sample_rate=RATE)
    with pytest.raises(TypeError, match="stems must be a StemBank"):
        MixtureStream("audio.wav", ["a"], sample_rate=RATE)
    bad = stems.copy()
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"stems\[1\] contains NaN"):
        MixtureStream(bad, labels, sample_rate=RATE)
    silent = stems.copy()
    silent[2] = 0
    with pytest.raises(ValueError, match=r"stems\[2\] is silent"):
        MixtureStream(silent, labels, sample_rate=RATE)
    bank = StemBank(stems, np.array(labels), np.array(["f"] * 8), RATE)
    with pytest.raises(ValueError, match="labels must be None when stems is a StemBank"):
        MixtureStream(bank, labels)
    with pytest.raises(ValueError, match="sample_rate must match the StemBank"):
        MixtureStream(bank, sample_rate=16000)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gain_probability": 1.5}, ValueError,
         r"'gain_probability' parameter of Augmentation must be a float in the range "
         r"\[0.0, 1.0\]. Got 1.5"),
        ({"tilt_probability": "often"}, TypeError, "'tilt_probability' parameter .* 'often'"),
        ({"pitch_range": (-5.0, 0.0)}, ValueError, r"pitch_range must satisfy -4 <= low"),
        ({"rt60_range": (0.0, 1.0)}, ValueError, "rt60_range must satisfy"),
        ({"tilt_range": 3.0}, TypeError, "tilt_range must be a pair"),
    ],
)
def test_augmentation_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Augmentation(**kwargs)
