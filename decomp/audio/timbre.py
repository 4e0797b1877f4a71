"""Timbre augmentation of spectrogram frames: random equalisers in the magnitude domain.

A SoundFont's timbre is, to a first approximation, the spectral envelope its notes share
(how loud each region is) and, note by note, the balance of the partials. Frames of the
same notes under random smooth equalisers (:func:`equaliser_gains`) or random gains per
partial (:func:`partial_gains`) stand in for fonts the models never hear. The waveform
counterpart for separators is :class:`~decomp.data.Augmentation` (its ``tilt_*``
parameters).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from decomp._validation import StrictInterval, check_params, check_range, check_spectrogram
from decomp.audio.spectrogram import Spectrogram
from decomp.metrics.multipitch import midi_to_hz

__all__ = ["equaliser_gains", "partial_gains", "timbre_copies"]

#: The tilt's pivot (Hz): a tilt leaves this frequency's level unchanged.
TILT_PIVOT_HZ = 1000.0
#: Below this frequency (Hz) the equaliser is flat, as the waveform tilt of
#: :class:`~decomp.data.Augmentation` (and a 0-Hz bin has no octave).
FLAT_BELOW_HZ = 62.5


def equaliser_gains(
    frequencies: np.ndarray,
    n_curves: int,
    *,
    tilt_range: tuple[float, float] = (-3.0, 3.0),
    band_range: tuple[float, float] = (-3.0, 3.0),
    random_state: Any = None,
) -> np.ndarray:
    """Random smooth equaliser curves, as linear gains on the given frequencies.

    Each curve is, in dB, a tilt drawn uniformly from ``tilt_range`` (dB per octave
    around 1 kHz) plus a gain drawn uniformly from ``band_range`` at every octave
    (62.5 Hz, 125 Hz, ... up to the highest frequency), interpolated linearly in
    log-frequency. Flat below 62.5 Hz.

    Parameters
    ----------
    frequencies : ndarray of shape (n_bins,)
        Bin centre frequencies in Hz (:attr:`Spectrogram.bin_frequencies`).
    n_curves : int
        Number of curves.
    tilt_range, band_range : (float, float)
        dB per octave, and dB, each within [-24, 24].
    random_state : int, Generator or None

    Returns
    -------
    gains : ndarray of shape (n_curves, n_bins)
        Linear magnitude gains, positive.
    """
    check_params({"n_curves": [StrictInterval(Integral, 1, None, closed="left")]},
                 {"n_curves": n_curves}, "equaliser_gains")
    tilt_range = check_range(tilt_range, "tilt_range", -24.0, 24.0)
    band_range = check_range(band_range, "band_range", -24.0, 24.0)
    frequencies = np.asarray(frequencies, dtype=np.float64)
    if frequencies.ndim != 1 or frequencies.size == 0 or not np.all(np.isfinite(frequencies)):
        raise ValueError("frequencies must be a non-empty 1-d array of finite values in Hz; "
                         f"got shape {frequencies.shape}.")
    rng = np.random.default_rng(random_state)
    # Octaves above 62.5 Hz, (F,) >= 0; clamping makes every curve flat below 62.5 Hz at
    # its value there, tilt included.
    octaves = np.log2(np.maximum(frequencies, FLAT_BELOW_HZ) / FLAT_BELOW_HZ)
    # One control point per octave from 62.5 Hz, enough to cover every bin.
    controls = np.arange(int(np.ceil(octaves.max())) + 1, dtype=np.float64)  # (K,)
    # (K, F): bin f's gain is a linear mix of its two neighbouring control points.
    interpolation = np.stack([np.interp(octaves, controls, row)
                              for row in np.eye(controls.size)])
    tilts = rng.uniform(*tilt_range, size=(n_curves, 1))
    bands = rng.uniform(*band_range, size=(n_curves, controls.size))
    pivot = np.log2(TILT_PIVOT_HZ / FLAT_BELOW_HZ)
    gains_db = tilts * (octaves - pivot) + bands @ interpolation
    return 10.0 ** (gains_db / 20.0)


def partial_gains(
    frequencies: np.ndarray,
    fundamentals: np.ndarray,
    *,
    gain_range: tuple[float, float] = (-10.0, 10.0),
    random_state: Any = None,
) -> np.ndarray:
    """Random gains per partial of a note, as linear gains on the given frequencies.

    For each curve, every harmonic ``k * f0`` (``k = 1, 2, ...`` up to the highest
    frequency) gets its own gain drawn uniformly from ``gain_range`` (dB); between two
    harmonics the dB gain is interpolated linearly in frequency, below the fundamental
    it is the fundamental's. Where :func:`equaliser_gains` moves whole octaves, this
    rebalances a note's partials one by one, as two fonts playing the same note do.

    Parameters
    ----------
    frequencies : ndarray of shape (n_bins,)
        Bin centre frequencies in Hz (:attr:`Spectrogram.bin_frequencies`).
    fundamentals : ndarray of shape (n_curves,)
        Each curve's fundamental frequency in Hz, > 0.
    gain_range : (float, float), default=(-10, 10)
        dB, within [-24, 24]. The default is about the spread between the two training
        fonts' partial balances: per pitch, a partial's level relative to the note's
        other partials differs between them by 8-9 dB (standard deviation, a tilt
        removed).
    random_state : int, Generator or None

    Returns
    -------
    gains : ndarray of shape (n_curves, n_bins)
        Linear magnitude gains, positive.
    """
    gain_range = check_range(gain_range, "gain_range", -24.0, 24.0)
    frequencies = np.asarray(frequencies, dtype=np.float64)
    if frequencies.ndim != 1 or frequencies.size == 0 or not np.all(np.isfinite(frequencies)):
        raise ValueError("frequencies must be a non-empty 1-d array of finite values in Hz; "
                         f"got shape {frequencies.shape}.")
    fundamentals = np.asarray(fundamentals, dtype=np.float64)
    if (fundamentals.ndim != 1 or fundamentals.size == 0
            or not np.all(np.isfinite(fundamentals) & (fundamentals > 0))):
        raise ValueError("fundamentals must be a non-empty 1-d array of frequencies in Hz, "
                         f"> 0; got shape {fundamentals.shape}.")
    rng = np.random.default_rng(random_state)
    # (n_curves, F): each bin's position in harmonics of its curve's fundamental, from 1.
    harmonic = np.maximum(frequencies[None, :] / fundamentals[:, None], 1.0)
    below = np.floor(harmonic).astype(np.int64)
    above_share = harmonic - below
    # Column k holds harmonic k's gain (column 0 unused), one spare for the last bin.
    gains = rng.uniform(*gain_range, size=(fundamentals.size, int(below.max()) + 2))
    gains_db = ((1.0 - above_share) * np.take_along_axis(gains, below, axis=1)
                + above_share * np.take_along_axis(gains, below + 1, axis=1))
    return 10.0 ** (gains_db / 20.0)


def timbre_copies(
    features: Any,
    labels: Any,
    front_end: Spectrogram,
    *,
    n_copies: int = 1,
    tilt_range: tuple[float, float] = (-3.0, 3.0),
    band_range: tuple[float, float] = (-3.0, 3.0),
    partial_range: tuple[float, float] | None = None,
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled frames plus ``n_copies`` copies of each under random equalisers.

    Every frame of every copy gets its own smooth curve (:func:`equaliser_gains`) and,
    with ``partial_range``, its own gains per partial of its note
    (:func:`partial_gains`), applied to the magnitudes (:meth:`Spectrogram.to_magnitude`)
    and compressed again (:meth:`Spectrogram.from_magnitude`), so that a log front end's
    features move as they would had the notes been played by a differently voiced
    instrument.

    Parameters
    ----------
    features : array-like of shape (n_frames, n_bins)
        Features of ``front_end``.
    labels : array-like of shape (n_frames,)
        Per-frame labels, repeated for the copies: any labels, or with
        ``partial_range`` each frame's MIDI pitch (its partials are those of that note).
    front_end : Spectrogram
        The front end that made ``features`` (not dB-normalised).
    n_copies : int, default=1
        Equalised copies besides the originals (0 returns the inputs).
    tilt_range, band_range
        As :func:`equaliser_gains`; ``(0, 0)`` both for gains per partial alone.
    partial_range : (float, float), optional
        dB range of the gains per partial (:func:`partial_gains`); None (default):
        smooth equalisers only.
    random_state : int, Generator or None

    Returns
    -------
    features : float32 ndarray of shape (n_frames * (1 + n_copies), n_bins)
        The originals first, then each copy.
    labels : ndarray of shape (n_frames * (1 + n_copies),)

    Examples
    --------
    >>> import numpy as np
    >>> front_end = Spectrogram(sample_rate=16000, n_fft=1024, hop_length=512)
    >>> X = front_end.transform(np.random.default_rng(0).standard_normal(16000) * 0.1)
    >>> X_more, y_more = timbre_copies(X, np.zeros(len(X)), front_end, random_state=0)
    >>> X_more.shape == (2 * X.shape[0], X.shape[1])
    True
    """
    if not isinstance(front_end, Spectrogram):
        raise TypeError(f"front_end must be a Spectrogram; got {type(front_end).__name__}.")
    check_params({"n_copies": [StrictInterval(Integral, 0, None, closed="left")]},
                 {"n_copies": n_copies}, "timbre_copies")
    features = np.asarray(check_spectrogram(features, name="features"), dtype=np.float32)
    labels = np.asarray(labels)
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},), one per frame; got "
                         f"{labels.shape}.")
    if n_copies == 0:
        return features, labels
    magnitude = np.asarray(front_end.to_magnitude(features), dtype=np.float64)
    rng = np.random.default_rng(random_state)
    gains = equaliser_gains(front_end.bin_frequencies, n_copies * features.shape[0],
                            tilt_range=tilt_range, band_range=band_range, random_state=rng)
    if partial_range is not None:
        numeric = labels.dtype.kind in "iuf"
        if not numeric or not np.all(np.isfinite(labels) & (labels > 0)):
            raise ValueError("with partial_range, labels must be MIDI pitches (numbers > 0), "
                             f"one per frame; got labels of dtype {labels.dtype}.")
        gains = gains * partial_gains(front_end.bin_frequencies,
                                      np.tile(midi_to_hz(labels), n_copies),
                                      gain_range=partial_range, random_state=rng)
    copies = front_end.from_magnitude(
        (np.tile(magnitude, (n_copies, 1)) * gains).astype(np.float32))
    return (np.concatenate([features, np.asarray(copies, dtype=np.float32)]),
            np.concatenate([labels] * (n_copies + 1)))
