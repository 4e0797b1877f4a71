"""Reading and writing audio files: float32 mono waveforms at a chosen sample rate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

from decomp._validation import check_array_like
from decomp.exceptions import AudioFileError

__all__ = ["AudioFileError", "load_audio", "write_audio"]

# Subtypes that store samples as floats; every other subtype is integer PCM (or a lossy
# codec fed integer-range samples), so values beyond [-1, 1] would clip on writing.
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})


def _check_path(path: Any, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or an os.PathLike; got {type(path).__name__}.")
    return Path(path)


def _check_sample_rate(sample_rate: Any, name: str = "sample_rate") -> int:
    # bool is an int subclass; True as a sample rate is always a mistake.
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int (Hz); got {sample_rate!r}.")
    if sample_rate <= 0:
        raise ValueError(f"{name} must be a positive int (Hz); got {sample_rate}.")
    return int(sample_rate)


def _check_audio(audio: Any, *, name: str = "audio", allow_batch: bool = True) -> Any:
    """Check a waveform or a batch of waveforms.

    Conditions, each with its own message: array-like; real floating dtype (integer PCM
    must be scaled first, since its range is not [-1, 1]); 1 dimension (n_samples,) or,
    when ``allow_batch``, 2 dimensions (n_items, n_samples); no empty axis; finite.

    Returns
    -------
    audio : ndarray or Tensor
        The input, unchanged (sequences are converted to a float NumPy array).
    """
    audio = check_array_like(audio, name)
    if isinstance(audio, torch.Tensor):
        floating = audio.is_floating_point()
    else:
        floating = np.issubdtype(audio.dtype, np.floating)
    if not floating:
        raise TypeError(
            f"{name} must hold real floating-point samples in [-1, 1]; got dtype {audio.dtype} "
            "(scale integer PCM to floats first, e.g. int16 / 32768)."
        )
    ranks = "1 (n_samples,) or 2 (n_items, n_samples)" if allow_batch else "1 (n_samples,)"
    if audio.ndim not in ((1, 2) if allow_batch else (1,)):
        raise ValueError(
            f"{name} must have {ranks} dimensions; got an array of shape {tuple(audio.shape)}."
        )
    if any(size == 0 for size in audio.shape):
        raise ValueError(f"{name} is empty: got an array of shape {tuple(audio.shape)}.")
    values = audio.detach() if isinstance(audio, torch.Tensor) else audio
    finite = torch.isfinite(values) if isinstance(values, torch.Tensor) else np.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} contains NaN or infinity ({bad} samples).")
    return audio


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

    Examples
    --------
    >>> audio, rate = load_audio("piano.wav")  # doctest: +SKIP
    >>> audio.shape, audio.dtype, rate  # doctest: +SKIP
    ((160000,), dtype('float32'), 16000)
    """
    path = _check_path(path)
    if sample_rate is not None:
        sample_rate = _check_sample_rate(sample_rate)
    if not path.exists():
        raise FileNotFoundError(f"No audio file at {str(path)!r}.")
    if path.is_dir():
        raise IsADirectoryError(f"Expected an audio file at {str(path)!r}; found a directory.")
    try:
        # (n_samples, n_channels) even for mono files, so one code path handles both.
        frames, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioFileError(
            f"Cannot read audio file {str(path)!r}: it is corrupt or not in a format "
            f"libsndfile reads (WAV, FLAC, OGG, ...). Decoder said: {error}"
        ) from error
    if frames.shape[0] == 0:
        raise AudioFileError(f"Audio file {str(path)!r} holds no samples (it is empty).")

    audio = np.ascontiguousarray(frames.T)  # (n_channels, n_samples)
    if mono:
        audio = audio.mean(axis=0)  # (n_samples,)
    if sample_rate is not None and sample_rate != file_rate:
        # Imported here: librosa's import is slow and only resampling needs it.
        import librosa

        audio = librosa.resample(
            audio, orig_sr=file_rate, target_sr=sample_rate, res_type="soxr_hq", axis=-1
        )
    else:
        sample_rate = int(file_rate)
    return audio.astype(np.float32, copy=False), sample_rate


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
    path = _check_path(path)
    sample_rate = _check_sample_rate(sample_rate)
    audio = _check_audio(audio, name="audio", allow_batch=True)
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
    # soundfile wants (n_samples, n_channels); ours is channel-first.
    soundfile.write(path, audio.T, sample_rate, subtype=subtype)
    return path
