"""The spectrogram front end: waveforms to time-major magnitudes and masked waveforms back.

One class, :class:`Spectrogram`, holds every analysis parameter explicitly, so a model can
store the front end it was trained with and a later job can rebuild it exactly. The
magnitude comes from one of two analyses and is optionally log-compressed:

========== ============================== ==============================================
kind       analysis                       features
========== ============================== ==============================================
"linear"   STFT (``n_fft // 2 + 1`` bins) ``|STFT|``
"log"      STFT                           ``log1p(compression * |STFT|)`` (DDS papers)
"cqt"      constant-Q (``librosa.cqt``)   ``|CQT|``
"log-cqt"  constant-Q                     ``log1p(compression * |CQT|)``
========== ============================== ==============================================

The STFT is ``torch.stft`` (so tensors stay on their device); it matches
``librosa.stft(center=True, pad_mode="constant")``. The constant-Q transform is librosa's
and runs on the CPU. Separation resynthesises through the STFT for every kind (constant-Q
masks are carried to the STFT bins; see :meth:`Spectrogram.separate`).

Two options reproduce the Solos / Sound-of-Pixels front end (STFT, log re-scale of the
frequency axis, dB relative to the minimum scaled to [-1, 1]):
``frequency_scale="log"`` resamples an STFT kind's magnitude onto log-spaced bins, and
``db_normalization=True`` (kind ``"linear"`` only) maps each spectrogram to [-1, 1] dB
features. For example, Solos' 256 x 256 input for 6 s at 11025 Hz is
``Spectrogram(sample_rate=11025, n_fft=1022, hop_length=256, kind="linear",
frequency_scale="log", n_bins=256, db_normalization=True)``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.signal
import torch
from sklearn.utils._param_validation import StrOptions

from decomp._validation import StrictInterval, check_array_like, check_params, check_spectrogram
from decomp.audio.io import check_audio

__all__ = ["Spectrogram", "frame_times", "to_librosa", "from_librosa"]

# kind -> (analysis, log-compressed?). Every kind is one row here, so no code path is
# duplicated between the linear and the compressed variants.
_KINDS: dict[str, tuple[str, bool]] = {
    "linear": ("stft", False),
    "log": ("stft", True),
    "cqt": ("cqt", False),
    "log-cqt": ("cqt", True),
}

_DEFAULTS: dict[str, Any] = {
    "sample_rate": 16000,
    "n_fft": 2048,
    "hop_length": 512,
    "window": "hann",
    "kind": "log",
    "compression": 10000.0,
    "n_bins": None,
    "fmin": 27.5,  # MIDI 21, A0: the lowest piano key
    "bins_per_octave": 36,
    "frequency_scale": "linear",
    "db_normalization": False,
}

_FREQUENCY_SCALES = ("linear", "log")

_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_POSITIVE_FLOAT = StrictInterval(Real, 0, None, closed="neither")  # finite, > 0

_PARAMETER_CONSTRAINTS: dict[str, list] = {
    "sample_rate": [_POSITIVE_INT],
    "n_fft": [_POSITIVE_INT],
    "hop_length": [_POSITIVE_INT],
    "window": [str],
    "kind": [StrOptions(set(_KINDS))],
    "compression": [_POSITIVE_FLOAT],
    "n_bins": [_POSITIVE_INT, None],
    "fmin": [_POSITIVE_FLOAT],
    "bins_per_octave": [_POSITIVE_INT],
    "frequency_scale": [StrOptions(set(_FREQUENCY_SCALES))],
    "db_normalization": ["boolean"],
}


def frame_times(n_frames: int, sample_rate: int, hop_length: int) -> np.ndarray:
    """Centre time of each frame, in seconds (frames are centred: ``center=True``).

    Parameters
    ----------
    n_frames : int
        Number of frames (>= 0).
    sample_rate : int
        Sample rate in Hz.
    hop_length : int
        Samples between the centres of consecutive frames.

    Returns
    -------
    times : ndarray of shape (n_frames,), float64
        ``t * hop_length / sample_rate`` for ``t = 0 .. n_frames - 1``.

    Examples
    --------
    >>> frame_times(3, sample_rate=16000, hop_length=512)
    array([0.   , 0.032, 0.064])
    """
    check_params(
        {"n_frames": [StrictInterval(Integral, 0, None, closed="left")],
         "sample_rate": [_POSITIVE_INT], "hop_length": [_POSITIVE_INT]},
        {"n_frames": n_frames, "sample_rate": sample_rate, "hop_length": hop_length},
        "frame_times",
    )
    return np.arange(int(n_frames)) * (int(hop_length) / int(sample_rate))


def to_librosa(X: Any) -> Any:
    """Turn time-major features into librosa's layout by swapping the last two axes.

    Parameters
    ----------
    X : ndarray or Tensor of shape (..., n_frames, n_bins)
        A spectrogram, or a batch of them.

    Returns
    -------
    S : ndarray or Tensor of shape (..., n_bins, n_frames)
        A view of ``X`` (no copy).
    """
    return _swap_last_axes(X, "X")


def from_librosa(S: Any) -> Any:
    """Turn librosa-layout features into decomp's time-major layout.

    Parameters
    ----------
    S : ndarray or Tensor of shape (..., n_bins, n_frames)
        A spectrogram as librosa returns it, or a batch of them.

    Returns
    -------
    X : ndarray or Tensor of shape (..., n_frames, n_bins)
        A view of ``S`` (no copy).
    """
    return _swap_last_axes(S, "S")


def _swap_last_axes(value: Any, name: str) -> Any:
    value = check_array_like(value, name)
    if value.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (frames and bins); got an array of "
            f"shape {tuple(value.shape)}."
        )
    if isinstance(value, torch.Tensor):
        return value.transpose(-1, -2)
    return np.swapaxes(value, -1, -2)


@functools.lru_cache(maxsize=16)
def _window(name: str, n_fft: int) -> np.ndarray:
    # Periodic ("fftbins") windows, as librosa.stft uses, so both STFTs agree.
    window = scipy.signal.get_window(name, n_fft, fftbins=True).astype(np.float64)
    window.flags.writeable = False  # shared by the cache
    return window


def _max_cqt_bins(sample_rate: int, fmin: float, bins_per_octave: int, window: str) -> int:
    """Most constant-Q bins from ``fmin`` whose filters stay below the Nyquist frequency.

    librosa refuses a basis whose top filter's upper edge,
    ``f_top * (1 + 0.5 * window_bandwidth * alpha)``, passes Nyquist (``alpha`` is the
    relative bandwidth of equal-tempered bins); this solves that bound for the bin count.
    """
    import librosa

    nyquist = sample_rate / 2
    ratio = 2.0 ** (2.0 / bins_per_octave)
    alpha = (ratio - 1) / (ratio + 1)
    reach = 1 + 0.5 * librosa.filters.window_bandwidth(window) * alpha
    if fmin * reach > nyquist:
        return 0
    n_bins = math.floor(bins_per_octave * math.log2(nyquist / (fmin * reach))) + 1
    # The log may round up at an exact boundary; step down until the bound holds.
    while n_bins > 0 and fmin * 2.0 ** ((n_bins - 1) / bins_per_octave) * reach > nyquist:
        n_bins -= 1
    return n_bins


def _parameter(name: str, doc: str) -> property:
    return property(lambda self: self._params[name], doc=doc)


class Spectrogram:
    """Spectrogram front end: audio to (n_frames, n_bins) features, masks back to audio.

    Parameters are stored as given, checked once on construction (a front end should
    refuse a bad setting before any audio is read) and cannot be changed afterwards; use
    :meth:`replace` for a variant. Two front ends are equal when their parameters are.

    Parameters
    ----------
    sample_rate : int, default=16000
        Sample rate (Hz) the audio is expected at.
    n_fft : int, default=2048
        STFT frame length in samples; the STFT kinds have ``n_fft // 2 + 1`` bins.
    hop_length : int, default=512
        Samples between frame centres; at most ``n_fft`` (a larger hop skips samples).
    window : str, default="hann"
        A ``scipy.signal.get_window`` name without parameters (``"hann"``, ``"hamming"``,
        ``"blackman"``, ...). Periodic, as in librosa.
    kind : {"log", "linear", "cqt", "log-cqt"}, default="log"
        The features: STFT magnitude (``"linear"``), log-compressed STFT magnitude
        ``log1p(compression * |STFT|)`` (``"log"``, the DDS papers' front end),
        constant-Q magnitude (``"cqt"``) or log-compressed constant-Q magnitude
        (``"log-cqt"``).
    compression : float, default=10000.0
        The factor inside ``log1p`` for the log kinds (10000 in the DDS papers); unused by
        ``"linear"`` and ``"cqt"``.
    n_bins : int, optional
        Keep only the lowest ``n_bins`` bins. Default: every bin, i.e. ``n_fft // 2 + 1``
        for the STFT kinds and, for the CQT kinds, as many bins from ``fmin`` as fit below
        the Nyquist frequency (294 at the defaults, 8.2 octaves). The DDS code uses 1024
        STFT bins, dropping the Nyquist bin. With ``frequency_scale="log"``: the number of
        log-spaced bins (default ``n_fft // 2 + 1``), not a cut.
    fmin : float, default=27.5
        Centre frequency (Hz) of the lowest constant-Q bin (A0, MIDI 21). CQT kinds only.
    bins_per_octave : int, default=36
        Constant-Q resolution (3 bins per semitone). CQT kinds only.
    frequency_scale : {"linear", "log"}, default="linear"
        Frequency axis of the STFT kinds. ``"linear"``: the STFT bins. ``"log"``: the
        magnitude is resampled onto ``n_bins`` log-spaced (geometrically spaced) centre
        frequencies, from the first non-zero STFT bin frequency ``sample_rate / n_fft`` up
        to the highest STFT bin frequency (the Nyquist frequency for an even ``n_fft``), by
        linear interpolation between the two neighbouring STFT bins (in Hz), as Sound of
        Pixels' ``warpgrid`` + ``grid_sample`` does. This expands the low frequencies and
        compresses the high ones. With ``"log"``, ``n_bins`` is the number of log bins
        (2 to ``n_fft // 2 + 1``; default ``n_fft // 2 + 1``) rather than a cut, and the
        ``"log"`` kind's compression is applied after the resampling. Where log bins are
        sparser than STFT bins (the high frequencies) this point-samples the magnitude
        without averaging, as Sound of Pixels does, so a narrow partial lying between two
        log bins is attenuated and masks there are coarse. Not to be confused
        with ``kind="log"`` (log-compressed *magnitudes*). Refused with the CQT kinds,
        whose bins are already log-spaced.
    db_normalization : bool, default=False
        Solos' normalisation, ``kind="linear"`` only (refused otherwise). Each spectrogram
        ``M`` (each item of a batch separately, after any log re-scale) becomes
        ``2 * D / D.max() - 1`` with ``D = 20 * log10(max(M, floor) / floor)`` (dB above
        the floor) and ``floor = max(M.min(), 1e-8 * M.max())`` (at least the smallest
        normal float, so silence never takes ``log(0)``; the dB range is thus at most
        160 dB). Features lie in [-1, 1], -1 at the minimum and 1 at the maximum; a
        constant spectrogram (e.g. silence) is -1 everywhere. The per-item minimum and
        maximum are not kept, so these features cannot be turned back into magnitudes:
        :meth:`to_magnitude` and :meth:`masks` raise ``ValueError``. Estimate masks from
        magnitudes (or directly, e.g. as a network's output) and pass them to
        :meth:`separate` as ``masks=``.

    Attributes
    ----------
    n_bins : int
        The resolved number of feature bins (never ``None``).
    bin_frequencies : ndarray of shape (n_bins,)
        Centre frequency of each bin in Hz.

    Raises
    ------
    TypeError, ValueError
        If a parameter has the wrong type or value; the message names it.

    Notes
    -----
    Frames are centred (``center=True``): frame ``t`` covers samples around
    ``t * hop_length`` and the signal is zero-padded by ``n_fft // 2`` at both ends, so
    ``n_frames = 1 + n_samples // hop_length`` for any length, even audio shorter than
    ``n_fft`` (a single sample gives one frame). The constant-Q kinds pad the same way.

    Examples
    --------
    >>> import numpy as np
    >>> front_end = Spectrogram()
    >>> audio = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    >>> features = front_end(audio)
    >>> features.shape, features.dtype
    ((32, 1025), dtype('float32'))
    >>> int(features.mean(axis=0).argmax()), float(front_end.bin_frequencies[56])
    (56, 437.5)

    The Solos / Sound-of-Pixels front end (512 STFT bins resampled to 256 log bins, dB
    features in [-1, 1]):

    >>> solos = Spectrogram(sample_rate=11025, n_fft=1022, hop_length=256, kind="linear",
    ...                     frequency_scale="log", n_bins=256, db_normalization=True)
    >>> features = solos(np.random.default_rng(0).standard_normal(66150).astype(np.float32))
    >>> features.shape, float(features.min()), float(features.max())
    ((259, 256), -1.0, 1.0)
    """

    sample_rate = _parameter("sample_rate", "Sample rate in Hz.")
    n_fft = _parameter("n_fft", "STFT frame length in samples.")
    hop_length = _parameter("hop_length", "Samples between frame centres.")
    window = _parameter("window", "Analysis window name.")
    kind = _parameter("kind", "Feature kind: 'linear', 'log', 'cqt' or 'log-cqt'.")
    compression = _parameter("compression", "Factor inside log1p for the log kinds.")
    fmin = _parameter("fmin", "Lowest constant-Q centre frequency in Hz.")
    bins_per_octave = _parameter("bins_per_octave", "Constant-Q bins per octave.")
    frequency_scale = _parameter("frequency_scale", "STFT frequency axis: 'linear' or 'log'.")
    db_normalization = _parameter("db_normalization",
                                  "Whether features are Solos' [-1, 1] dB-normalised ones.")

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 2048,
        hop_length: int = 512,
        window: str = "hann",
        kind: str = "log",
        compression: float = 10000.0,
        n_bins: int | None = None,
        fmin: float = 27.5,
        bins_per_octave: int = 36,
        frequency_scale: str = "linear",
        db_normalization: bool = False,
    ) -> None:
        self._params = {
            "sample_rate": sample_rate,
            "n_fft": n_fft,
            "hop_length": hop_length,
            "window": window,
            "kind": kind,
            "compression": compression,
            "n_bins": n_bins,
            "fmin": fmin,
            "bins_per_octave": bins_per_octave,
            "frequency_scale": frequency_scale,
            "db_normalization": db_normalization,
        }
        self._check_params()

    # ------------------------------------------------------------------ parameters

    def _check_params(self) -> None:
        """Check every parameter once and resolve the derived values."""
        owner = "Spectrogram"
        params = self._params
        check_params(_PARAMETER_CONSTRAINTS, params, owner)
        for name in ("sample_rate", "n_fft", "hop_length", "bins_per_octave"):
            params[name] = int(params[name])  # a NumPy integer becomes an int
        for name in ("compression", "fmin"):
            params[name] = float(params[name])
        params["db_normalization"] = bool(params["db_normalization"])
        if params["n_bins"] is not None:
            params["n_bins"] = int(params["n_bins"])
        if params["hop_length"] > params["n_fft"]:
            raise ValueError(
                f"The 'hop_length' parameter of {owner} must be at most n_fft="
                f"{params['n_fft']} (a larger hop skips samples); got {params['hop_length']}."
            )
        kind = params["kind"]
        self._analysis, self._compressed = _KINDS[kind]
        window = params["window"]
        try:
            _window(window, params["n_fft"])
        except ValueError as error:
            raise ValueError(
                f"The 'window' parameter of {owner} must name a scipy.signal window without "
                f"parameters, such as 'hann'; got {window!r} ({error})."
            ) from None
        scale = params["frequency_scale"]
        self._log_frequency = scale == "log"
        if self._log_frequency and self._analysis != "stft":
            raise ValueError(
                f"The 'frequency_scale' parameter of {owner} must be 'linear' for "
                f"kind={kind!r}: constant-Q bins are already log-spaced; frequency_scale='log' "
                "resamples the STFT kinds ('linear', 'log') only."
            )
        if self._log_frequency and params["n_fft"] // 2 < 2:
            raise ValueError(
                f"The 'frequency_scale' parameter of {owner} can be 'log' only with n_fft >= 4 "
                f"(two non-zero STFT bin frequencies); got n_fft={params['n_fft']}."
            )
        if params["db_normalization"] and kind != "linear":
            raise ValueError(
                f"The 'db_normalization' parameter of {owner} can be True only with "
                f"kind='linear' (the dB scale replaces the log compression); got kind={kind!r}."
            )

        if self._analysis == "stft":
            max_bins = params["n_fft"] // 2 + 1
            limit = f"n_fft // 2 + 1 = {max_bins}"
        else:
            max_bins = _max_cqt_bins(params["sample_rate"], params["fmin"],
                                     params["bins_per_octave"], window)
            limit = (f"{max_bins}, the constant-Q bins from fmin={params['fmin']} Hz that fit "
                     f"below the Nyquist frequency {params['sample_rate'] / 2} Hz")
            if max_bins < 2:
                raise ValueError(
                    f"The 'fmin' parameter of {owner} is too close to the Nyquist frequency "
                    f"({params['sample_rate'] / 2} Hz) for a constant-Q transform with "
                    f"bins_per_octave={params['bins_per_octave']}; got fmin={params['fmin']}."
                )
        n_bins = params["n_bins"]
        if n_bins is None:
            self._n_bins = max_bins
        else:
            # librosa's constant-Q filters need two bins to define their bandwidth, and
            # log-spaced bins need two to span the frequency range.
            if n_bins < 2 and (self._analysis == "cqt" or self._log_frequency):
                what = "constant-Q" if self._analysis == "cqt" else "log-spaced"
                raise ValueError(
                    f"The 'n_bins' parameter of {owner} must be an int >= 2 with {what} bins "
                    f"(kind={kind!r}, frequency_scale={scale!r}); got {n_bins}."
                )
            if n_bins > max_bins:
                raise ValueError(
                    f"The 'n_bins' parameter of {owner} must be at most {limit} for "
                    f"kind={kind!r}; got {n_bins}."
                )
            self._n_bins = n_bins

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given (``n_bins`` may be ``None``).

        ``deep`` is accepted for scikit-learn's ``clone``; there is nothing nested.
        """
        return dict(self._params)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description: ``{"type": "Spectrogram", **get_params()}``."""
        return {"type": type(self).__name__, **self.get_params()}

    @classmethod
    def from_dict(cls, description: dict[str, Any]) -> Spectrogram:
        """Rebuild a front end from :meth:`to_dict` (or :meth:`get_params`) output.

        Missing parameters take their defaults; unknown keys or a foreign ``"type"`` are
        refused with a ``ValueError`` that names them.
        """
        if not isinstance(description, dict):
            raise TypeError(
                f"description must be a dict from Spectrogram.to_dict(); got "
                f"{type(description).__name__}."
            )
        params = dict(description)
        kind_of_object = params.pop("type", cls.__name__)
        if kind_of_object != cls.__name__:
            raise ValueError(
                f"description describes a {kind_of_object!r}, not a {cls.__name__!r}."
            )
        unknown = sorted(set(params) - set(_DEFAULTS))
        if unknown:
            raise ValueError(
                f"description has unknown keys {unknown}; a {cls.__name__} takes "
                f"{sorted(_DEFAULTS)}."
            )
        return cls(**params)

    def replace(self, **changes: Any) -> Spectrogram:
        """A new front end with some parameters changed (checked like the constructor)."""
        return type(self).from_dict({**self._params, **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spectrogram):
            return NotImplemented
        return type(self) is type(other) and self._params == other._params

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self._params.items()))))

    def __repr__(self) -> str:
        changed = ", ".join(
            f"{name}={value!r}" for name, value in self._params.items()
            if value != _DEFAULTS[name]
        )
        return f"{type(self).__name__}({changed})"

    def __getstate__(self) -> dict[str, Any]:
        return self.get_params()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._params = dict(state)
        self._check_params()

    # ---------------------------------------------------------------- geometry

    @property
    def n_bins(self) -> int:
        """Number of feature bins (the last axis of :meth:`transform`'s output)."""
        return self._n_bins

    @property
    def bin_frequencies(self) -> np.ndarray:
        """Centre frequency of each feature bin in Hz, ndarray of shape (n_bins,)."""
        if self._log_frequency:
            step = self.sample_rate / self.n_fft
            return np.geomspace(step, (self.n_fft // 2) * step, self._n_bins)
        if self._analysis == "stft":
            return np.arange(self._n_bins) * (self.sample_rate / self.n_fft)
        return self.fmin * 2.0 ** (np.arange(self._n_bins) / self.bins_per_octave)

    def n_frames(self, n_samples: int) -> int:
        """Number of frames for ``n_samples`` of audio: ``1 + n_samples // hop_length``."""
        check_params({"n_samples": [_POSITIVE_INT]}, {"n_samples": n_samples},
                     "Spectrogram.n_frames")
        return 1 + int(n_samples) // self.hop_length

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Centre time of each frame in seconds, ndarray of shape (n_frames,)."""
        return frame_times(n_frames, self.sample_rate, self.hop_length)

    # ---------------------------------------------------------------- analysis

    def __call__(self, audio: Any) -> Any:
        """Same as :meth:`transform`."""
        return self.transform(audio)

    def transform(self, audio: Any) -> Any:
        """Features of a waveform or of a batch of equal-length waveforms.

        Parameters
        ----------
        audio : ndarray or Tensor of shape (n_samples,) or (n_items, n_samples)
            Floating-point samples at ``sample_rate``.

        Returns
        -------
        features : ndarray or Tensor of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            Non-negative features (see ``kind``; in [-1, 1] with ``db_normalization``),
            ``n_frames = 1 + n_samples // hop_length``.
            float32 for NumPy input; a tensor input gives a tensor on its device (float64
            stays float64).

        Raises
        ------
        TypeError, ValueError
            If ``audio`` is not a finite, non-empty 1-d/2-d floating array.
        """
        audio = check_audio(audio, name="audio", allow_batch=True)
        coefficients = self._analyse(_to_tensor(audio))  # (..., n_frames, n_coefficients)
        if self._log_frequency:
            magnitude = self._to_log_frequency(coefficients.abs())
        else:
            magnitude = coefficients[..., : self._n_bins].abs()
        if self.db_normalization:
            return _like(db_normalize(magnitude), audio)
        return _like(self._from_magnitude(magnitude), audio)

    def stream(self, blocks: Any, *, chunk_frames: int) -> Iterator[np.ndarray]:
        """Features of a long waveform given block by block, ``chunk_frames`` frames at a time.

        The waveform arrives as an iterable of sample blocks of any lengths (e.g. an
        :class:`~decomp.audio.AudioStream`); only about one chunk of samples is held at a
        time, so memory does not grow with the recording. Each chunk is computed from its
        samples plus a margin on both sides (zeros beyond the ends, as the centred
        analysis pads), so for the STFT kinds the chunks, concatenated, equal
        :meth:`transform` of the whole waveform exactly: every frame sees the same samples.
        The constant-Q kinds are computed with a margin of twice their longest filter;
        their chunks match :meth:`transform` up to the edge effects of librosa's
        multi-rate analysis (measured: at most 2e-4 on ``log1p(100 |CQT|)`` features of
        up to 7).

        Parameters
        ----------
        blocks : iterable of array-like of shape (n_samples_in_block,)
            Consecutive floating-point samples at ``sample_rate``.
        chunk_frames : int
            Frames per yielded chunk; the last chunk holds the rest.

        Yields
        ------
        features : ndarray of shape (chunk_frames, n_bins), float32
            Consecutive frames; ``1 + n_samples // hop_length`` frames in all.

        Raises
        ------
        ValueError
            With ``db_normalization=True`` (each spectrogram is normalised by its own
            extremes, which are known only at the end), or if ``blocks`` holds no samples.

        Examples
        --------
        >>> import numpy as np
        >>> front_end = Spectrogram()
        >>> audio = np.random.default_rng(0).standard_normal(40000).astype(np.float32)
        >>> chunks = list(front_end.stream(np.split(audio, 8), chunk_frames=32))
        >>> [chunk.shape[0] for chunk in chunks]
        [32, 32, 15]
        >>> bool(np.array_equal(np.concatenate(chunks), front_end(audio)))
        True
        """
        check_params({"chunk_frames": [_POSITIVE_INT]}, {"chunk_frames": chunk_frames},
                     "Spectrogram.stream")
        chunk_frames = int(chunk_frames)
        if self.db_normalization:
            raise ValueError(
                f"{self!r} normalises each spectrogram by its own extremes, which a stream "
                "knows only at its end; transform the whole waveform instead."
            )
        hop = self.hop_length
        margin = self._stream_margin()  # frames of context on each side of a chunk
        buffer = np.zeros(0, dtype=np.float32)  # samples from buffer_start on
        buffer_start, first, n_samples = 0, 0, 0  # first: the next chunk's first frame
        pending: list[np.ndarray] = []

        def span(count: int) -> tuple[int, int]:
            # Samples [start, stop) that frames first .. first + count - 1 need: their
            # centres plus the margin, but not before the start (the analysis pads there
            # as the whole transform does, which matters for the multi-rate CQT).
            return max(0, (first - margin) * hop), (first + count - 1 + margin) * hop + 1

        def chunk_of(count: int, stop: int) -> np.ndarray:
            start, _ = span(count)
            samples = buffer[start - buffer_start:stop - buffer_start]
            offset = first - start // hop  # the chunk's first frame among these samples
            return np.asarray(self.transform(samples))[offset:offset + count]

        def advance(count: int) -> None:
            nonlocal buffer, buffer_start, first
            first += count
            start = max(0, (first - margin) * hop)
            buffer, buffer_start = buffer[start - buffer_start:], start

        for block in blocks:
            block = np.asarray(block, dtype=np.float32).reshape(-1)
            n_samples += block.size
            pending.append(block)
            if n_samples < span(chunk_frames)[1]:
                continue
            buffer = np.concatenate([buffer, *pending])
            pending = []
            while n_samples >= span(chunk_frames)[1]:
                yield chunk_of(chunk_frames, span(chunk_frames)[1])
                advance(chunk_frames)
        if n_samples == 0:
            raise ValueError("blocks holds no samples; a spectrogram needs at least one.")
        buffer = np.concatenate([buffer, *pending])
        n_frames = 1 + n_samples // hop
        while first < n_frames:
            count = min(chunk_frames, n_frames - first)
            yield chunk_of(count, min(span(count)[1], n_samples))
            advance(count)

    def _stream_margin(self) -> int:
        """Frames of context a chunk of :meth:`stream` needs on each side."""
        if self._analysis == "stft":
            # A frame spans n_fft // 2 samples (one more for odd n_fft) around its centre.
            return -(-(self.n_fft // 2 + 1) // self.hop_length)
        import librosa

        lengths, _ = librosa.filters.wavelet_lengths(
            freqs=self.bin_frequencies[:2], sr=self.sample_rate, window=self.window)
        return 2 * -(-int(math.ceil(lengths[0])) // self.hop_length) + 1

    def _to_log_frequency(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(..., n_fft // 2 + 1) STFT magnitudes -> (..., n_bins) on the log-spaced bins."""
        n_stft_bins = magnitude.shape[-1]
        # Fractional STFT bin index of each log bin's centre frequency: 1 .. n_fft // 2.
        position = self.bin_frequencies / (self.sample_rate / self.n_fft)
        position = np.clip(position, 0, n_stft_bins - 1)
        return _interpolate(magnitude, position)

    def stft(self, audio: Any) -> Any:
        """The complex short-time Fourier transform, time-major.

        Always the STFT (``n_fft // 2 + 1`` bins, no ``n_bins`` cut), whatever ``kind``.

        Parameters
        ----------
        audio : ndarray or Tensor of shape (n_samples,) or (n_items, n_samples)

        Returns
        -------
        coefficients : ndarray or Tensor of shape ([n_items,] n_frames, n_fft // 2 + 1)
            complex64 for NumPy input (complex128 for a float64 tensor).
        """
        audio = check_audio(audio, name="audio", allow_batch=True)
        return _like(self._stft(_to_tensor(audio)), audio)

    def _analyse(self, audio: torch.Tensor) -> torch.Tensor:
        """(..., n_samples) real -> (..., n_frames, n_coefficients) complex, for ``kind``."""
        if self._analysis == "stft":
            return self._stft(audio)
        return self._cqt(audio)

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        # torch.tensor copies: the cached window is read-only.
        window = torch.tensor(_window(self.window, self.n_fft), dtype=audio.dtype,
                              device=audio.device)
        # Constant (zero) padding, as librosa.stft; reflection would fail on audio
        # shorter than n_fft // 2.
        spectrum = torch.stft(
            audio, self.n_fft, hop_length=self.hop_length, window=window, center=True,
            pad_mode="constant", return_complex=True,
        )  # (..., n_fft // 2 + 1, n_frames)
        return spectrum.transpose(-1, -2)

    def _cqt(self, audio: torch.Tensor) -> torch.Tensor:
        import librosa

        # Short audio is zero-padded by design (see the class Notes); librosa's per-octave
        # "n_fft is too large for input signal" warnings say nothing more.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="n_fft=.* is too large")
            try:
                spectrum = librosa.cqt(
                    audio.detach().cpu().numpy(), sr=self.sample_rate,
                    hop_length=self.hop_length, fmin=self.fmin, n_bins=self._n_bins,
                    bins_per_octave=self.bins_per_octave, window=self.window,
                    res_type="soxr_hq",
                )  # (..., n_bins, n_frames)
            except librosa.util.exceptions.ParameterError as error:
                raise ValueError(
                    f"audio of {audio.shape[-1]} samples cannot be analysed by the constant-Q "
                    f"transform of {self!r}: {error}"
                ) from None
        return torch.from_numpy(np.swapaxes(spectrum, -1, -2)).to(audio.device)

    # ---------------------------------------------------------------- masks and synthesis

    def to_magnitude(self, features: Any) -> Any:
        """Undo the log compression: ``expm1(features) / compression`` for the log kinds.

        Masks are ratios of magnitudes, so they must be computed in the linear domain. For
        ``"linear"`` and ``"cqt"`` the features already are magnitudes and come back as
        they are (as float32 for NumPy input). With ``frequency_scale="log"`` the
        magnitudes are those on the log-spaced bins.

        Parameters
        ----------
        features : ndarray or Tensor of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            Features of this front end (non-negative).

        Returns
        -------
        magnitude : ndarray or Tensor, same shape as ``features``

        Raises
        ------
        ValueError
            With ``db_normalization=True``: the per-spectrogram minimum and maximum are not
            kept, so dB-normalised features cannot be turned back into magnitudes. Compute
            masks from magnitudes (e.g. ``replace(db_normalization=False)`` features) and
            pass them to :meth:`separate` as ``masks=``.
        """
        self._check_invertible()
        features = check_spectrogram(features, name="features", allow_batch=True)
        self._check_bins(features, "features")
        return _like(self._to_magnitude(_to_tensor(features)), features)

    def from_magnitude(self, magnitude: Any) -> Any:
        """Features of magnitudes: ``log1p(compression * magnitude)`` for the log kinds.

        The inverse of :meth:`to_magnitude`, e.g. to re-equalise features in the linear
        domain and compress them again. ``"linear"`` and ``"cqt"`` magnitudes come back as
        they are (float32 for NumPy input).

        Parameters
        ----------
        magnitude : ndarray or Tensor of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            Non-negative magnitudes on this front end's bins.

        Returns
        -------
        features : ndarray or Tensor, same shape as ``magnitude``

        Raises
        ------
        ValueError
            With ``db_normalization=True`` (as :meth:`to_magnitude`).
        """
        self._check_invertible()
        magnitude = check_spectrogram(magnitude, name="magnitude", allow_batch=True)
        self._check_bins(magnitude, "magnitude")
        return _like(self._from_magnitude(_to_tensor(magnitude)), magnitude)

    def _from_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        if self._compressed:
            return torch.log1p(self.compression * magnitude)
        return magnitude

    def _to_magnitude(self, features: torch.Tensor) -> torch.Tensor:
        self._check_invertible()
        if self._compressed:
            return torch.expm1(features) / self.compression
        # A copy, so that editing the magnitudes never edits the caller's features.
        return features.clone()

    def _check_invertible(self) -> None:
        if self.db_normalization:
            raise ValueError(
                f"{self!r} makes dB-normalised features, which cannot be turned back into "
                "magnitudes (the per-spectrogram minimum and maximum are not kept); compute "
                "masks from magnitudes, e.g. with Spectrogram.replace(db_normalization=False), "
                "and pass them to separate() as masks=."
            )

    def masks(self, source_features: Any, *, power: float = 1.0, eps: float = 1e-12) -> Any:
        """Ratio masks from per-source features: each source's share of the magnitude.

        ``mask_j = |S_j| ** power / sum_i |S_i| ** power``, computed on
        :meth:`to_magnitude` of the features. Where the sources hold no energy (a sum of at
        most ``eps``) every source gets ``1 / n_sources``, so the masks sum to 1 in every
        bin and the separated sources sum to the mixture.

        Parameters
        ----------
        source_features : ndarray or Tensor of shape (n_sources, n_frames, n_bins)
            Features of each source (this front end's kind), e.g. a model's estimates.
            Not available with ``db_normalization=True`` (see :meth:`to_magnitude`).
        power : float, default=1.0
            Exponent on the magnitudes (1: amplitude ratio, 2: Wiener-like).
        eps : float, default=1e-12
            Energy (in ``magnitude ** power`` units) below which a bin counts as silent.

        Returns
        -------
        masks : ndarray or Tensor of shape (n_sources, n_frames, n_bins)
            Values in [0, 1] summing to 1 over the sources.
        """
        self._check_invertible()
        source_features = self._check_sources(source_features, "source_features")
        check_params({"power": [_POSITIVE_FLOAT],
                      "eps": [StrictInterval(Real, 0, None, closed="left")]},
                     {"power": power, "eps": eps}, "Spectrogram.masks")
        power = float(power)
        energy = self._to_magnitude(_to_tensor(source_features)) ** power  # (S, T, F)
        total = energy.sum(dim=0, keepdim=True)  # (1, T, F)
        silent = total <= eps
        # The where() keeps 0/0 out of the silent bins, which would otherwise give NaN.
        masks = torch.where(silent, 1.0 / energy.shape[0], energy / torch.where(silent, 1, total))
        return _like(masks, source_features)

    def separate(
        self,
        audio: Any,
        source_features: Any = None,
        *,
        masks: Any = None,
        power: float = 1.0,
    ) -> Any:
        """Separate a mixture with soft masks applied to its STFT, keeping its phase.

        Each source is ``istft(mask_j * stft(audio))`` (``torch.istft``, the exact inverse
        of :meth:`stft`), so masks that sum to 1 give sources that sum to the mixture, and
        an all-ones mask gives the mixture back.

        Masks live on this front end's bins and are carried to the STFT bins first: for
        the STFT kinds, bins cut off by ``n_bins`` reuse the mask of the highest kept bin;
        for the CQT kinds and ``frequency_scale="log"``, each STFT bin takes the mask
        interpolated linearly in log-frequency between the two nearest log-spaced bins
        (the lowest/highest bin's mask below/above their range, so the 0 Hz STFT bin
        takes the lowest bin's mask). The constant-Q transform itself
        is not inverted: ``librosa.icqt`` at a hop of 512 samples gives the input back at
        only about 6 dB SNR (its top-octave filters are shorter than the hop) and
        diverges when the top octave is partial, as at the default 294 bins. The mask
        carried over is an approximation of the constant-Q mask, not an exact one.

        Parameters
        ----------
        audio : ndarray or Tensor of shape (n_samples,)
            The mixture at ``sample_rate``.
        source_features : ndarray or Tensor of shape (n_sources, n_frames, n_bins), optional
            Per-source features, turned into masks by :meth:`masks` with ``power``.
        masks : ndarray or Tensor of shape (n_sources, n_frames, n_bins), optional
            Non-negative masks to apply directly. Give exactly one of ``source_features``
            and ``masks``.
        power : float, default=1.0
            Passed to :meth:`masks`.

        Returns
        -------
        sources : ndarray or Tensor of shape (n_sources, n_samples)
            float32 for NumPy input; like ``audio`` otherwise.

        Raises
        ------
        ValueError
            If both or neither of ``source_features`` and ``masks`` are given, their shape
            does not match the mixture's ``(n_frames, n_bins)``, or the window and hop
            cannot be inverted.

        Examples
        --------
        >>> import numpy as np
        >>> front_end = Spectrogram()
        >>> t = np.arange(8000) / 16000
        >>> low = np.sin(2 * np.pi * 440 * t).astype(np.float32)
        >>> high = np.sin(2 * np.pi * 1500 * t).astype(np.float32)
        >>> sources = front_end.separate(low + high, np.stack([front_end(low), front_end(high)]))
        >>> sources.shape
        (2, 8000)
        """
        audio = check_audio(audio, name="audio", allow_batch=False)
        if (source_features is None) == (masks is None):
            raise ValueError("Give exactly one of source_features and masks; got "
                             f"{'both' if masks is not None else 'neither'}.")
        if masks is None:
            masks = self.masks(source_features, power=power)
            name = "source_features"
        else:
            masks = self._check_sources(masks, "masks")
            name = "masks"
        n_samples = int(audio.shape[0])
        n_frames = self.n_frames(n_samples)
        if masks.shape[1] != n_frames:
            raise ValueError(
                f"{name} has {masks.shape[1]} frames but audio of {n_samples} samples has "
                f"{n_frames} frames (1 + n_samples // hop_length)."
            )
        window = _window(self.window, self.n_fft)
        if not scipy.signal.check_NOLA(window, self.n_fft, self.n_fft - self.hop_length):
            raise ValueError(
                f"The {self.window!r} window with n_fft={self.n_fft} and hop_length="
                f"{self.hop_length} leaves samples with zero weight, so the STFT cannot be "
                "inverted; use a smaller hop_length."
            )
        signal = _to_tensor(audio)
        gains = _to_tensor(masks).to(device=signal.device, dtype=signal.dtype)  # (S, T, n_bins)
        return _like(self._apply_masks(signal, gains), audio)

    def _apply_masks(self, audio: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Masked STFT inverted with the mixture's phase, batched and differentiable.

        ``audio`` (..., n_samples) and ``masks`` (..., n_sources, n_frames, n_bins) on this
        front end's bins, with the same leading axes -> sources (..., n_sources,
        n_samples). Inputs are not checked (see :meth:`separate`); gradients flow to the
        masks, so separators can train on a loss of the resynthesised waveforms.
        """
        n_samples = audio.shape[-1]
        spectrum = self._stft(audio).unsqueeze(-3)  # (..., 1, T, n_fft // 2 + 1) complex
        gains = self._masks_to_stft_bins(masks.to(audio.dtype))  # (..., S, T, n_fft // 2 + 1)
        masked = gains * spectrum
        window = torch.tensor(_window(self.window, self.n_fft), dtype=audio.dtype,
                              device=audio.device)
        sources = torch.istft(
            masked.flatten(0, -3).transpose(-1, -2), self.n_fft, hop_length=self.hop_length,
            window=window, center=True, length=n_samples,
        )  # (prod(...) * S, n_samples)
        return sources.reshape(*masked.shape[:-2], n_samples)

    def _masks_to_stft_bins(self, gains: torch.Tensor) -> torch.Tensor:
        """(..., n_bins) masks on this front end's bins -> (..., n_fft // 2 + 1) STFT bins."""
        n_stft_bins = self.n_fft // 2 + 1
        if self._analysis == "stft" and not self._log_frequency:
            missing = n_stft_bins - gains.shape[-1]
            if missing == 0:
                return gains
            return torch.cat([gains, gains[..., -1:].expand(*gains.shape[:-1], missing)], -1)
        # Fractional (log-spaced) bin index of every STFT bin's frequency; the 0 Hz bin and
        # bins outside the log-spaced range clamp to the end bins.
        frequencies = np.arange(n_stft_bins) * (self.sample_rate / self.n_fft)
        centres = self.bin_frequencies
        octaves_per_bin = np.log2(centres[1] / centres[0])
        with np.errstate(divide="ignore"):
            position = np.log2(frequencies / centres[0]) / octaves_per_bin
        position = np.clip(position, 0, self._n_bins - 1)
        return _interpolate(gains, position)

    # ---------------------------------------------------------------- checks

    def _check_bins(self, features: Any, name: str) -> None:
        if features.shape[-1] != self._n_bins:
            raise ValueError(
                f"{name} has {features.shape[-1]} bins (last axis) but {self!r} makes "
                f"{self._n_bins} bins."
            )

    def _check_sources(self, value: Any, name: str) -> Any:
        value = check_spectrogram(value, name=name, allow_batch=True)
        if value.ndim != 3:
            raise ValueError(
                f"{name} must have 3 dimensions (n_sources, n_frames, n_bins); got an array "
                f"of shape {tuple(value.shape)}."
            )
        self._check_bins(value, name)
        return value


def _interpolate(values: torch.Tensor, position: np.ndarray) -> torch.Tensor:
    """Linear interpolation along the last axis at fractional indices ``position``.

    ``position`` must lie in ``[0, values.shape[-1] - 1]`` and the last axis must hold at
    least two entries.
    """
    lower = np.minimum(np.floor(position).astype(np.int64), values.shape[-1] - 2)
    weight = torch.as_tensor(position - lower, dtype=values.dtype, device=values.device)
    lower = torch.as_tensor(lower, device=values.device)
    return values[..., lower] * (1 - weight) + values[..., lower + 1] * weight


def db_normalize(magnitude: torch.Tensor) -> torch.Tensor:
    """(..., n_frames, n_bins) magnitudes -> dB above each spectrogram's floor, in [-1, 1].

    Solos' normalisation: that of ``Spectrogram(db_normalization=True)``, shared with
    the separators that normalise their own inputs (MHUNet).
    """
    maximum = magnitude.amax(dim=(-2, -1), keepdim=True)
    minimum = magnitude.amin(dim=(-2, -1), keepdim=True)
    floor = torch.maximum(minimum, 1e-8 * maximum).clamp_min(torch.finfo(magnitude.dtype).tiny)
    decibels = 20 * torch.log10(torch.maximum(magnitude, floor) / floor)  # >= 0
    top = decibels.amax(dim=(-2, -1), keepdim=True)
    # A constant spectrogram has top == 0: every entry is at the minimum, so -1.
    return torch.where(top > 0, 2 * decibels / torch.where(top > 0, top, 1) - 1, -1.0)


def _to_tensor(value: Any) -> torch.Tensor:
    """NumPy -> float32 CPU tensor (no copy when already float32); tensors keep float64."""
    if isinstance(value, torch.Tensor):
        return value if value.dtype in (torch.float32, torch.float64) else value.float()
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def _like(result: torch.Tensor, reference: Any) -> Any:
    """Return ``result`` as a tensor on the reference's device, or as NumPy."""
    if isinstance(reference, torch.Tensor):
        return result.to(reference.device)
    return result.detach().cpu().numpy()
