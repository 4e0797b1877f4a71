"""Tests for decomp.audio.io: reading, writing, downmixing, resampling and file errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile
import torch

from decomp.audio.io import AudioFileError, audio_level, load_audio, write_audio
from decomp.exceptions import DecompError


def _sine(frequency: float, sample_rate: int, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _peak_frequency(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sample_rate)[spectrum.argmax()])


# ----------------------------------------------------------------------------- round trips


def test_wav_round_trip_is_exact_and_float32(tmp_path):
    audio = _sine(440, 16000)
    path = write_audio(tmp_path / "sine.wav", audio, 16000)
    assert soundfile.info(path).subtype == "FLOAT"
    loaded, rate = load_audio(path)
    assert rate == 16000
    assert loaded.dtype == np.float32 and loaded.shape == audio.shape
    np.testing.assert_array_equal(loaded, audio)


def test_float_wav_keeps_samples_beyond_one(tmp_path):
    # The point of writing float WAV: nothing clips.
    audio = np.array([0.0, 1.5, -2.0, 0.25], dtype=np.float32)
    with pytest.warns(UserWarning, match="beyond full scale"):  # read as it is, with a word
        loaded, _ = load_audio(write_audio(tmp_path / "loud.wav", audio, 16000))
    np.testing.assert_array_equal(loaded, audio)


@pytest.mark.parametrize("subtype, tolerance", [(None, 1 / 2**15), ("PCM_24", 1 / 2**23)])
def test_flac_round_trip_within_quantisation(tmp_path, subtype, tolerance):
    audio = _sine(440, 16000)
    loaded, rate = load_audio(write_audio(tmp_path / "sine.flac", audio, 16000, subtype=subtype))
    assert rate == 16000 and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, audio, atol=tolerance)


def test_ogg_round_trip_keeps_length_and_pitch(tmp_path):
    audio = _sine(440, 16000, seconds=0.5)
    loaded, rate = load_audio(write_audio(tmp_path / "sine.ogg", audio, 16000))
    assert rate == 16000 and loaded.shape == audio.shape
    assert abs(_peak_frequency(loaded, rate) - 440) < 5


def test_stereo_is_downmixed_by_averaging(tmp_path):
    left, right = _sine(440, 16000), _sine(660, 16000)
    path = write_audio(tmp_path / "stereo.wav", np.stack([left, right]), 16000)
    assert soundfile.info(path).channels == 2
    mono, _ = load_audio(path)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)
    channels, _ = load_audio(path, mono=False)
    assert channels.shape == (2, left.size)
    np.testing.assert_array_equal(channels[1], right)


def test_mono_false_on_a_mono_file_is_channel_first(tmp_path):
    audio = _sine(440, 16000)
    channels, _ = load_audio(write_audio(tmp_path / "a.wav", audio, 16000), mono=False)
    assert channels.shape == (1, audio.size)


def test_resampling_44k_to_16k_keeps_frequency_and_duration(tmp_path):
    audio = _sine(1000, 44100, seconds=0.5)
    path = write_audio(tmp_path / "cd.wav", audio, 44100)
    loaded, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000 and loaded.dtype == np.float32
    assert abs(loaded.size - 8000) <= 1
    assert abs(_peak_frequency(loaded, rate) - 1000) < 3
    # Resampling must not change the level.
    assert np.max(np.abs(loaded[1000:-1000])) == pytest.approx(0.5, abs=0.01)


def test_sample_rate_none_keeps_the_file_rate(tmp_path):
    audio = _sine(440, 22050)
    loaded, rate = load_audio(write_audio(tmp_path / "a.wav", audio, 22050), sample_rate=None)
    assert rate == 22050
    np.testing.assert_array_equal(loaded, audio)


def test_write_accepts_tensors_and_str_paths(tmp_path):
    audio = torch.from_numpy(_sine(440, 16000))
    path = str(tmp_path / "t.wav")
    write_audio(path, audio, 16000)
    loaded, _ = load_audio(path)
    np.testing.assert_array_equal(loaded, audio.numpy())


# ----------------------------------------------------------------------------- read errors


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_audio(path)


def test_corrupt_file_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"RIFF this is not really a wave file" * 10)
    with pytest.raises(AudioFileError, match=r"Cannot read audio file .*garbage\.wav.*corrupt"):
        load_audio(path)
    # Callers may catch it as either kind.
    assert issubclass(AudioFileError, ValueError) and issubclass(AudioFileError, DecompError)


def test_zero_byte_file_is_a_clear_error(tmp_path):
    path = tmp_path / "zero.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioFileError, match=r"zero\.flac"):
        load_audio(path)


def test_file_with_no_samples_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(AudioFileError, match=r"empty\.wav.* holds no samples"):
        load_audio(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="found a directory"):
        load_audio(tmp_path)


@pytest.mark.parametrize(
    "sample_rate, error, message",
    [(0, ValueError, r"'sample_rate' parameter of load_audio must be an int in the range "
                     r"\[1, inf\) or None. Got 0 instead"),
     (-16000, ValueError, "Got -16000 instead"),
     (16000.0, TypeError, "'sample_rate' parameter of load_audio must be an int"),
     (True, TypeError, "sample_rate")],
)
def test_bad_sample_rate_is_refused(tmp_path, sample_rate, error, message):
    path = write_audio(tmp_path / "a.wav", _sine(440, 16000), 16000)
    with pytest.raises(error, match=message):
        load_audio(path, sample_rate=sample_rate)


def test_path_of_wrong_type_is_refused():
    with pytest.raises(TypeError, match="path must be a str or an os.PathLike; got int"):
        load_audio(3)


# ----------------------------------------------------------------------------- write errors


@pytest.mark.parametrize(
    "audio, error, message",
    [
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), ValueError,
         r"audio contains NaN or infinity \(1 samples\)"),
        (np.array([0.0, np.inf], dtype=np.float32), ValueError, "NaN or infinity"),
        (np.zeros(0, dtype=np.float32), ValueError,
         r"audio is empty: got an array of shape \(0,\)"),
        (np.zeros((2, 0), dtype=np.float32), ValueError, "audio is empty"),
        (np.zeros((1, 2, 3), dtype=np.float32), ValueError,
         r"audio must have 1 \(n_samples,\) or 2 .* dimensions; got an array of shape \(1, 2, 3\)"),
        (np.zeros(10, dtype=np.int16), TypeError, "floating-point samples .* got dtype int16"),
        ("noise", TypeError, "audio must be a NumPy array or a torch tensor; got str"),
    ],
)
def test_write_refuses_bad_audio(tmp_path, audio, error, message):
    with pytest.raises(error, match=message):
        write_audio(tmp_path / "bad.wav", audio, 16000)
    assert not (tmp_path / "bad.wav").exists()


def test_write_refuses_clipping_in_integer_formats(tmp_path):
    audio = np.array([0.0, 1.25, -0.5], dtype=np.float32)
    with pytest.raises(ValueError, match=r"audio reaches 1.25 .* FLAC .* would clip"):
        write_audio(tmp_path / "loud.flac", audio, 16000)
    with pytest.raises(ValueError, match="would clip"):
        write_audio(tmp_path / "loud.wav", audio, 16000, subtype="PCM_16")


def test_write_refuses_unknown_extension_and_subtype(tmp_path):
    audio = _sine(440, 16000)
    with pytest.raises(ValueError, match=r"extension of .*a\.xyz.*expected one of"):
        write_audio(tmp_path / "a.xyz", audio, 16000)
    with pytest.raises(ValueError, match="subtype='FLOAT' cannot be written to a FLAC file"):
        write_audio(tmp_path / "a.flac", audio, 16000, subtype="FLOAT")


def test_write_into_missing_folder_names_the_path(tmp_path):
    path = tmp_path / "missing" / "a.wav"
    with pytest.raises(FileNotFoundError, match=r"missing.*a\.wav.*folder does not exist"):
        write_audio(path, _sine(440, 16000), 16000)


@pytest.mark.parametrize("name", ["a.flac", "b.OGG", "c.wav"])
def test_write_goes_through_the_atomic_writer(tmp_path, name):
    # The temporary ends in ".part": the format must follow the target's extension.
    path = write_audio(tmp_path / name, _sine(440, 16000), 16000)
    assert soundfile.info(path).format == path.suffix.lstrip(".").upper()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "a.wav", _sine(440, 16000), 16000)
    before = path.read_bytes()

    def interrupted(file, *args, **kwargs):
        file.write(b"RIFF half")
        raise KeyboardInterrupt

    monkeypatch.setattr(soundfile, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_audio(path, _sine(880, 16000), 16000)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


# ------------------------------------------------------- streaming reads and input checks


def _first_audio_warning(record):
    from decomp.exceptions import AudioWarning

    return [str(w.message) for w in record if issubclass(w.category, AudioWarning)]


@pytest.mark.parametrize("file_rate, channels", [(16000, 1), (44100, 2), (11025, 1)])
def test_stream_equals_load_audio(tmp_path, file_rate, channels, recwarn):
    from decomp.audio import AudioStream

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((channels, 3 * file_rate))).astype(np.float32)
    path = write_audio(tmp_path / "noise.flac", audio, file_rate, subtype="PCM_24")
    loaded, _ = load_audio(path, 16000)
    stream = AudioStream(path, 16000, block_frames=1000)
    blocks = list(stream)
    assert len(blocks) > 10 and all(block.dtype == np.float32 and block.size for block in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), loaded)
    assert stream.n_samples == loaded.size
    assert stream.level == pytest.approx(audio_level(loaded, 16000))
    assert not _first_audio_warning(recwarn)


def test_audio_level_ignores_dc_and_measures_the_loudest_window():
    t = np.arange(32000) / 16000
    sine = 0.1 * np.sin(2 * np.pi * 440 * t)
    assert audio_level(sine, 16000) == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.05)
    assert audio_level(sine + 0.5, 16000) == pytest.approx(audio_level(sine, 16000), abs=0.05)
    assert audio_level(np.full(16000, 0.25), 16000) < -200
    # Silence with one loud 0.1 s burst is as loud as the burst.
    burst = np.zeros(32000)
    burst[16000:17600] = sine[:1600]
    assert audio_level(burst, 16000) == pytest.approx(audio_level(sine, 16000), abs=0.5)
    # Any cut into blocks gives the same level.
    from decomp.audio.io import _LevelMeter

    meter = _LevelMeter(16000)
    for start in range(0, sine.size, 777):
        meter.add(sine[start:start + 777])
    assert meter.level() == pytest.approx(audio_level(sine, 16000), abs=1e-9)


def test_truncated_wav_warns_with_both_lengths(tmp_path):
    from decomp.audio import AudioStream
    from decomp.exceptions import AudioWarning

    path = tmp_path / "cut.wav"
    soundfile.write(path, _sine(440, 16000, seconds=2.0), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:44 + 2 * 16000])  # header + 1 s of the 2 s announced
    pattern = r"cut\.wav.*shorter than its header says.*16000 frames \(1\.00 s\) of the 32000"
    with pytest.warns(AudioWarning, match=pattern):
        audio, _ = load_audio(path)
    assert audio.shape == (16000,)
    with pytest.warns(AudioWarning, match=pattern):
        assert sum(block.size for block in AudioStream(path)) == 16000


def test_whole_wav_and_unknown_data_size_do_not_warn(tmp_path, recwarn):
    path = tmp_path / "whole.wav"
    soundfile.write(path, _sine(440, 16000), 16000, subtype="PCM_16")
    load_audio(path)
    # A recorder that never finished its header writes 0xFFFFFFFF as the data size.
    data = bytearray(path.read_bytes())
    data[40:44] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    load_audio(path)
    assert not _first_audio_warning(recwarn)


def test_beyond_full_scale_and_near_silence_warn_naming_the_file(tmp_path):
    from decomp.audio import AudioStream
    from decomp.exceptions import AudioWarning

    loud = write_audio(tmp_path / "loud.wav", 1000 * _sine(440, 16000), 16000)
    with pytest.warns(AudioWarning, match=r"loud\.wav.*beyond full scale.*peak is 500"):
        load_audio(loud)
    with pytest.warns(AudioWarning, match=r"loud\.wav.*beyond full scale"):
        list(AudioStream(loud))
    quiet = write_audio(tmp_path / "hiss.wav", 1e-5 * _sine(440, 16000), 16000)
    with pytest.warns(AudioWarning, match=r"hiss\.wav.*near-silent.*-109\.0 dBFS"):
        load_audio(quiet)


def test_stream_refuses_a_rate_below_the_minimum(tmp_path):
    from decomp.audio import MIN_SAMPLE_RATE, AudioStream

    path = write_audio(tmp_path / "low.wav", _sine(440, 4000), 4000)
    with pytest.raises(ValueError, match=r"low\.wav.*4000 Hz, below the 8000 Hz"):
        AudioStream(path, 16000, min_sample_rate=MIN_SAMPLE_RATE)
    assert sum(block.size for block in AudioStream(path, 16000)) == 4000  # no minimum asked
    with pytest.raises(FileNotFoundError):
        AudioStream(tmp_path / "missing.wav")
