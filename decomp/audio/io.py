"""Reading and writing audio files: float32 mono waveforms at a chosen sample rate.

Reading checks what it reads. Each check warns at most once per file, with an
:class:`~decomp.exceptions.AudioWarning` that names the file: samples beyond full scale
(``|x| > 1``), a file whose data is shorter than its header says (a truncated download or
an interrupted recording), and near-silent audio, whose :func:`audio_level` is below
:data:`SILENCE_FLOOR_DBFS`. :class:`AudioStream` reads a long file block by block, so a
two-hour recording never has to fit in memory at once.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from collections.abc import Iterator
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
import soundfile
import torch

from decomp._files import atomic_write
from decomp._validation import StrictInterval, check_audio, check_params
from decomp.exceptions import AudioFileError, AudioWarning

__all__ = [
    "MIN_SAMPLE_RATE",
    "SILENCE_FLOOR_DBFS",
    "AudioFileError",
    "AudioStream",
    "AudioWarning",
    "audio_level",
    "load_audio",
    "resampling_message",
    "write_audio",
]

#: The lowest file sample rate (Hz) that :class:`AudioStream` accepts when asked to check
#: it (transcription does): below 8 kHz the Nyquist frequency falls under 4 kHz and the
#: top octave of piano fundamentals (C7 = 2093 Hz up to C8 = 4186 Hz) is partly lost;
#: such a rate is a mistake (a wrong header, a telephone capture), not a piano recording.
MIN_SAMPLE_RATE = 8000

#: Recordings whose :func:`audio_level` is below this (dB relative to full scale) are
#: near-silent: reading warns, and transcription emits no notes. Real piano, even played
#: softly (velocity 20 throughout: -49 dBFS as rendered) is above it; -90 dBFS hiss, a
#: DC offset or sub-audio rumble are not.
SILENCE_FLOOR_DBFS = -60.0

# The level meter: a high-pass below the lowest piano pitch (A0 = 27.5 Hz) removes DC
# offset and rumble; the level is the RMS of the loudest window of this length.
_LEVEL_HIGHPASS_HZ = 20.0
_LEVEL_WINDOW_SECONDS = 0.1

# Subtypes that store samples as floats; every other subtype is integer PCM (or a lossy
# codec fed integer-range samples), so values beyond [-1, 1] would clip on writing.
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})


def _check_path(path: Any, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or an os.PathLike; got {type(path).__name__}.")
    return Path(path)


# A sample rate in Hz: an int (NumPy's too, but not a bool) >= 1.
_SAMPLE_RATE = StrictInterval(Integral, 1, None, closed="left")


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = 16000,
    *,
    mono: bool = True,
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 samples, downmixed and resampled as asked.

    Any format that libsndfile reads works (WAV, FLAC, OGG/Vorbis, AIFF, ...).

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.
    sample_rate : int or None, default=16000
        The rate (Hz) to return the audio at. When the file's rate differs, the audio is
        resampled with ``librosa.resample(res_type="soxr_hq")``. ``None`` keeps the file's
        own rate.
    mono : bool, default=True
        Average the channels into one. With ``mono=False`` every channel is kept.

    Returns
    -------
    audio : ndarray of shape (n_samples,) or (n_channels, n_samples), float32
        The samples, nominally in [-1, 1]. Channel-first when ``mono=False`` (even for a
        one-channel file), like a batch of waveforms.
    sample_rate : int
        The rate (Hz) of ``audio``.

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``path``.
    AudioFileError
        If the file cannot be decoded or holds no samples (a ``ValueError`` and a
        ``DecompError``).
    TypeError, ValueError
        If ``path`` or ``sample_rate`` is of the wrong type or value.

    Warns
    -----
    AudioWarning
        Once per file and reason, naming the file: samples beyond full scale
        (``|x| > 1``); data shorter than the header announces (a truncated file, read as
        far as it goes); near-silence (:func:`audio_level` below
        :data:`SILENCE_FLOOR_DBFS`).

    See Also
    --------
    AudioStream : the same samples, block by block, for recordings too long to hold.

    Examples
    --------
    >>> audio, rate = load_audio("piano.wav")  # doctest: +SKIP
    >>> audio.shape, audio.dtype, rate  # doctest: +SKIP
    ((160000,), dtype('float32'), 16000)
    """
    check_params({"sample_rate": [_SAMPLE_RATE, None]}, {"sample_rate": sample_rate},
                 "load_audio")
    path = _check_existing_file(path)
    if sample_rate is not None:
        sample_rate = int(sample_rate)
    info = _file_info(path)
    try:
        # (n_samples, n_channels) even for mono files, so one code path handles both.
        frames, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise _decode_error(path, error) from error
    if frames.shape[0] == 0:
        raise AudioFileError(f"Audio file {str(path)!r} holds no samples (it is empty).")
    _warn_if_short(path, _declared_frames(path, info), frames.shape[0], info.samplerate)
    name = f"Audio file {str(path)!r}"
    _warn_if_beyond_full_scale(name, float(np.abs(frames).max()))

    audio = np.ascontiguousarray(frames.T)  # (n_channels, n_samples)
    if mono:
        audio = _downmix(audio)  # (n_samples,)
        _warn_if_silent(name, audio_level(audio, int(file_rate)))
    else:
        _warn_if_silent(name, max(audio_level(channel, int(file_rate)) for channel in audio))
    if sample_rate is not None and sample_rate != file_rate:
        # Imported here: librosa's import is slow and only resampling needs it.
        import librosa

        audio = librosa.resample(
            audio, orig_sr=file_rate, target_sr=sample_rate, res_type="soxr_hq", axis=-1
        )
    else:
        sample_rate = int(file_rate)
    return audio.astype(np.float32, copy=False), sample_rate


