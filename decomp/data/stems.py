"""Stem banks and dynamic mixing: endless, reproducible training mixtures.

A :class:`StemBank` holds isolated sources rendered once and cached on disk: random
melodies per General-MIDI instrument and *training* SoundFont (:func:`instrument_stems`),
or utterances per ``espeak-ng`` voice (:func:`speech_stems`). A :class:`MixtureStream`
(a ``torch.utils.data.IterableDataset``) mixes them on the fly: a random number of
sources with distinct labels, random crops, random levels and optional timbre
augmentation (:class:`Augmentation`: overall gain, spectral tilt, small pitch shift,
synthetic reverb). Every example is a deterministic function of the seed, also with
DataLoader workers (see :class:`MixtureStream`).

Only the training fonts (:data:`TRAINING_SOUNDFONTS`) render into a bank; the held-out
test font is refused, so the test timbre can never leak into training or validation.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from numbers import Integral, Real
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.signal import fftconvolve, resample_poly
from sklearn.utils._param_validation import StrOptions

from decomp._validation import StrictInterval, check_params, check_range
from decomp.data import mixtures as _mixtures
from decomp.data.cache import cached_arrays
from decomp.data.mixtures import (
    DEFAULT_INSTRUMENTS,
    SPEECH_VOICES,
    GMInstrument,
    MixtureSet,
    _check_instruments,
    _mix,
)
from decomp.data.protocol import DEFAULT_PROTOCOL
from decomp.data.render import SYNTHESIS_SAMPLE_RATE
from decomp.data.soundfonts import resolve_soundfont
from decomp.exceptions import MissingDependencyError

__all__ = [
    "TRAINING_SOUNDFONTS",
    "Augmentation",
    "MixtureExample",
    "MixtureStream",
    "StemBank",
    "instrument_stems",
    "speech_stems",
]

TRAINING_SOUNDFONTS: tuple[str, ...] = DEFAULT_PROTOCOL.train_soundfonts
"""The SoundFonts that stem banks render with by default (never the held-out test font)."""

_GAP_SECONDS = 1.0  # silence between melodies rendered in one FluidSynth call (releases die)
_SILENT_STEM_RMS = 1e-5  # about -100 dBFS: a stem this quiet is refused
_ACTIVE_FRACTION = 0.1  # a crop is active if its RMS is at least -20 dB below its stem's
_CROP_TRIES = 20  # random offsets tried before falling back to the stem's loudest window
_TILT_REFERENCE_HZ = 1000.0  # the spectral tilt leaves this frequency unchanged
_TILT_FLOOR_HZ = 62.5  # ... and is flat below this (4 octaves down), so DC is not blown up
_LN_1000 = float(np.log(1000.0))  # an RT60 decay: the amplitude falls by 10^3 (60 dB)


# ----------------------------------------------------------------------------- the bank


@dataclass
class StemBank:
    """Isolated sources of equal length, with their labels and the font that made them.

    Attributes
    ----------
    stems : ndarray of float32, shape (n_stems, n_samples)
        Mono audio as rendered (not level-normalised; :class:`MixtureStream` sets levels).
    labels : ndarray of str, shape (n_stems,)
        The instrument name (:data:`decomp.data.INSTRUMENTS`) or the ``espeak-ng`` voice.
    fonts : ndarray of str, shape (n_stems,)
        The SoundFont name (or path) a stem was rendered with; ``"espeak-ng"`` for speech.
    sample_rate : int
        In Hz.
    params : dict
        The generator's parameters (JSON-like), for reports.

    Examples
    --------
    >>> bank = StemBank(np.ones((2, 8), np.float32), np.array(["a", "b"]),
    ...                 np.array(["fluidr3", "timgm6mb"]), 16000)
    >>> bank.select(fonts=["fluidr3"]).labels.tolist()
    ['a']
    """

    stems: np.ndarray
    labels: np.ndarray
    fonts: np.ndarray
    sample_rate: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_stems(self) -> int:
        """Number of stems."""
        return int(self.stems.shape[0])

    @property
    def duration(self) -> float:
        """Length of each stem in seconds."""
        return self.stems.shape[1] / self.sample_rate

    @property
    def classes(self) -> tuple[str, ...]:
        """The distinct labels, sorted."""
        return tuple(str(label) for label in np.unique(self.labels))

    def select(
        self, *, fonts: Sequence[str] | None = None, labels: Sequence[str] | None = None
    ) -> StemBank:
        """The stems rendered with one of ``fonts`` and labelled one of ``labels``.

        For cross-font validation: mix training examples from one font's stems and
        validation examples from the other's. ``None`` keeps every font (label).

        Raises
        ------
        ValueError
            If nothing is left.
        """
        keep = np.ones(self.n_stems, dtype=bool)
        for name, wanted, values in (("fonts", fonts, self.fonts), ("labels", labels,
                                                                    self.labels)):
            if wanted is None:
                continue
            if isinstance(wanted, str) or not isinstance(wanted, Sequence):
                raise TypeError(f"{name} must be a sequence of str or None; got {wanted!r}.")
            keep &= np.isin(values, [str(value) for value in wanted])
        if not keep.any():
            raise ValueError(
                f"select(fonts={fonts!r}, labels={labels!r}) leaves no stem; the bank has "
                f"fonts {sorted(set(self.fonts.tolist()))} and labels {list(self.classes)}."
            )
        return StemBank(self.stems[keep], self.labels[keep], self.fonts[keep],
                        self.sample_rate, dict(self.params))  # fmt: skip

    @staticmethod
    def concatenate(banks: Sequence[StemBank]) -> StemBank:
        """One bank from several of the same sample rate and stem length."""
        if not banks or not all(isinstance(bank, StemBank) for bank in banks):
            raise TypeError("banks must be a non-empty sequence of StemBank objects.")
        rates = {bank.sample_rate for bank in banks}
        lengths = {bank.stems.shape[1] for bank in banks}
        if len(rates) > 1 or len(lengths) > 1:
            raise ValueError(
                "banks must share sample_rate and stem length; got rates "
                f"{sorted(rates)} and lengths {sorted(lengths)}."
            )
        return StemBank(
            np.concatenate([bank.stems for bank in banks]),
            np.concatenate([bank.labels.astype(str) for bank in banks]),
            np.concatenate([bank.fonts.astype(str) for bank in banks]),
            banks[0].sample_rate,
            {"parts": [bank.params for bank in banks]},
        )


def _check_training_fonts(soundfonts: Any) -> list[tuple[str, Path]]:
    """(name, file) of each font; the held-out test font is refused, by name or file."""
    if isinstance(soundfonts, (str, os.PathLike)) or not isinstance(soundfonts, Sequence):
        raise TypeError(
            "soundfonts must be a sequence of SoundFont names or paths; "
            f"got {type(soundfonts).__name__}."
        )
    if not soundfonts:
        raise ValueError("soundfonts must hold at least one SoundFont; got none.")
    test_font = DEFAULT_PROTOCOL.test_soundfont
    try:
        test_path = resolve_soundfont(test_font)
    except MissingDependencyError:  # not installed: then only its name can be refused
        test_path = None
    resolved = []
    for font in soundfonts:
        if not isinstance(font, (str, os.PathLike)):
            raise TypeError(
                f"soundfonts must hold SoundFont names or paths; got {type(font).__name__}."
            )
        if font == test_font or (test_path is not None and isinstance(font, os.PathLike)
                                 and Path(font).resolve() == test_path):
            raise ValueError(
                f"soundfonts must not include the held-out test font {test_font!r}: stem "
                "banks are for training and validation (see decomp.data.protocol); got "
                f"{list(map(os.fspath, soundfonts))}."
            )
        path = resolve_soundfont(font)
        if test_path is not None and path == test_path:
            raise ValueError(
                f"soundfonts must not include the held-out test font {test_font!r} "
                f"(given as {os.fspath(font)!r})."
            )
        resolved.append((os.fspath(font), path))
    names = [name for name, _ in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"soundfonts must be distinct; got {names}.")
    return resolved


_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_SEED = StrictInterval(Integral, 0, None, closed="left")  # banks are cached by seed
_BANK_CONSTRAINTS: dict[str, list] = {
    "seconds": [StrictInterval(Real, 0.5, 60, closed="both")],
    "sample_rate": SYNTHESIS_SAMPLE_RATE,
    "random_state": [_SEED],
    "cache": ["boolean"],
}


def _entry_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator per bank entry, so one entry's stems do not depend on the others."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode("utf-8")) for name in names)])


def _stored(params: dict[str, Any], compute: Any, cache: bool, soundfont: Path | None = None
            ) -> np.ndarray:
    arrays = cached_arrays(params, compute, soundfont=soundfont) if cache else compute()
    return np.asarray(arrays["stems"], dtype=np.float32)


def _check_not_silent(stems: np.ndarray, what: str) -> None:
    rms = np.sqrt(np.mean(np.square(stems, dtype=np.float64), axis=1))
    if np.any(rms < _SILENT_STEM_RMS):
        index = int(np.argmin(rms))
        raise RuntimeError(f"stem {index} of {what} is silent (RMS {rms[index]:.2g}).")


def instrument_stems(
    soundfonts: Sequence[str | os.PathLike] = TRAINING_SOUNDFONTS,
    instruments: Sequence[str | GMInstrument] = DEFAULT_INSTRUMENTS,
    n_melodies: int = 32,
    seconds: float = 4.0,
    sample_rate: int = 16000,
    random_state: int = 0,
    *,
    velocity_range: tuple[int, int] = (60, 110),
    cache: bool = True,
) -> StemBank:
    """Random melodies per instrument and training SoundFont, rendered once and cached.

    Each (font, instrument) pair gets ``n_melodies`` random monophonic melodies (the
    generator of :func:`decomp.data.instrument_mixtures`) of ``seconds`` each. They are
    rendered in one FluidSynth call, one after the other with 1 s of silence between
    them (longer than the releases), and cut apart; the pair's stems are cached on disk
    keyed by the font file, every parameter and the notes. A pair's melodies depend only
    on ``random_state``, the font and the instrument, so adding an instrument or a font
    re-renders only what is new.

    Parameters
    ----------
    soundfonts : sequence of str or path, default TRAINING_SOUNDFONTS
        Names (``"fluidr3"``, ``"timgm6mb"``) or ``.sf2``/``.sf3`` paths. The held-out
        test font (``"musescore-lite"``) is refused.
    instruments : sequence of str or GMInstrument, default DEFAULT_INSTRUMENTS
        Names from :data:`decomp.data.INSTRUMENTS` or :class:`GMInstrument` objects.
    n_melodies : int, default 32
        Melodies per instrument and font, >= 1.
    seconds : float, default 4.0
        Length of each stem, in [0.5, 60].
    sample_rate : int, default 16000
        In Hz, 8000 to 96000.
    random_state : int, default 0
        Seed of the melodies (>= 0).
    velocity_range : (int, int), default (60, 110)
        MIDI velocities of the notes.
    cache : bool, default True
        Reuse and store renders in :func:`decomp.data.cache.cache_dir`.

    Returns
    -------
    StemBank
        ``len(soundfonts) * len(instruments) * n_melodies`` stems, font-major, then
        instrument, then melody.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or value (the test font among them).
    MissingDependencyError
        If ``fluidsynth`` or a known SoundFont is not installed.
    RuntimeError
        If FluidSynth fails or a stem renders silent.

    Examples
    --------
    >>> bank = instrument_stems(["timgm6mb"], ["violin", "flute"], n_melodies=1,
    ...                         seconds=1.0)
    >>> bank.stems.shape, bank.labels.tolist()
    ((2, 16000), ['violin', 'flute'])
    """
    check_params({"n_melodies": [_POSITIVE_INT], **_BANK_CONSTRAINTS}, {
        "n_melodies": n_melodies, "seconds": seconds, "sample_rate": sample_rate,
        "random_state": random_state, "cache": cache,
    }, "instrument_stems")
    fonts = _check_training_fonts(soundfonts)
    instrument_list = _check_instruments(instruments)
    n_melodies, seconds, sample_rate = int(n_melodies), float(seconds), int(sample_rate)
    low_velocity, high_velocity = (
        int(v) for v in check_range(velocity_range, "velocity_range", 1, 127)
    )
    seed, cache = int(random_state), bool(cache)
    n_samples = int(round(seconds * sample_rate))
    spacing = seconds + _GAP_SECONDS

    stems, labels, font_names = [], [], []
    for font_name, font_path in fonts:
        for instrument in instrument_list:
            rng = _entry_rng(seed, "instrument-stems", font_name, instrument.name)
            melodies = [
                _mixtures._random_melody(rng, instrument, seconds, (low_velocity, high_velocity))
                for _ in range(n_melodies)
            ]
            params = {
                "kind": "instrument_stems",
                "soundfont": font_name,
                "instrument": [instrument.name, instrument.program, instrument.lowest,
                               instrument.highest],
                "n_melodies": n_melodies,
                "seconds": seconds,
                "sample_rate": sample_rate,
                "velocity_range": [low_velocity, high_velocity],
                "random_state": seed,
                "gap_seconds": _GAP_SECONDS,
                "plan": melodies,
            }  # fmt: skip

            def compute(melodies=melodies, instrument=instrument, font_path=font_path
                        ) -> dict[str, np.ndarray]:
                # One FluidSynth run per pair: melody k starts at k * spacing seconds.
                notes = [[pitch, velocity, round(start + k * spacing, 6),
                          round(end + k * spacing, 6)]
                         for k, melody in enumerate(melodies)
                         for pitch, velocity, start, end in melody]  # fmt: skip
                audio = _mixtures._render_stem(instrument.program, notes, font_path,
                                               sample_rate)
                return {"stems": _cut(audio, len(melodies), spacing, n_samples, sample_rate)}

            pair = _stored(params, compute, cache, soundfont=font_path)
            _check_not_silent(pair, f"{instrument.name!r} with {font_name!r}")
            stems.append(pair)
            labels += [instrument.name] * n_melodies
            font_names += [font_name] * n_melodies
    params = {
        "kind": "instrument_stems",
        "soundfonts": [name for name, _ in fonts],
        "instruments": [instrument.name for instrument in instrument_list],
        "n_melodies": n_melodies,
        "seconds": seconds,
        "sample_rate": sample_rate,
        "velocity_range": [low_velocity, high_velocity],
        "random_state": seed,
    }
    return StemBank(np.concatenate(stems), np.array(labels), np.array(font_names),
                    sample_rate, params)  # fmt: skip


def _cut(audio: np.ndarray, n_parts: int, spacing: float, n_samples: int, sample_rate: int
         ) -> np.ndarray:
    """Part k of ``audio`` starts at ``k * spacing`` s and is ``n_samples`` long (zero-padded)."""
    parts = np.zeros((n_parts, n_samples), dtype=np.float32)
    for k in range(n_parts):
        start = int(round(k * spacing * sample_rate))
        piece = audio[start:start + n_samples]
        parts[k, : piece.size] = piece
    return parts


def speech_stems(
    voices: Sequence[str] = SPEECH_VOICES,
    n_utterances: int = 8,
    seconds: float = 4.0,
    sample_rate: int = 16000,
    random_state: int = 0,
    *,
    cache: bool = True,
) -> StemBank:
    """Random utterances per ``espeak-ng`` voice, synthesised once and cached.

    Each utterance is a random word sequence (the word list of
    :func:`decomp.data.speech_mixtures`) with its own pitch and speed, long enough to fill
    ``seconds``, resampled to ``sample_rate`` and cut to ``seconds``. A voice's stems are
    cached as one entry and depend only on ``random_state`` and the voice.

    Parameters
    ----------
    voices : sequence of str, default SPEECH_VOICES
        ``espeak-ng`` voices (distinct); each becomes a label.
    n_utterances : int, default 8
        Utterances per voice, >= 1.
    seconds : float, default 4.0
        Length of each stem, in [0.5, 60].
    sample_rate : int, default 16000
        In Hz, 8000 to 96000.
    random_state : int, default 0
        Seed (>= 0).
    cache : bool, default True
        Reuse and store stems in :func:`decomp.data.cache.cache_dir`.

    Returns
    -------
    StemBank
        ``len(voices) * n_utterances`` stems, voice-major; ``fonts`` are ``"espeak-ng"``.

    Raises
    ------
    MissingDependencyError
        If ``espeak-ng`` is not installed.
    TypeError, ValueError
        If an argument has the wrong type or value.
    RuntimeError
        If espeak-ng fails (an unknown voice, for instance).
    """
    if isinstance(voices, str) or not isinstance(voices, Sequence):
        raise TypeError(f"voices must be a sequence of espeak-ng voice names; got {voices!r}.")
    voices = list(voices)
    if not voices or not all(isinstance(voice, str) and voice for voice in voices):
        raise ValueError(f"voices must be a non-empty sequence of voice names; got {voices!r}.")
    if len(set(voices)) != len(voices):
        raise ValueError(f"voices must be distinct; got {voices}.")
    check_params({"n_utterances": [_POSITIVE_INT], **_BANK_CONSTRAINTS}, {
        "n_utterances": n_utterances, "seconds": seconds, "sample_rate": sample_rate,
        "random_state": random_state, "cache": cache,
    }, "speech_stems")
    n_utterances, seconds, sample_rate = int(n_utterances), float(seconds), int(sample_rate)
    seed, cache = int(random_state), bool(cache)
    binary = _mixtures._espeak_binary()
    version = _mixtures._espeak_version(binary)
    n_samples = int(round(seconds * sample_rate))
    words = _mixtures._WORDS

    stems = []
    for voice in voices:
        rng = _entry_rng(seed, "speech-stems", voice)
        plan = []
        for _ in range(n_utterances):
            speed = int(rng.integers(_mixtures._SPEED_RANGE[0], _mixtures._SPEED_RANGE[1] + 1))
            n_words = int(np.ceil(seconds * speed / 60 * 1.3)) + 2  # as speech_mixtures
            chosen = rng.choice(len(words), size=n_words)
            plan.append({
                "pitch": int(rng.integers(_mixtures._PITCH_RANGE[0],
                                          _mixtures._PITCH_RANGE[1] + 1)),
                "speed": speed,
                "text": " ".join(words[int(w)] for w in chosen),
            })  # fmt: skip
        params = {
            "kind": "speech_stems", "voice": voice, "n_utterances": n_utterances,
            "seconds": seconds, "sample_rate": sample_rate, "random_state": seed,
            "espeak_ng": version, "resampler": "scipy.signal.resample_poly", "plan": plan,
        }  # fmt: skip

        def compute(voice=voice, plan=plan) -> dict[str, np.ndarray]:
            parts = np.zeros((len(plan), n_samples), dtype=np.float32)
            for k, item in enumerate(plan):
                audio = _mixtures._synthesise(binary, voice, item["pitch"], item["speed"],
                                              item["text"], sample_rate)[:n_samples]
                parts[k, : audio.size] = audio
            return {"stems": parts}

        part = _stored(params, compute, cache)
        _check_not_silent(part, f"voice {voice!r}")
        stems.append(part)
    params = {"kind": "speech_stems", "voices": voices, "n_utterances": n_utterances,
              "seconds": seconds, "sample_rate": sample_rate, "random_state": seed}
    return StemBank(
        np.concatenate(stems),
        np.repeat(np.array(voices), n_utterances),
        np.full(len(voices) * n_utterances, "espeak-ng"),
        sample_rate,
        params,
    )


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """Random timbre and level changes, each applied with its own probability.

    Pitch shift, tilt and reverb act on each source separately (before its level is
    set); the gain acts on the whole example (every source alike, so the relative
    levels and ``mixture == sum(sources)`` are kept).

    Parameters
    ----------
    gain_probability : float, default 0.5
        Chance that an example's overall level moves by a gain drawn from ``gain_range``.
    gain_range : (float, float), default (-6.0, 6.0)
        dB, within [-40, 40]. Joint peak scaling still keeps everything within [-1, 1].
    tilt_probability : float, default 0.5
        Chance that a source's spectrum is tilted.
    tilt_range : (float, float), default (-3.0, 3.0)
        dB per octave around 1 kHz, within [-12, 12]; flat below 62.5 Hz. Applied with
        an FFT of the crop (a zero-phase EQ).
    pitch_probability : float, default 0.5
        Chance that a source is pitch-shifted.
    pitch_range : (float, float), default (-1.0, 1.0)
        Semitones, within [-4, 4]. The crop is resampled (``scipy.signal.resample_poly``
        by the nearest ratio with a denominator <= 64, within 0.02 semitones), so tempo
        and formants move with the pitch; the length is kept.
    reverb_probability : float, default 0.5
        Chance that a source is convolved with a synthetic room. Measured to hurt a
        blind instrument separator on a held-out SoundFont
        (``benchmarks/augmentation_ablation.py``: 1 dB SI-SDRi lost) and the speech
        separator (0.4 dB); both shipped models train without it, and 0.0 is advised
        for new ones. The default stays 0.5 so that a seeded stream gives the mixtures
        it always gave.
    rt60_range : (float, float), default (0.1, 0.6)
        Reverberation time in seconds, within [0.01, 3]. The impulse response is a direct
        impulse plus exponentially decaying Gaussian noise that falls by 60 dB in RT60
        seconds, with as much energy as the direct sound (0 dB direct-to-reverberant).

    Examples
    --------
    >>> Augmentation(reverb_probability=0.0).pitch_range
    (-1.0, 1.0)
    """

    gain_probability: float = 0.5
    gain_range: tuple[float, float] = (-6.0, 6.0)
    tilt_probability: float = 0.5
    tilt_range: tuple[float, float] = (-3.0, 3.0)
    pitch_probability: float = 0.5
    pitch_range: tuple[float, float] = (-1.0, 1.0)
    reverb_probability: float = 0.5
    rt60_range: tuple[float, float] = (0.1, 0.6)

    def __post_init__(self) -> None:
        checks = (("gain", "gain_range", -40.0, 40.0), ("tilt", "tilt_range", -12.0, 12.0),
                  ("pitch", "pitch_range", -4.0, 4.0), ("reverb", "rt60_range", 0.01, 3.0))
        probabilities = [f"{kind}_probability" for kind, *_ in checks]
        probability = StrictInterval(Real, 0, 1, closed="both")
        check_params({name: [probability] for name in probabilities},
                     {name: getattr(self, name) for name in probabilities}, "Augmentation")
        for kind, range_name, low, high in checks:
            name = f"{kind}_probability"
            object.__setattr__(self, name, float(getattr(self, name)))
            object.__setattr__(self, range_name, check_range(
                getattr(self, range_name), f"Augmentation {range_name}", low, high))


def _pitch_ratio(semitones: float) -> tuple[int, int]:
    """(up, down) for resample_poly: output length = input * up / down = input / 2^(s/12)."""
    ratio = Fraction(2.0 ** (-semitones / 12.0)).limit_denominator(64)
    return ratio.numerator, ratio.denominator


def _tilt(audio: np.ndarray, db_per_octave: float, octaves: np.ndarray) -> np.ndarray:
    """Multiply the spectrum by ``db_per_octave * octaves`` dB (``octaves``: of each rfft bin)."""
    spectrum = np.fft.rfft(audio)
    spectrum *= 10.0 ** (db_per_octave * octaves / 20.0)
    return np.fft.irfft(spectrum, n=audio.size)


def _reverb(audio: np.ndarray, rt60: float, sample_rate: int, rng: np.random.Generator
            ) -> np.ndarray:
    """Convolve with a direct impulse plus a noise tail decaying 60 dB in ``rt60`` s."""
    n_taps = max(2, int(round(rt60 * sample_rate)))
    time = np.arange(n_taps) / sample_rate
    response = rng.standard_normal(n_taps) * np.exp(-_LN_1000 * time / rt60)
    response[0] = 0.0
    response /= np.sqrt(np.sum(response**2))  # tail energy = direct energy
    response[0] = 1.0
    return fftconvolve(audio, response)[: audio.size]


# ----------------------------------------------------------------------------- the stream


class MixtureExample(NamedTuple):
    """One example of a :class:`MixtureStream` (batches collate field by field).

    Attributes
    ----------
    mixture : float32 array of shape (crop_samples,)
        The sum of ``sources``, within [-1, 1].
    sources : float32 array of shape (max_sources, crop_samples)
        The sources; slots ``n_sources:`` are zeros.
    labels : int64 array of shape (max_sources,)
        Each source's index in ``stream.classes``; -1 for an empty slot.
    n_sources : int64
        Number of sources.
    """

    mixture: Any
    sources: Any
    labels: Any
    n_sources: Any


def _as_stems(stems: Any) -> list[np.ndarray]:
    if isinstance(stems, torch.Tensor):
        stems = stems.detach().cpu().numpy()
    if isinstance(stems, np.ndarray):
        if stems.ndim != 2:
            raise ValueError(
                "stems must be a StemBank, an array of shape (n_stems, n_samples) or a "
                f"sequence of 1-D arrays; got an array of shape {stems.shape}."
            )
        rows = list(stems)
    elif isinstance(stems, Sequence) and not isinstance(stems, (str, bytes)):
        rows = [np.asarray(row.detach().cpu() if isinstance(row, torch.Tensor) else row)
                for row in stems]  # fmt: skip
    else:
        raise TypeError(
            "stems must be a StemBank, an array of shape (n_stems, n_samples) or a sequence "
            f"of 1-D arrays; got {type(stems).__name__}."
        )
    if not rows:
        raise ValueError("stems must hold at least one stem; got none.")
    checked = []
    for index, row in enumerate(rows):
        if row.ndim != 1 or row.size == 0 or row.dtype.kind not in "fiu":
            raise ValueError(
                f"stems[{index}] must be a non-empty 1-D array of real numbers; got "
                f"shape {row.shape} and dtype {row.dtype}."
            )
        row = row.astype(np.float32, copy=False)
        if not np.all(np.isfinite(row)):
            raise ValueError(f"stems[{index}] contains NaN or infinity.")
        checked.append(row)
    return checked


class MixtureStream(torch.utils.data.IterableDataset):
    """Endless mixtures of cached stems, mixed on the fly (dynamic mixing).

    Each example draws a number of sources uniformly from [``min_sources``,
    ``max_sources``], that many distinct labels, and for each label a random stem with
    that label. Each source is a random crop of its stem (an offset whose crop holds
    sound: at most 20 dB below the stem's RMS; after 20 tries, the stem's loudest
    window), optionally augmented (:class:`Augmentation`), then scaled to an RMS level
    drawn uniformly from ``level_range`` dBFS. The mixture is the sum of the sources;
    where it or a source would peak above :data:`decomp.data.PEAK_CEILING`, all are
    scaled together (no clipping: the mixing of :func:`decomp.data.instrument_mixtures`).

    Determinism: iteration ``i`` of worker ``w`` draws from a NumPy generator seeded with
    ``(random_state, epoch, w)`` (``w = 0`` without workers;
    ``torch.utils.data.get_worker_info`` gives it in a DataLoader worker). So the same
    seed gives the same examples, and a DataLoader with ``k`` workers gives the same
    batches for a fixed ``k`` (each worker makes whole batches, taken in turn); with
    ``k = 0`` and ``k = 1`` the sequences coincide. :meth:`set_epoch` starts other
    sequences.

    Parameters
    ----------
    stems : StemBank, array of shape (n_stems, n_samples) or sequence of 1-D arrays
        The isolated sources. Shorter than a crop, a stem is zero-padded.
    labels : sequence of str or int, shape (n_stems,), optional
        Each stem's class; required with arrays, taken from a StemBank.
    sample_rate : int, optional
        In Hz; required with arrays, taken from a StemBank (if both, they must agree).
    crop_samples : int, default 32000
        Samples per example (2 s at 16 kHz), >= 16.
    min_sources, max_sources : int, default 2
        Sources per example, 1 <= min_sources <= max_sources <= number of labels.
    level_range : (float, float), default (-30.0, -20.0)
        RMS level of each source in dBFS (before the gain augmentation and any peak
        scaling), within [-80, 0].
    augmentation : Augmentation, optional
        Timbre and level augmentation; ``None`` (default) augments nothing.
    random_state : int or None, default 0
        Seed (>= 0). ``None`` draws one at construction (then only that object repeats).
    output : {"numpy", "torch"}, default "numpy"
        Array type of the examples (a DataLoader converts NumPy arrays to tensors anyway).

    Attributes
    ----------
    classes : tuple
        The sorted distinct labels; ``MixtureExample.labels`` index into it.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or value.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stream = MixtureStream(rng.standard_normal((4, 8000)) * 0.1, ["a", "a", "b", "c"],
    ...                        sample_rate=8000, crop_samples=4000, max_sources=3)
    >>> example = next(iter(stream))
    >>> example.mixture.shape, example.sources.shape, example.labels.shape
    ((4000,), (3, 4000), (3,))
    >>> loader = torch.utils.data.DataLoader(stream, batch_size=8)
    >>> next(iter(loader)).sources.shape
    torch.Size([8, 3, 4000])
    """

    def __init__(
        self,
        stems: StemBank | np.ndarray | Sequence[np.ndarray],
        labels: Sequence[str | int] | None = None,
        *,
        sample_rate: int | None = None,
        crop_samples: int = 32000,
        min_sources: int = 2,
        max_sources: int = 2,
        level_range: tuple[float, float] = (-30.0, -20.0),
        augmentation: Augmentation | None = None,
        random_state: int | None = 0,
        output: str = "numpy",
    ) -> None:
        super().__init__()
        if isinstance(stems, StemBank):
            if labels is not None:
                raise ValueError("labels must be None when stems is a StemBank (it has them).")
            if sample_rate is not None and sample_rate != stems.sample_rate:
                raise ValueError(
                    f"sample_rate must match the StemBank's ({stems.sample_rate} Hz) or be "
                    f"None; got {sample_rate}."
                )
            labels, sample_rate, stems = stems.labels, stems.sample_rate, stems.stems
        elif labels is None or sample_rate is None:
            raise ValueError("labels and sample_rate are required when stems are arrays.")
        self._stems = _as_stems(stems)
        if isinstance(labels, (str, bytes)) or not isinstance(labels, (Sequence, np.ndarray)):
            raise TypeError(f"labels must be a sequence of str or int; got {labels!r}.")
        label_array = np.asarray(labels)
        if label_array.shape != (len(self._stems),) or label_array.dtype.kind not in "UiS":
            raise ValueError(
                f"labels must be {len(self._stems)} str or int (one per stem); got an array "
                f"of shape {label_array.shape} and dtype {label_array.dtype}."
            )
        classes, label_index = np.unique(label_array, return_inverse=True)
        self.classes = tuple(classes.tolist())
        check_params({
            "sample_rate": [_POSITIVE_INT],
            "crop_samples": [StrictInterval(Integral, 16, None, closed="left")],
            "min_sources": [StrictInterval(Integral, 1, len(self.classes), closed="both")],
            "random_state": [_SEED, None],
            "output": [StrOptions({"numpy", "torch"})],
        }, {"sample_rate": sample_rate, "crop_samples": crop_samples,
            "min_sources": min_sources, "random_state": random_state, "output": output},
            "MixtureStream")
        check_params(
            {"max_sources": [StrictInterval(Integral, int(min_sources), len(self.classes),
                                            closed="both")]},
            {"max_sources": max_sources}, "MixtureStream")
        self.sample_rate, self.crop_samples = int(sample_rate), int(crop_samples)
        self.min_sources, self.max_sources = int(min_sources), int(max_sources)
        self.level_range = check_range(level_range, "level_range", -80.0, 0.0)
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise TypeError(
                f"augmentation must be an Augmentation or None; got {type(augmentation).__name__}."
            )
        self.augmentation = augmentation
        if random_state is None:
            random_state = int(np.random.SeedSequence().generate_state(1)[0])
        self.random_state = int(random_state)
        self.output = output
        self.epoch = 0

        rms = np.array([np.sqrt(np.mean(np.square(row, dtype=np.float64))) for row in self._stems])
        if np.any(rms < _SILENT_STEM_RMS):
            index = int(np.argmin(rms))
            raise ValueError(f"stems[{index}] is silent (RMS {rms[index]:.2g}); every stem "
                             "must hold sound.")  # fmt: skip
        self._stem_rms = rms
        self._by_class = [np.flatnonzero(label_index == k) for k in range(len(self.classes))]
        self._loudest = [_loudest_window(row, self.crop_samples) for row in self._stems]
        frequencies = np.fft.rfftfreq(self.crop_samples, 1.0 / self.sample_rate)
        self._octaves = np.log2(np.maximum(frequencies, _TILT_FLOOR_HZ) / _TILT_REFERENCE_HZ)

    def set_epoch(self, epoch: int) -> None:
        """Use the sequence of ``epoch`` (>= 0) from the next ``iter`` on."""
        check_params({"epoch": [StrictInterval(Integral, 0, None, closed="left")]},
                     {"epoch": epoch}, "MixtureStream.set_epoch")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[MixtureExample]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        rng = np.random.default_rng([self.random_state, self.epoch, worker])
        while True:
            example, _ = self._example(rng)
            yield example

    def take(self, n_mixtures: int) -> MixtureSet:
        """The first ``n_mixtures`` examples of the (single-process) stream, as a MixtureSet.

        For fixed validation sets, e.g. from another training font's stems.
        """
        check_params({"n_mixtures": [_POSITIVE_INT]}, {"n_mixtures": n_mixtures},
                     "MixtureStream.take")
        n_mixtures = int(n_mixtures)
        rng = np.random.default_rng([self.random_state, self.epoch, 0])
        examples, scales = zip(*(self._example(rng, as_numpy=True) for _ in range(n_mixtures)),
                               strict=True)
        labels = np.stack([example.labels for example in examples])
        names = np.array([str(label) for label in self.classes] + [""])
        return MixtureSet(
            mixtures=np.stack([example.mixture for example in examples]),
            sources=np.stack([example.sources for example in examples]),
            n_sources=np.array([example.n_sources for example in examples], dtype=np.int64),
            instruments=names[labels],  # -1 picks the final ""
            sample_rate=self.sample_rate,
            peak_scale=np.array(scales, dtype=np.float32),
            params={"kind": "MixtureStream.take", "random_state": self.random_state,
                    "epoch": self.epoch},
        )

    # ------------------------------------------------------------------ one example
    def _example(self, rng: np.random.Generator, as_numpy: bool = False
                 ) -> tuple[MixtureExample, float]:
        count = int(rng.integers(self.min_sources, self.max_sources + 1))
        chosen = rng.choice(len(self.classes), size=count, replace=False)
        augmentation = self.augmentation
        sources, levels = [], []
        for label in chosen:
            members = self._by_class[int(label)]
            stem = int(members[rng.integers(members.size)])
            sources.append(self._source(stem, rng))
            levels.append(float(rng.uniform(*self.level_range)))
        if augmentation is not None and rng.random() < augmentation.gain_probability:
            gain = float(rng.uniform(*augmentation.gain_range))
            levels = [level + gain for level in levels]
        mixed = _mix([sources], [levels], self.crop_samples, self.max_sources)
        label_row = np.full(self.max_sources, -1, dtype=np.int64)
        label_row[:count] = chosen
        example = MixtureExample(mixed["mixtures"][0], mixed["sources"][0], label_row,
                                 np.int64(count))
        if self.output == "torch" and not as_numpy:
            example = MixtureExample(*(torch.as_tensor(value) for value in example))
        return example, float(mixed["peak_scale"][0])

    def _source(self, stem: int, rng: np.random.Generator) -> np.ndarray:
        """A random active crop of one stem, augmented; (crop_samples,) float64."""
        augmentation, crop = self.augmentation, self.crop_samples
        up = down = 1
        if augmentation is not None and rng.random() < augmentation.pitch_probability:
            up, down = _pitch_ratio(float(rng.uniform(*augmentation.pitch_range)))
        need = -(-crop * down // up)  # input samples that resample to at least `crop`
        audio = self._stems[stem]
        threshold = _ACTIVE_FRACTION * self._stem_rms[stem]
        last_start = max(audio.size - need, 0)
        for _ in range(_CROP_TRIES):
            start = int(rng.integers(last_start + 1))
            segment = audio[start:start + need]
            if np.sqrt(np.mean(np.square(segment, dtype=np.float64))) >= threshold:
                break
        else:
            start = min(self._loudest[stem], last_start)
            segment = audio[start:start + need]
        segment = segment.astype(np.float64)
        if segment.size < need:
            segment = np.pad(segment, (0, need - segment.size))
        if up != down:
            segment = resample_poly(segment, up, down)
            segment = np.pad(segment, (0, max(crop - segment.size, 0)))
        segment = segment[:crop]
        if augmentation is not None and rng.random() < augmentation.tilt_probability:
            segment = _tilt(segment, float(rng.uniform(*augmentation.tilt_range)),
                            self._octaves)
        if augmentation is not None and rng.random() < augmentation.reverb_probability:
            segment = _reverb(segment, float(rng.uniform(*augmentation.rt60_range)),
                              self.sample_rate, rng)
        return segment


def _loudest_window(audio: np.ndarray, length: int) -> int:
    """Start of the ``length``-sample window of ``audio`` with the most energy."""
    if audio.size <= length:
        return 0
    energy = np.concatenate([[0.0], np.cumsum(np.square(audio, dtype=np.float64))])
    return int(np.argmax(energy[length:] - energy[:-length]))
