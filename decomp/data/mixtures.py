"""Synthetic source-separation data: instrument mixtures (like Solos/URMP) and two-speaker
speech mixtures (like Libri2Mix), with their isolated sources.

Nothing is downloaded. Instrument stems are short random melodies rendered one by one with
FluidSynth from General-MIDI programs (:func:`decomp.data.render.render_midi`); speech stems
are random word sequences spoken by ``espeak-ng`` voices. Every random choice (instruments,
notes, voices, levels) is drawn first, from one NumPy Generator, into a *plan*; the audio is
a deterministic function of the plan, and the whole set is cached on disk keyed by it
(:mod:`decomp.data.cache`).

Levels and the [-1, 1] bound
----------------------------
Each stem is scaled to a random RMS level (dBFS), so no source dominates. The mixture is the
sum of the stems. The Solos paper notes that artificial mixtures may leave the [-1, 1] range
of floating-point audio, which lets a network find shortcuts; it answers by clamping
*spectrograms* to the equivalent bounds, not by clipping waveforms. Here nothing is
hard-clipped: when the mixture or a stem would peak above :data:`PEAK_CEILING`, the mixture
and all its stems are scaled together by ``PEAK_CEILING / peak`` (kept in
``MixtureSet.peak_scale``). So every value lies in [-1, 1] *and* ``mixture == sum(stems)``
holds exactly in float64 (to float32 rounding, about 1e-7, in the stored arrays).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import gcd
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
from scipy.signal import resample_poly

from decomp._validation import GENERATOR_SEED, StrictInterval, check_params, check_range
from decomp.data.cache import cached_arrays
from decomp.data.render import SYNTHESIS_SAMPLE_RATE, render_midi, run_writing_wav
from decomp.data.soundfonts import resolve_soundfont
from decomp.exceptions import MissingDependencyError

__all__ = [
    "DEFAULT_INSTRUMENTS",
    "INSTRUMENTS",
    "MAX_SOURCES",
    "PEAK_CEILING",
    "SPEECH_VOICES",
    "GMInstrument",
    "MixtureSet",
    "instrument_mixtures",
    "speech_mixtures",
]

MAX_SOURCES = 7
"""Most sources in one mixture (the Solos MHU-Net curriculum goes from two to seven)."""

PEAK_CEILING = 0.99
"""Mixtures and stems are scaled together so that no sample exceeds this magnitude."""

_SILENT_RMS = 1e-6  # below this (about -120 dBFS) a stem cannot be level-normalised


@dataclass(frozen=True)
class GMInstrument:
    """A General-MIDI program and the pitches its melodies use.

    Attributes
    ----------
    name : str
        Short name (``"violin"``), used as the source label.
    program : int
        General-MIDI program number, 0-based (0 = Acoustic Grand Piano, 40 = Violin).
    lowest, highest : int
        MIDI pitch range of the melodies (inclusive), within the instrument's real compass.
    """

    name: str
    program: int
    lowest: int
    highest: int


INSTRUMENTS: dict[str, GMInstrument] = {
    instrument.name: instrument
    for instrument in (
        GMInstrument("violin", 40, 55, 93),  # G3-A6
        GMInstrument("cello", 42, 36, 76),  # C2-E5
        GMInstrument("flute", 73, 60, 93),  # C4-A6
        GMInstrument("clarinet", 71, 50, 86),  # D3-D6 (sounding)
        GMInstrument("trumpet", 56, 55, 82),  # G3-Bb5
        GMInstrument("alto-saxophone", 65, 49, 80),  # Db3-Ab5 (sounding)
        GMInstrument("tenor-saxophone", 66, 44, 75),  # Ab2-Eb5 (sounding)
        GMInstrument("oboe", 68, 58, 91),  # Bb3-G6
        GMInstrument("bassoon", 70, 34, 72),  # Bb1-C5
        GMInstrument("acoustic-grand-piano", 0, 36, 96),  # C2-C7
    )
}
"""Known instruments by name (Solos' and URMP's orchestral instruments, plus the piano)."""

DEFAULT_INSTRUMENTS: tuple[GMInstrument, ...] = tuple(INSTRUMENTS.values())
"""The instruments :func:`instrument_mixtures` draws from by default."""


@dataclass
class MixtureSet:
    """Mixtures together with their isolated sources.

    Attributes
    ----------
    mixtures : ndarray of float32, shape (n_mixtures, n_samples)
        Mono mixtures in [-1, 1]; ``mixtures[i] == sources[i].sum(axis=0)`` up to float32
        rounding.
    sources : ndarray of float32, shape (n_mixtures, max_sources, n_samples)
        The stems; slots ``n_sources[i]:`` of mixture ``i`` are zeros.
    n_sources : ndarray of int64, shape (n_mixtures,)
        Number of sources in each mixture.
    instruments : ndarray of str, shape (n_mixtures, max_sources)
        Each slot's label: the instrument name (:data:`INSTRUMENTS`) or, for speech, the
        ``espeak-ng`` voice; ``""`` for unused slots.
    sample_rate : int
        In Hz.
    peak_scale : ndarray of float32, shape (n_mixtures,)
        The factor (<= 1) applied to mixture ``i`` and its stems to keep them in
        [-1, 1]; 1.0 where none was needed.
    params : dict
        The generator's parameters and plan (JSON-like), for reports and cache keys.
    """

    mixtures: np.ndarray
    sources: np.ndarray
    n_sources: np.ndarray
    instruments: np.ndarray
    sample_rate: int
    peak_scale: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_mixtures(self) -> int:
        """Number of mixtures."""
        return int(self.mixtures.shape[0])

    @property
    def max_sources(self) -> int:
        """Number of source slots."""
        return int(self.sources.shape[1])

    @property
    def duration(self) -> float:
        """Length of each mixture in seconds."""
        return self.mixtures.shape[1] / self.sample_rate


# ----------------------------------------------------------------------------- checks

_MIDI_NUMBER = StrictInterval(Integral, 0, 127, closed="both")
_COMMON_CONSTRAINTS: dict[str, list] = {
    "n_mixtures": [StrictInterval(Integral, 1, None, closed="left")],
    "duration": [StrictInterval(Real, 0, 60, closed="right")],  # seconds
    "sample_rate": SYNTHESIS_SAMPLE_RATE,
    "random_state": GENERATOR_SEED,
    "cache": ["boolean"],
}


def _check_n_sources(n_sources: Any, n_available: int) -> tuple[int, int]:
    """``n_sources`` as an inclusive (min, max) range within [1, min(MAX_SOURCES, n_available)]."""
    if isinstance(n_sources, (int, np.integer)) and not isinstance(n_sources, bool):
        low = high = int(n_sources)
    elif (
        isinstance(n_sources, Sequence)
        and not isinstance(n_sources, (str, bytes))
        and len(n_sources) == 2
        and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in n_sources
        )
    ):
        low, high = int(n_sources[0]), int(n_sources[1])
    else:
        raise TypeError(
            f"n_sources must be an int or a pair (min, max) of ints; got {n_sources!r}."
        )
    if not 1 <= low <= high <= MAX_SOURCES:
        raise ValueError(
            f"n_sources must lie in [1, {MAX_SOURCES}] (a range needs min <= max); "
            f"got {n_sources!r}."
        )
    if high > n_available:
        raise ValueError(
            f"n_sources asks for up to {high} sources per mixture but only {n_available} "
            "distinct instruments were given; each mixture uses distinct instruments."
        )
    return low, high


def _check_instruments(instruments: Any) -> tuple[GMInstrument, ...]:
    if isinstance(instruments, (str, bytes, GMInstrument)) or not isinstance(
        instruments, Sequence
    ):
        raise TypeError(
            "instruments must be a sequence of instrument names or GMInstrument objects; "
            f"got {type(instruments).__name__}."
        )
    resolved = []
    for item in instruments:
        if isinstance(item, str):
            if item not in INSTRUMENTS:
                raise ValueError(
                    f"instruments: unknown instrument {item!r}; known are {sorted(INSTRUMENTS)} "
                    "(or pass a GMInstrument)."
                )
            item = INSTRUMENTS[item]
        elif not isinstance(item, GMInstrument):
            raise TypeError(
                "instruments must hold instrument names or GMInstrument objects; "
                f"got {type(item).__name__}."
            )
        owner = f"GMInstrument({item.name!r})"
        check_params({"program": [_MIDI_NUMBER], "lowest": [_MIDI_NUMBER]},
                     {"program": item.program, "lowest": item.lowest}, owner)
        check_params({"highest": [StrictInterval(Integral, item.lowest, 127, closed="both")]},
                     {"highest": item.highest}, owner)
        resolved.append(item)
    if not resolved:
        raise ValueError("instruments must hold at least one instrument; got none.")
    names = [item.name for item in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"instruments must have distinct names; got {names}.")
    return tuple(resolved)


def _seed_param(random_state: Any) -> int | None:
    return int(random_state) if isinstance(random_state, (int, np.integer)) else None


# ----------------------------------------------------------------------------- mixing


def _mix(
    stems: list[list[np.ndarray]], levels_db: list[list[float]], n_samples: int, max_sources: int
) -> dict[str, np.ndarray]:
    """Level-normalise stems, sum them and keep everything within PEAK_CEILING.

    ``stems[i][j]`` is stem ``j`` of mixture ``i`` (any length; cut or zero-padded to
    ``n_samples``), scaled to an RMS of ``levels_db[i][j]`` dBFS.
    """
    n_mixtures = len(stems)
    sources = np.zeros((n_mixtures, max_sources, n_samples), dtype=np.float32)
    mixtures = np.zeros((n_mixtures, n_samples), dtype=np.float32)
    peak_scale = np.ones(n_mixtures, dtype=np.float32)
    for i, (row, levels) in enumerate(zip(stems, levels_db, strict=True)):
        fitted = np.zeros((len(row), n_samples), dtype=np.float64)  # (n_sources, n_samples)
        for j, (stem, level) in enumerate(zip(row, levels, strict=True)):
            stem = np.asarray(stem, dtype=np.float64)[:n_samples]
            fitted[j, : stem.size] = stem
            rms = float(np.sqrt(np.mean(fitted[j] ** 2)))
            if rms < _SILENT_RMS:
                raise RuntimeError(
                    f"Source {j} of mixture {i} is silent (RMS {rms:.2g}); its program or "
                    "voice produced no sound."
                )
            fitted[j] *= 10.0 ** (level / 20.0) / rms
        peak = max(float(np.max(np.abs(fitted.sum(axis=0)))), float(np.max(np.abs(fitted))))
        if peak > PEAK_CEILING:
            # Scale mixture and stems together: no hard clip, the sum relation still holds.
            scale = PEAK_CEILING / peak
            fitted *= scale
            peak_scale[i] = scale
        sources[i, : len(row)] = fitted
        mixtures[i] = sources[i].sum(axis=0, dtype=np.float64)
    return {"mixtures": mixtures, "sources": sources, "peak_scale": peak_scale}


def _labels_array(labels: list[list[str]], max_sources: int) -> np.ndarray:
    width = max((len(name) for row in labels for name in row), default=1)
    array = np.full((len(labels), max_sources), "", dtype=f"<U{max(width, 1)}")
    for i, row in enumerate(labels):
        array[i, : len(row)] = row
    return array


def _build(
    arrays: dict[str, np.ndarray],
    labels: list[list[str]],
    max_sources: int,
    sample_rate: int,
    params: dict[str, Any],
) -> MixtureSet:
    return MixtureSet(
        mixtures=arrays["mixtures"],
        sources=arrays["sources"],
        n_sources=np.array([len(row) for row in labels], dtype=np.int64),
        instruments=_labels_array(labels, max_sources),
        sample_rate=sample_rate,
        peak_scale=arrays["peak_scale"],
        params=params,
    )


# ----------------------------------------------------------------------------- instruments

# Note lengths (s) of the melodies, and the chance that an event is a rest.
_NOTE_LENGTHS = np.array([0.15, 0.25, 0.4, 0.6, 0.9])
_REST_PROBABILITY = 0.15
# Melody steps in semitones: mostly small, some leaps.
_MELODY_STEPS = np.arange(-7, 8)
_MELODY_STEP_WEIGHTS = np.exp(-np.abs(_MELODY_STEPS) / 2.5)
_MELODY_STEP_PROBABILITIES = _MELODY_STEP_WEIGHTS / _MELODY_STEP_WEIGHTS.sum()


_MIN_NOTE_SECONDS = 0.05


def _random_melody(
    rng: np.random.Generator,
    instrument: GMInstrument,
    duration: float,
    velocity_range: tuple[int, int],
) -> list[list[float]]:
    """Notes ``[pitch, velocity, start, end]`` (s) of a monophonic melody filling ``duration``.

    A random walk over the instrument's range; the first note starts within 0.1 s, every
    note is released at 90 % of its length (distinct onsets), none ends after ``duration``.
    """
    pitches = np.arange(instrument.lowest, instrument.highest + 1)
    pitch = int(rng.choice(pitches))
    time = float(rng.uniform(0.0, 0.1))
    notes: list[list[float]] = []
    while time < duration:
        length = float(rng.choice(_NOTE_LENGTHS))
        if notes and rng.random() < _REST_PROBABILITY:
            time += length
            continue
        step = int(rng.choice(_MELODY_STEPS, p=_MELODY_STEP_PROBABILITIES))
        pitch = int(np.clip(pitch + step, instrument.lowest, instrument.highest))
        velocity = int(rng.integers(velocity_range[0], velocity_range[1] + 1))
        end = min(time + 0.9 * length, duration)
        if end - time < _MIN_NOTE_SECONDS:
            break  # a sliver at the very end would be inaudible
        notes.append([pitch, velocity, round(time, 6), round(end, 6)])
        time += length
    return notes


def _render_stem(
    program: int, notes: list[list[float]], font_path: Path, sample_rate: int
) -> np.ndarray:
    """FluidSynth render of one melody; (n_samples,) float32 (not individually cached)."""
    pm = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    for pitch, velocity, start, end in notes:
        instrument.notes.append(pretty_midi.Note(int(velocity), int(pitch), start, end))
    pm.instruments.append(instrument)
    return render_midi(pm, font_path, sample_rate, cache=False)


def instrument_mixtures(
    soundfont: str | os.PathLike,
    n_mixtures: int,
    n_sources: int | tuple[int, int] = 2,
    instruments: Sequence[str | GMInstrument] = DEFAULT_INSTRUMENTS,
    duration: float = 4.0,
    sample_rate: int = 16000,
    random_state: int | np.random.Generator | None = None,
    *,
    level_range: tuple[float, float] = (-26.0, -20.0),
    velocity_range: tuple[int, int] = (60, 110),
    cache: bool = True,
) -> MixtureSet:
    """Mixtures of random melodies on distinct General-MIDI instruments (like Solos/URMP).

    For each mixture, a number of sources is drawn uniformly from the ``n_sources`` range and
    that many distinct instruments from ``instruments``. Each source plays its own random
    monophonic melody (a random walk in the instrument's pitch range, random note lengths,
    rests and velocities) and is rendered alone with FluidSynth. Each stem is scaled to an
    RMS level drawn uniformly from ``level_range`` (dBFS), so no source dominates; the
    mixture is their sum. Where the mixture or a stem would exceed :data:`PEAK_CEILING`,
    mixture and stems are scaled down together (no hard clip; see the module docstring).

    Use different SoundFonts for training and test sets (a timbre shift, as for the piano
    data).

    Parameters
    ----------
    soundfont : str or path
        A SoundFont name (``"fluidr3"``, ``"timgm6mb"``, ``"musescore-lite"``) or a
        ``.sf2``/``.sf3`` path.
    n_mixtures : int
        At least 1.
    n_sources : int or (int, int), default 2
        Sources per mixture, or an inclusive range (min, max) to draw from; within
        [1, :data:`MAX_SOURCES`] and at most ``len(instruments)``.
    instruments : sequence of str or GMInstrument, default DEFAULT_INSTRUMENTS
        Names from :data:`INSTRUMENTS` or :class:`GMInstrument` objects (distinct names).
    duration : float, default 4.0
        Seconds per mixture, > 0 (at most 60).
    sample_rate : int, default 16000
        In Hz, 8000 to 96000.
    random_state : int, numpy Generator or None
        Seed; the same seed gives the same mixtures.
    level_range : (float, float), default (-26.0, -20.0)
        Range of each stem's RMS level in dBFS (before any peak scaling), within [-80, 0].
    velocity_range : (int, int), default (60, 110)
        MIDI velocities of the notes.
    cache : bool, default True
        Reuse and store the set in :func:`decomp.data.cache.cache_dir`, keyed by the font
        file, every parameter and the drawn plan.

    Returns
    -------
    MixtureSet
        ``mixtures`` of shape (n_mixtures, n_samples), ``sources`` of shape
        (n_mixtures, max_sources, n_samples) with ``n_samples = round(duration *
        sample_rate)`` and ``max_sources`` the top of the ``n_sources`` range.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or value (unknown font or instrument, ``n_sources``
        out of range or above the number of instruments, non-positive duration...).
    MissingDependencyError
        If ``fluidsynth`` or a known SoundFont is not installed.
    RuntimeError
        If FluidSynth fails or a stem renders silent.

    Examples
    --------
    >>> data = instrument_mixtures("timgm6mb", 2, n_sources=(2, 3), duration=1.0,
    ...                            random_state=0)
    >>> data.mixtures.shape, data.sources.shape
    ((2, 16000), (2, 3, 16000))
    """
    check_params({"soundfont": [str, os.PathLike], **_COMMON_CONSTRAINTS}, {
        "soundfont": soundfont, "n_mixtures": n_mixtures, "duration": duration,
        "sample_rate": sample_rate, "random_state": random_state, "cache": cache,
    }, "instrument_mixtures")
    font_name = os.fspath(soundfont)
    font_path = resolve_soundfont(soundfont)
    n_mixtures, duration, sample_rate = int(n_mixtures), float(duration), int(sample_rate)
    instrument_list = _check_instruments(instruments)
    low_sources, high_sources = _check_n_sources(n_sources, len(instrument_list))
    level_range = check_range(level_range, "level_range", -80.0, 0.0)
    low_velocity, high_velocity = (
        int(v) for v in check_range(velocity_range, "velocity_range", 1, 127)
    )
    rng = np.random.default_rng(random_state)

    plan = []
    for _ in range(n_mixtures):
        count = int(rng.integers(low_sources, high_sources + 1))
        chosen = rng.choice(len(instrument_list), size=count, replace=False)
        row = []
        for index in chosen:
            instrument = instrument_list[int(index)]
            notes = _random_melody(rng, instrument, duration, (low_velocity, high_velocity))
            level = round(float(rng.uniform(*level_range)), 6)
            row.append({"instrument": instrument.name, "program": instrument.program,
                        "level_db": level, "notes": notes})  # fmt: skip
        plan.append(row)
    n_samples = int(round(duration * sample_rate))
    params = {
        "kind": "instrument_mixtures",
        "soundfont": font_name,
        "n_mixtures": n_mixtures,
        "n_sources": [low_sources, high_sources],
        "instruments": [[i.name, i.program, i.lowest, i.highest] for i in instrument_list],
        "duration": duration,
        "sample_rate": sample_rate,
        "level_range": list(level_range),
        "velocity_range": [low_velocity, high_velocity],
        "peak_ceiling": PEAK_CEILING,
        "random_state": _seed_param(random_state),
        "plan": plan,
    }

    def compute() -> dict[str, np.ndarray]:
        stems = [
            [_render_stem(s["program"], s["notes"], font_path, sample_rate) for s in row]
            for row in plan
        ]
        levels = [[s["level_db"] for s in row] for row in plan]
        return _mix(stems, levels, n_samples, high_sources)

    arrays = _cached(params, compute, cache, soundfont=font_path)
    labels = [[s["instrument"] for s in row] for row in plan]
    return _build(arrays, labels, high_sources, sample_rate, params)


def _cached(
    params: dict[str, Any],
    compute: Callable[[], dict[str, np.ndarray]],
    cache: bool,
    soundfont: Path | None = None,
) -> dict[str, np.ndarray]:
    if cache:
        return cached_arrays(params, compute, soundfont=soundfont)
    return compute()


# ----------------------------------------------------------------------------- speech

SPEECH_VOICES: tuple[str, ...] = tuple(
    f"{language}+{variant}"
    for language in ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
    for variant in ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")
)
"""``espeak-ng`` voices (English accent + speaker variant) that :func:`speech_mixtures` uses.
Only voices that ship with the ``espeak-ng`` package itself (no MBROLA)."""

# A small word list; speech stems are random sequences of these words.
_WORDS = tuple(
    """
    the a one two three four five six seven eight nine ten red green blue yellow black white
    house river mountain garden window table chair paper music piano violin letter morning
    evening winter summer city village road train ship bird horse dog cat apple bread water
    coffee friend teacher doctor children mother father sister brother people world country
    small large quiet loud quickly slowly always never often sometimes today tomorrow
    yesterday under over behind between before after because although while every many
    walks runs sings reads writes opens closes brings takes finds sees hears knows thinks
    wants likes gives makes plays works lives moves stands waits turns begins carries
    bright warm cold soft heavy light early late happy careful strange simple famous
    """.split()
)
_PITCH_RANGE = (25, 75)  # espeak-ng -p, 0-99 (50 is the voice's default)
_SPEED_RANGE = (130, 200)  # espeak-ng -s, words per minute (175 is the default)
_SPEECH_LEVEL_DB = -25.0  # RMS level (dBFS) around which the two speakers are placed


def _espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise MissingDependencyError(
            "The 'espeak-ng' program was not found on PATH; decomp synthesises speech "
            "mixtures with it. Install it with `apt-get install espeak-ng`."
        )
    return binary


def _espeak_version(binary: str) -> str:
    result = subprocess.run(
        [binary, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    return result.stdout.strip()


def _synthesise(
    binary: str, voice: str, pitch: int, speed: int, text: str, sample_rate: int
) -> np.ndarray:
    """Speak ``text`` with espeak-ng and resample to ``sample_rate``; (n_samples,) float64."""
    with tempfile.TemporaryDirectory(prefix="decomp-speech-") as tmp:
        wav_path = Path(tmp) / "speech.wav"
        command = [binary, "-v", voice, "-p", str(pitch), "-s", str(speed),
                   "-w", str(wav_path), "--", text]  # fmt: skip
        audio, rate = run_writing_wav(command, wav_path, "espeak-ng",
                                      f"with voice {voice!r}", dtype="float64")
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        # Polyphase resampling (scipy): deterministic, e.g. 22050 -> 16000 Hz is 320/441.
        divisor = gcd(int(rate), sample_rate)
        audio = resample_poly(audio, sample_rate // divisor, int(rate) // divisor)
    return audio


def speech_mixtures(
    n_mixtures: int,
    duration: float = 3.0,
    sample_rate: int = 16000,
    random_state: int | np.random.Generator | None = None,
    *,
    relative_level_range: tuple[float, float] = (-5.0, 5.0),
    cache: bool = True,
) -> MixtureSet:
    """Two-speaker speech mixtures synthesised with ``espeak-ng`` (in the spirit of Libri2Mix).

    Each mixture has two speakers with distinct voices from :data:`SPEECH_VOICES` (accent
    plus speaker variant), each with its own random pitch (``-p`` in [25, 75]) and speed
    (``-s`` in [130, 200] words per minute), saying a random sequence of words from a built-in
    list, long enough to fill ``duration``. Speech starts at time 0 and is resampled to
    ``sample_rate`` (``scipy.signal.resample_poly``), cut or zero-padded to ``duration``.
    The first speaker is placed ``r / 2`` dB above -25 dBFS RMS and the second ``r / 2`` dB
    below, with ``r`` drawn from ``relative_level_range``; the mixture is their sum, scaled
    with its stems if it would exceed :data:`PEAK_CEILING` (see the module docstring).

    Parameters
    ----------
    n_mixtures : int
        At least 1.
    duration : float, default 3.0
        Seconds per mixture, > 0 (at most 60).
    sample_rate : int, default 16000
        In Hz, 8000 to 96000.
    random_state : int, numpy Generator or None
        Seed; the same seed gives the same mixtures.
    relative_level_range : (float, float), default (-5.0, 5.0)
        Range (dB) of the first speaker's level relative to the second, within [-30, 30].
    cache : bool, default True
        Reuse and store the set in :func:`decomp.data.cache.cache_dir`.

    Returns
    -------
    MixtureSet
        ``mixtures`` of shape (n_mixtures, n_samples), ``sources`` of shape
        (n_mixtures, 2, n_samples), ``n_samples = round(duration * sample_rate)``;
        ``instruments`` holds the voices.

    Raises
    ------
    MissingDependencyError
        If ``espeak-ng`` is not installed (Debian package ``espeak-ng``).
    TypeError, ValueError
        If an argument has the wrong type or value.
    RuntimeError
        If espeak-ng fails.

    Examples
    --------
    >>> data = speech_mixtures(1, duration=1.0, random_state=0)  # doctest: +SKIP
    >>> data.sources.shape  # doctest: +SKIP
    (1, 2, 16000)
    """
    check_params(_COMMON_CONSTRAINTS, {
        "n_mixtures": n_mixtures, "duration": duration, "sample_rate": sample_rate,
        "random_state": random_state, "cache": cache,
    }, "speech_mixtures")
    n_mixtures, duration, sample_rate = int(n_mixtures), float(duration), int(sample_rate)
    relative_range = check_range(relative_level_range, "relative_level_range", -30.0, 30.0)
    rng = np.random.default_rng(random_state)
    binary = _espeak_binary()

    plan = []
    for _ in range(n_mixtures):
        voices = rng.choice(len(SPEECH_VOICES), size=2, replace=False)
        relative = round(float(rng.uniform(*relative_range)), 6)
        row = []
        for j, voice in enumerate(voices):
            speed = int(rng.integers(_SPEED_RANGE[0], _SPEED_RANGE[1] + 1))
            # 30 % more words than the speed needs, so the speech fills the duration.
            n_words = int(np.ceil(duration * speed / 60 * 1.3)) + 2
            words = rng.choice(len(_WORDS), size=n_words)
            row.append({
                "voice": SPEECH_VOICES[int(voice)],
                "pitch": int(rng.integers(_PITCH_RANGE[0], _PITCH_RANGE[1] + 1)),
                "speed": speed,
                "text": " ".join(_WORDS[int(w)] for w in words),
                "level_db": _SPEECH_LEVEL_DB + (relative / 2 if j == 0 else -relative / 2),
            })  # fmt: skip
        plan.append(row)
    n_samples = int(round(duration * sample_rate))
    params = {
        "kind": "speech_mixtures",
        "n_mixtures": n_mixtures,
        "duration": duration,
        "sample_rate": sample_rate,
        "relative_level_range": list(relative_range),
        "peak_ceiling": PEAK_CEILING,
        "random_state": _seed_param(random_state),
        "espeak_ng": _espeak_version(binary),
        "resampler": "scipy.signal.resample_poly",
        "plan": plan,
    }

    def compute() -> dict[str, np.ndarray]:
        stems = [
            [
                _synthesise(binary, s["voice"], s["pitch"], s["speed"], s["text"], sample_rate)
                for s in row
            ]
            for row in plan
        ]
        levels = [[s["level_db"] for s in row] for row in plan]
        return _mix(stems, levels, n_samples, 2)

    arrays = _cached(params, compute, cache)
    labels = [[s["voice"] for s in row] for row in plan]
    return _build(arrays, labels, 2, sample_rate, params)