def _check_existing_file(path: Any) -> Path:
    path = _check_path(path)
    if not path.exists():
        raise FileNotFoundError(f"No audio file at {str(path)!r}.")
    if path.is_dir():
        raise IsADirectoryError(f"Expected an audio file at {str(path)!r}; found a directory.")
    return path


def _decode_error(path: Path, error: Exception) -> AudioFileError:
    return AudioFileError(
        f"Cannot read audio file {str(path)!r}: it is corrupt or not in a format "
        f"libsndfile reads (WAV, FLAC, OGG, ...). Decoder said: {error}"
    )


def _file_info(path: Path) -> Any:
    try:
        return soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise _decode_error(path, error) from error


def _downmix(audio: np.ndarray) -> np.ndarray:
    """(n_channels, n_samples) -> (n_samples,): the mean of the channels.

    One function for :func:`load_audio` and :class:`AudioStream`, so both give the same
    samples.
    """
    return audio.mean(axis=0)


def _declared_frames(path: Path, info: Any) -> int:
    """Frames the file's header promises.

    libsndfile trims a WAV's data length to what the file holds and reports that, so a
    truncated WAV looks whole; the RIFF header's own ``data`` size is read here instead.
    Other formats report their header's count through libsndfile.
    """
    frames = int(info.frames)
    if info.format != "WAV":
        return frames
    try:
        with open(path, "rb") as file:
            if file.read(12)[:4] != b"RIFF":  # RF64 and friends: trust libsndfile
                return frames
            block_align = 0
            for _ in range(64):  # a WAV has a handful of chunks before "data"
                header = file.read(8)
                if len(header) < 8:
                    return frames
                name, size = header[:4], struct.unpack("<I", header[4:])[0]
                if name == b"fmt ":
                    block_align = struct.unpack("<H", file.read(16)[12:14])[0]
                    file.seek(size - 16 + (size & 1), os.SEEK_CUR)
                elif name == b"data":
                    # 0 and 0xFFFFFFFF mean "unknown" (a recorder that never finished
                    # the header): nothing is promised then.
                    if block_align == 0 or size in (0, 0xFFFFFFFF):
                        return frames
                    return max(frames, size // block_align)
                else:
                    file.seek(size + (size & 1), os.SEEK_CUR)
    except (OSError, struct.error):
        pass
    return frames


def _warn_if_short(path: Path, declared: int, read: int, sample_rate: int) -> None:
    if read < declared:
        warnings.warn(
            f"Audio file {str(path)!r} is shorter than its header says: it holds {read} "
            f"frames ({read / sample_rate:.2f} s) of the {declared} ({declared / sample_rate:.2f}"
            " s) announced, so it is truncated (an interrupted copy or recording?). Only the "
            "frames present are used.",
            AudioWarning, stacklevel=3,
        )


def _warn_if_beyond_full_scale(name: str, peak: float) -> None:
    if peak > 1.0:
        warnings.warn(
            f"{name} has samples beyond full scale: its peak is {peak:.4g} "
            f"({20 * math.log10(peak):+.1f} dBFS), while audio is expected in [-1, 1]. "
            "It is used as it is; check its scaling (integer PCM read as floats?).",
            AudioWarning, stacklevel=3,
        )


def _describe_level(level: float) -> str:
    # Below -120 dBFS (under 24-bit quantisation) the figure is rounding noise of the
    # high-pass filter, not a property of the recording.
    return f"{level:.1f} dBFS" if level >= -120 else "below -120 dBFS (digital silence)"


def _warn_if_silent(name: str, level: float, floor: float = SILENCE_FLOOR_DBFS) -> None:
    if level < floor:
        warnings.warn(
            f"{name} is near-silent: its level is {_describe_level(level)}, below the "
            f"{floor:.0f} dBFS floor (the RMS of its loudest {_LEVEL_WINDOW_SECONDS:g} s, "
            f"above {_LEVEL_HIGHPASS_HZ:g} Hz, so a DC offset does not count).",
            AudioWarning, stacklevel=3,
        )


class _LevelMeter:
    """The level of :func:`audio_level`, measured on a waveform given block by block.

    The high-pass keeps its state from block to block and windows are summed whole, so
    any cutting of the waveform into blocks gives the same level.
    """

    def __init__(self, sample_rate: int) -> None:
        # Second-order Butterworth high-pass at 20 Hz (below A0, 27.5 Hz).
        self._sos = scipy.signal.butter(2, _LEVEL_HIGHPASS_HZ, "highpass", fs=sample_rate,
                                        output="sos")
        self._window = max(1, round(_LEVEL_WINDOW_SECONDS * sample_rate))
        self._state: np.ndarray | None = None
        self._carry = np.zeros(0)  # filtered samples of the window not yet complete
        self._loudest = 0.0  # largest mean square of a whole window

    def add(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.size == 0:
            return
        if self._state is None:
            # Start in the steady state of a constant signal at the first sample, so a DC
            # offset leaves no step transient.
            self._state = scipy.signal.sosfilt_zi(self._sos) * samples[0]
        filtered, self._state = scipy.signal.sosfilt(self._sos, samples, zi=self._state)
        filtered = np.concatenate([self._carry, filtered])
        whole = filtered.size - filtered.size % self._window
        if whole:
            squares = np.square(filtered[:whole]).reshape(-1, self._window).mean(axis=1)
            self._loudest = max(self._loudest, float(squares.max()))
        self._carry = filtered[whole:]

    def level(self) -> float:
        loudest = self._loudest
        if self._carry.size:  # the last, partial window counts too
            loudest = max(loudest, float(np.square(self._carry).mean()))
        return 10 * math.log10(loudest) if loudest > 0 else -math.inf


def audio_level(audio: Any, sample_rate: int) -> float:
    """The level of a waveform in dBFS: the RMS of its loudest 0.1 s above 20 Hz.

    The waveform is high-passed at 20 Hz (second-order Butterworth, started in the steady
    state of its first sample), which removes a DC offset and sub-audio rumble but keeps
    every piano pitch (the lowest, A0, is 27.5 Hz). It is cut into 0.1 s windows and the
    level is ``10 * log10`` of the largest mean square of a window, in dB relative to
    full scale: a full-scale square wave is 0 dBFS, a full-scale sine -3 dBFS, silence
    ``-inf``. A recording below :data:`SILENCE_FLOOR_DBFS` is near-silent.

    Parameters
    ----------
    audio : array-like of shape (n_samples,)
        Floating-point samples, nominally in [-1, 1].
    sample_rate : int
        The rate (Hz) of ``audio``.

    Returns
    -------
    level : float
        In dBFS (``-inf`` for digital silence or a constant signal).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(16000) / 16000
    >>> round(audio_level(0.1 * np.sin(2 * np.pi * 440 * t), 16000), 1)
    -23.0
    >>> audio_level(np.full(16000, 0.3), 16000) < -200  # a DC offset alone
    True
    """
    check_params({"sample_rate": [_SAMPLE_RATE]}, {"sample_rate": sample_rate}, "audio_level")
    return _level(_mono_samples(audio, "audio"), int(sample_rate))


def _mono_samples(audio: Any, name: str) -> np.ndarray:
    """Checked (n_samples,) floating samples as a NumPy array."""
    audio = check_audio(audio, name=name, allow_batch=False)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    return np.asarray(audio)


def _level(samples: np.ndarray, sample_rate: int) -> float:
    meter = _LevelMeter(sample_rate)
    meter.add(samples)
    return meter.level()


def check_level(audio: Any, sample_rate: int, *, name: str = "audio") -> float:
    """Warn about samples that a file read would warn about; return their level.

    The in-memory counterpart of the checks of :func:`load_audio` and
    :class:`AudioStream`: an :class:`~decomp.exceptions.AudioWarning` naming ``name``
    when samples exceed full scale (``|x| > 1``) or the level is below
    :data:`SILENCE_FLOOR_DBFS`.

    Parameters
    ----------
    audio : array-like of shape (n_samples,)
        Floating-point samples, nominally in [-1, 1].
    sample_rate : int
        The rate (Hz) of ``audio``.
    name : str
        How the warnings name the audio.

    Returns
    -------
    level : float
        :func:`audio_level` of ``audio``, in dBFS.
    """
    check_params({"sample_rate": [_SAMPLE_RATE]}, {"sample_rate": sample_rate}, "check_level")
    samples = _mono_samples(audio, name)
    _warn_if_beyond_full_scale(name, float(np.abs(samples).max()))
    level = _level(samples, int(sample_rate))
    _warn_if_silent(name, level)
    return level


class AudioStream:
    """An audio file read block by block as float32 mono samples at a chosen rate.

    Iterating over the stream reads the file from the start, in blocks of
    ``block_frames`` file frames, downmixes each block (the mean of the channels, as
    :func:`load_audio`) and resamples it with a streaming ``soxr`` resampler at the same
    quality as :func:`load_audio` (``"HQ"``), so the concatenated blocks equal
    ``load_audio(path, sample_rate)[0]`` exactly while only a block is in memory. Blocks
    are never empty but vary in length (the resampler has a delay).

    Each iteration checks what it reads and warns, once per file, with an
    :class:`~decomp.exceptions.AudioWarning`: samples beyond full scale, a file shorter
    than its header says, and near-silence (:func:`audio_level` below
    :data:`SILENCE_FLOOR_DBFS`). After a complete iteration :attr:`n_samples`,
    :attr:`peak` and :attr:`level` describe the audio read.

    Parameters
    ----------
    path : str or os.PathLike
        The file (any format libsndfile reads).
    sample_rate : int or None, default=16000
        The rate (Hz) of the blocks; ``None`` keeps the file's own rate.
    block_frames : int, default=65536
        File frames read per block.
    min_sample_rate : int, optional
        Refuse (``ValueError``) a file whose own rate is lower, e.g.
        :data:`MIN_SAMPLE_RATE`. Default: no minimum.
    warn_resampling : bool, default=False
        Warn (an :class:`~decomp.exceptions.AudioWarning`, once per iteration, before
        the first block) when the file's rate is not ``sample_rate``, naming both rates:
        for models that work at one rate, whose users should know their file was
        resampled (:func:`resampling_message`).

    Attributes
    ----------
    path : Path
    file_sample_rate : int
        The file's own rate.
    sample_rate : int
        The rate of the blocks.
    n_channels : int
    declared_frames : int
        File frames the header announces.
    n_samples : int or None
        Samples yielded (at ``sample_rate``) by the last complete iteration.
    peak : float or None
        Largest ``|sample|`` in the file (before downmixing and resampling).
    level : float or None
        :func:`audio_level` of the yielded samples, in dBFS.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        If nothing, or a folder, is at ``path``.
    AudioFileError
        If the file cannot be decoded or holds no samples.
    ValueError
        If the file's rate is below ``min_sample_rate``.

    Examples
    --------
    >>> stream = AudioStream("concert.wav", 16000)  # doctest: +SKIP
    >>> total = sum(block.size for block in stream)  # doctest: +SKIP
    >>> total == stream.n_samples  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int | None = 16000,
        *,
        block_frames: int = 65536,
        min_sample_rate: int | None = None,
        warn_resampling: bool = False,
    ) -> None:
        check_params({"sample_rate": [_SAMPLE_RATE, None], "block_frames": [_SAMPLE_RATE],
                      "min_sample_rate": [_SAMPLE_RATE, None]},
                     {"sample_rate": sample_rate, "block_frames": block_frames,
                      "min_sample_rate": min_sample_rate}, "AudioStream")
        self.path = _check_existing_file(path)
        info = _file_info(self.path)
        self.file_sample_rate = int(info.samplerate)
        self.sample_rate = self.file_sample_rate if sample_rate is None else int(sample_rate)
        self.block_frames = int(block_frames)
        if min_sample_rate is not None:
            min_sample_rate = int(min_sample_rate)
            if self.file_sample_rate < min_sample_rate:
                raise ValueError(
                    f"Audio file {str(self.path)!r} is sampled at {self.file_sample_rate} Hz, "
                    f"below the {min_sample_rate} Hz needed (the front end works at "
                    f"{self.sample_rate} Hz): its header is wrong or it cannot hold the "
                    "frequencies analysed. Resample it from a better source."
                )
        self.warn_resampling = bool(warn_resampling)
        self.n_channels = int(info.channels)
        self.declared_frames = _declared_frames(self.path, info)
        self.n_samples: int | None = None
        self.peak: float | None = None
        self.level: float | None = None

    def __repr__(self) -> str:
        return (f"AudioStream({str(self.path)!r}, sample_rate={self.sample_rate}, "
                f"file_sample_rate={self.file_sample_rate})")

    def __iter__(self) -> Iterator[np.ndarray]:
        resampler = None
        if self.sample_rate != self.file_sample_rate:
            if self.warn_resampling:
                warnings.warn(resampling_message(self.path, self.file_sample_rate,
                                                 self.sample_rate), AudioWarning, stacklevel=2)
            import soxr  # librosa's resampling backend; imported only when needed

            resampler = soxr.ResampleStream(self.file_sample_rate, self.sample_rate, 1,
                                            dtype="float32", quality="HQ")
        meter = _LevelMeter(self.sample_rate)
        frames_read, n_samples, peak = 0, 0, 0.0
        try:
            with soundfile.SoundFile(str(self.path)) as file:
                while True:
                    frames = file.read(self.block_frames, dtype="float32", always_2d=True)
                    if frames.shape[0] == 0:
                        break
                    frames_read += frames.shape[0]
                    peak = max(peak, float(np.abs(frames).max()))
                    block = _downmix(frames.T)  # (n_frames,)
                    if resampler is not None:
                        block = resampler.resample_chunk(block, last=False)
                    if block.size:
                        meter.add(block)
                        n_samples += block.size
                        yield block.astype(np.float32, copy=False)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            raise _decode_error(self.path, error) from error
        if frames_read == 0:
            raise AudioFileError(f"Audio file {str(self.path)!r} holds no samples (it is empty).")
        if resampler is not None:
            block = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if block.size:
                meter.add(block)
                n_samples += block.size
                yield block.astype(np.float32, copy=False)
        self.n_samples, self.peak, self.level = n_samples, peak, meter.level()
        name = f"Audio file {str(self.path)!r}"
        _warn_if_short(self.path, self.declared_frames, frames_read, self.file_sample_rate)
        _warn_if_beyond_full_scale(name, peak)
        _warn_if_silent(name, self.level)


def resampling_message(path: str | os.PathLike, file_sample_rate: int, sample_rate: int) -> str:
    """The one line that tells a user their file is resampled for a model.

    ``AudioStream(..., warn_resampling=True)`` warns with it, and so does the command
    line; being one text, a caller can filter the library's copy of a warning it gave.

    Examples
    --------
    >>> resampling_message("mix.wav", 44100, 16000)
    "Audio file 'mix.wav' is sampled at 44100 Hz; resampling it to 16000 Hz, the model's rate."
    """
    return (f"Audio file {str(path)!r} is sampled at {file_sample_rate} Hz; resampling it to "
            f"{sample_rate} Hz, the model's rate.")


def write_audio(
    path: str | os.PathLike,
    audio: Any,
    sample_rate: int,
    *,
    subtype: str | None = None,
) -> Path:
    """Write a waveform (or channels) to an audio file; the format follows the extension.

    WAV files are written as 32-bit float (subtype ``"FLOAT"``) by default, so samples
    beyond [-1, 1] are stored as they are, never clipped. Formats that store integers
    (FLAC, 16/24-bit WAV, ...) would clip such samples, so they are refused instead.
    The file is written atomically (a temporary sibling, then a rename): an interrupted
    write leaves the previous file or none.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write; the extension (``.wav``, ``.flac``, ``.ogg``, ...) picks the
        format. The folder must exist.
    audio : ndarray or Tensor of shape (n_samples,) or (n_channels, n_samples)
        Floating-point samples, channel-first.
    sample_rate : int
        The rate (Hz) of ``audio``.
    subtype : str, optional
        A libsndfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ...). Default:
        ``"FLOAT"`` for WAV, libsndfile's default for the other formats (``"PCM_16"``
        for FLAC).

    Returns
    -------
    path : Path
        The written file.

    Raises
    ------
    TypeError, ValueError
        If ``audio`` is not a non-empty, finite, floating 1-d/2-d array; if the format
        stores integers and ``audio`` leaves [-1, 1]; if the extension or subtype is
        unknown to libsndfile.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    check_params({"sample_rate": [_SAMPLE_RATE], "subtype": [str, None]},
                 {"sample_rate": sample_rate, "subtype": subtype}, "write_audio")
    path = _check_path(path)
    sample_rate = int(sample_rate)
    audio = check_audio(audio, name="audio", allow_batch=True)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)

    container = soundfile.available_formats()
    extension = path.suffix.lstrip(".").upper()
    if extension == "OGA":  # libsndfile knows Ogg audio only as "OGG"
        extension = "OGG"
    if extension not in container:
        raise ValueError(
            f"Cannot tell the audio format from the extension of {str(path)!r}; expected one "
            f"of {sorted(name.lower() for name in container)}."
        )
    if subtype is None:
        subtype = "FLOAT" if extension == "WAV" else soundfile.default_subtype(extension)
    if not soundfile.check_format(extension, subtype):
        raise ValueError(
            f"subtype={subtype!r} cannot be written to a {extension} file; expected one of "
            f"{sorted(soundfile.available_subtypes(extension))}."
        )
    peak = float(np.abs(audio).max())
    if subtype not in _FLOAT_SUBTYPES and peak > 1.0:
        raise ValueError(
            f"audio reaches {peak:.3g} but a {extension} file with subtype {subtype!r} stores "
            "samples in [-1, 1], so it would clip; scale the audio or write a float WAV."
        )
    if not path.parent.exists():
        raise FileNotFoundError(f"Cannot write {str(path)!r}: its folder does not exist.")
    # soundfile wants (n_samples, n_channels); ours is channel-first. The temporary's
    # name ends in ".part", so the format is passed explicitly.
    with atomic_write(path) as file:
        soundfile.write(file, audio.T, sample_rate, subtype=subtype, format=extension)
    return path
