"""Rendered piano data: isolated notes, random chords and short pieces, all from MIDI.

The three generators mirror the MAPS subsets used in the DDS papers (ISOL for training,
RAND for polyphony tests, MUS for pieces) but need no download: the MIDI is generated here
and rendered with FluidSynth (:func:`decomp.data.render.render_midi`).

The MIDI kept in a :class:`RenderedPiano` is the one FluidSynth read (written to a standard
MIDI file and read back), so its note times, and every roll computed from it, match the
audio to the tick.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import pretty_midi

from decomp._validation import GENERATOR_SEED, StrictInterval, check_params
from decomp.audio.pianoroll import check_pitches, check_roll, load_midi, midi_to_roll
from decomp.data.render import SYNTHESIS_SAMPLE_RATE, midi_to_bytes, render_midi

__all__ = [
    "RenderedPiano",
    "isolated_notes",
    "random_chords",
    "random_piece",
    "render_piano_midi",
    "labelled_frames",
]

_PIANO_PITCHES = range(21, 109)
_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)  # semitones above the tonic


@dataclass
class RenderedPiano:
    """Piano audio with the MIDI it was rendered from.

    Attributes
    ----------
    audio : ndarray of float32, shape (n_samples,)
        Mono audio.
    sample_rate : int
        In Hz.
    midi : pretty_midi.PrettyMIDI
        The notes, exactly as rendered.
    soundfont : str
        The font's name or path, as given.
    params : dict
        The generator's parameters (JSON-like), for reports and cache keys.
    """

    audio: np.ndarray
    sample_rate: int
    midi: pretty_midi.PrettyMIDI
    soundfont: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.audio.shape[0] / self.sample_rate

    def frame_times(self, hop_length: int) -> np.ndarray:
        """Times (s) of librosa's ``center=True`` frames: ``1 + n_samples // hop_length`` frames.

        Returns
        -------
        ndarray of float64, shape (n_frames,)
        """
        check_params({"hop_length": [_POSITIVE_INT]}, {"hop_length": hop_length},
                     "RenderedPiano.frame_times")
        hop_length = int(hop_length)
        n_frames = 1 + self.audio.shape[0] // hop_length
        return np.arange(n_frames) * hop_length / self.sample_rate

    def roll(self, frame_times: Any, pitches: Iterable[int] = _PIANO_PITCHES) -> np.ndarray:
        """The piano roll on a frame grid; see :func:`decomp.audio.pianoroll.midi_to_roll`.

        Returns
        -------
        ndarray of bool, shape (n_frames, n_pitches)
        """
        return midi_to_roll(self.midi, frame_times, pitches)


# ----------------------------------------------------------------------------- checks


_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_VELOCITY = StrictInterval(Integral, 1, 127, closed="both")  # a MIDI note-on velocity
_POSITIVE_SECONDS = StrictInterval(Real, 0, None, closed="neither")  # finite, > 0
_SECONDS = StrictInterval(Real, 0, None, closed="left")  # finite, >= 0
_SOUNDFONT = [str, os.PathLike]  # a SoundFont name or a .sf2/.sf3 path


def _check_velocity_range(velocity_range: Any, caller: str) -> tuple[int, int]:
    """A pair (low, high) of MIDI velocities with low <= high."""
    if not isinstance(velocity_range, Sequence) or len(velocity_range) != 2:
        raise TypeError(
            f"velocity_range must be a pair (low, high) of MIDI velocities; got {velocity_range!r}."
        )
    check_params({"velocity_range[0]": [_VELOCITY], "velocity_range[1]": [_VELOCITY]},
                 {"velocity_range[0]": velocity_range[0],
                  "velocity_range[1]": velocity_range[1]}, caller)
    low, high = int(velocity_range[0]), int(velocity_range[1])
    if low > high:
        raise ValueError(f"velocity_range must have low <= high; got ({low}, {high}).")
    return low, high


# ----------------------------------------------------------------------------- rendering


def _render(
    pm: pretty_midi.PrettyMIDI, soundfont: str, sample_rate: int, params: dict[str, Any]
) -> RenderedPiano:
    """Render ``pm`` and keep the MIDI as FluidSynth reads it (tick-quantised times)."""
    rendered_midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_to_bytes(pm)))
    audio = render_midi(rendered_midi, soundfont, sample_rate)
    return RenderedPiano(audio, int(sample_rate), rendered_midi, soundfont, params)


def _new_midi(tempo: float = 120.0) -> tuple[pretty_midi.PrettyMIDI, pretty_midi.Instrument]:
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(tempo))
    piano = pretty_midi.Instrument(program=0, name="piano")
    pm.instruments.append(piano)
    return pm, piano


def isolated_notes(
    soundfont: str | os.PathLike,
    pitches: Iterable[int] = range(36, 96),
    velocities: Iterable[int] = (40, 64, 96),
    note_duration: float = 0.5,
    gap: float = 0.25,
    sample_rate: int = 16000,
) -> RenderedPiano:
    """Every pitch at every velocity, one note at a time (like MAPS ISOL).

    Notes come in order of pitch, then velocity; each lasts ``note_duration`` and is preceded
    by ``gap`` seconds of silence (so the first starts at ``gap``). Everything is one render.

    Parameters
    ----------
    soundfont : str or path
        A SoundFont name (``"fluidr3"``) or a ``.sf2``/``.sf3`` path.
    pitches : iterable of int, default range(36, 96)
        MIDI pitches.
    velocities : iterable of int, default (40, 64, 96)
        MIDI velocities in [1, 127].
    note_duration : float, default 0.5
        Seconds from note-on to note-off.
    gap : float, default 0.25
        Seconds of silence before each note (the release of the previous note fades in it).
    sample_rate : int, default 16000
        In Hz.

    Returns
    -------
    RenderedPiano
        ``len(pitches) * len(velocities) * (gap + note_duration)`` seconds plus the release
        tail (:data:`decomp.data.render.DEFAULT_RELEASE_TAIL`).

    Examples
    --------
    >>> notes = isolated_notes("timgm6mb", pitches=[60, 64], velocities=[80])
    >>> round(notes.duration, 2), [n.pitch for n in notes.midi.instruments[0].notes]
    (2.0, [60, 64])
    """
    velocity_list = _as_list(velocities, "velocities")
    check_params(
        {"soundfont": _SOUNDFONT, "note_duration": [_POSITIVE_SECONDS], "gap": [_SECONDS],
         "sample_rate": SYNTHESIS_SAMPLE_RATE,
         **{f"velocities[{index}]": [_VELOCITY] for index in range(len(velocity_list))}},
        {"soundfont": soundfont, "note_duration": note_duration, "gap": gap,
         "sample_rate": sample_rate,
         **{f"velocities[{index}]": value for index, value in enumerate(velocity_list)}},
        "isolated_notes",
    )
    if not velocity_list:
        raise ValueError("velocities must hold at least one MIDI velocity; got none.")
    name = os.fspath(soundfont)
    pitch_array = check_pitches(pitches)
    velocity_list = [int(velocity) for velocity in velocity_list]
    note_duration, gap = float(note_duration), float(gap)
    pm, piano = _new_midi()
    start = gap
    for pitch in pitch_array:
        for velocity in velocity_list:
            piano.notes.append(
                pretty_midi.Note(velocity, int(pitch), start, start + note_duration)
            )
            start += note_duration + gap
    params = {
        "kind": "isolated_notes",
        "pitches": pitch_array.tolist(),
        "velocities": velocity_list,
        "note_duration": note_duration,
        "gap": gap,
    }
    return _render(pm, name, sample_rate, params)


def _as_list(values: Any, name: str) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Iterable, np.ndarray)):
        raise TypeError(f"{name} must be an iterable; got {type(values).__name__}.")
    return list(values)


def random_chords(
    soundfont: str | os.PathLike,
    n_chords: int = 20,
    polyphony: int = 2,
    pitches: Iterable[int] = range(36, 96),
    velocity_range: tuple[int, int] = (32, 96),
    chord_duration: float = 0.5,
    gap: float = 0.25,
    random_state: int | np.random.Generator | None = None,
    sample_rate: int = 16000,
) -> RenderedPiano:
    """Chords of random pitches and velocities (like MAPS RAND).

    Each chord has ``polyphony`` distinct pitches drawn uniformly from ``pitches``, each with
    its own velocity drawn uniformly from ``velocity_range`` (inclusive). Chords are struck
    together, last ``chord_duration`` and are preceded by ``gap`` seconds of silence.

    Parameters
    ----------
    soundfont : str or path
        A SoundFont name or a ``.sf2``/``.sf3`` path.
    n_chords : int, default 20
        At least 1.
    polyphony : int, default 2
        Notes per chord, 1 to ``len(pitches)``.
    pitches : iterable of int, default range(36, 96)
        The pitches to draw from.
    velocity_range : (int, int), default (32, 96)
        Lowest and highest MIDI velocity.
    chord_duration, gap : float, default 0.5, 0.25
        Seconds.
    random_state : int, numpy Generator or None
        Seed; the same seed gives the same chords (and, through the cache, the same audio).
    sample_rate : int, default 16000
        In Hz.

    Returns
    -------
    RenderedPiano

    Raises
    ------
    ValueError
        If ``polyphony`` exceeds the number of pitches, or a range is empty or out of bounds.

    Examples
    --------
    >>> chords = random_chords("timgm6mb", n_chords=2, polyphony=3, random_state=0)
    >>> len(chords.midi.instruments[0].notes)
    6
    """
    check_params(
        {"soundfont": _SOUNDFONT, "n_chords": [_POSITIVE_INT], "polyphony": [_POSITIVE_INT],
         "chord_duration": [_POSITIVE_SECONDS], "gap": [_SECONDS],
         "random_state": GENERATOR_SEED, "sample_rate": SYNTHESIS_SAMPLE_RATE},
        {"soundfont": soundfont, "n_chords": n_chords, "polyphony": polyphony,
         "chord_duration": chord_duration, "gap": gap, "random_state": random_state,
         "sample_rate": sample_rate},
        "random_chords",
    )
    name = os.fspath(soundfont)
    n_chords, polyphony = int(n_chords), int(polyphony)
    chord_duration, gap = float(chord_duration), float(gap)
    pitch_array = check_pitches(pitches)
    if polyphony > pitch_array.size:
        raise ValueError(
            f"polyphony must be at most the number of pitches ({pitch_array.size}); "
            f"got {polyphony}."
        )
    low, high = _check_velocity_range(velocity_range, "random_chords")
    rng = np.random.default_rng(random_state)
    pm, piano = _new_midi()
    start = gap
    chords = []
    for _ in range(n_chords):
        chord = np.sort(rng.choice(pitch_array, size=polyphony, replace=False))
        velocities = rng.integers(low, high + 1, size=polyphony)
        for pitch, velocity in zip(chord, velocities, strict=True):
            piano.notes.append(
                pretty_midi.Note(int(velocity), int(pitch), start, start + chord_duration)
            )
        chords.append(chord.tolist())
        start += chord_duration + gap
    params = {
        "kind": "random_chords",
        "n_chords": n_chords,
        "polyphony": polyphony,
        "pitches": pitch_array.tolist(),
        "velocity_range": [low, high],
        "chord_duration": chord_duration,
        "gap": gap,
        "random_state": random_state if isinstance(random_state, (int, np.integer)) else None,
        "chords": chords,
    }
    return _render(pm, name, sample_rate, params)


# Left-hand chord progressions as scale degrees (0 = I); the last bar is forced to I.
_PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 0, 4))
# Melody rhythms of one 4/4 bar, in beats.
_RHYTHMS = (
    (1, 1, 1, 1),
    (2, 1, 1),
    (1, 1, 2),
    (0.5, 0.5, 1, 1, 1),
    (1, 0.5, 0.5, 2),
    (1.5, 0.5, 1, 1),
    (2, 2),
    (0.5, 0.5, 0.5, 0.5, 1, 1),
)
# Melody steps along the scale and their probabilities: mostly stepwise, some leaps.
_STEPS = np.array([-3, -2, -1, 0, 1, 2, 3])
_STEP_PROBABILITIES = np.array([0.05, 0.15, 0.25, 0.1, 0.25, 0.15, 0.05])


def random_piece(
    soundfont: str | os.PathLike,
    n_bars: int = 4,
    tempo: float = 100,
    pitches: Iterable[int] = range(36, 96),
    velocity_range: tuple[int, int] = (32, 96),
    random_state: int | np.random.Generator | None = None,
    sample_rate: int = 16000,
) -> RenderedPiano:
    """A short algorithmic piano piece in 4/4 (a stand-in for MAPS MUS).

    A random major key; the right hand plays a random walk on its scale in the upper half of
    ``pitches`` with varied rhythms, the left hand one triad per bar from a common
    progression (ending on the tonic) in the lower half, as a block chord or an arpeggio
    of eighth notes. Velocities are drawn from ``velocity_range``, the melody in its upper
    half. Notes are released slightly before the next one so onsets stay distinct.

    Parameters
    ----------
    soundfont : str or path
        A SoundFont name or a ``.sf2``/``.sf3`` path.
    n_bars : int, default 4
        Number of bars, at least 1 (``n_bars * 240 / tempo`` seconds).
    tempo : float, default 100
        Quarter notes per minute, in [20, 400].
    pitches : iterable of int, default range(36, 96)
        Every note lies in this set; it must hold at least 7 scale notes below its middle
        and 5 at or above it in every key (two octaves of consecutive pitches suffice).
    velocity_range : (int, int), default (32, 96)
        Lowest and highest MIDI velocity.
    random_state : int, numpy Generator or None
        Seed.
    sample_rate : int, default 16000
        In Hz.

    Returns
    -------
    RenderedPiano

    Examples
    --------
    >>> piece = random_piece("timgm6mb", n_bars=1, tempo=120, random_state=0)
    >>> piece.params["n_bars"], bool(piece.midi.get_end_time() <= 2.0)
    (1, True)
    """
    check_params(
        {"soundfont": _SOUNDFONT, "n_bars": [_POSITIVE_INT],
         "tempo": [StrictInterval(Real, 20, 400, closed="both")],  # beats per minute
         "random_state": GENERATOR_SEED, "sample_rate": SYNTHESIS_SAMPLE_RATE},
        {"soundfont": soundfont, "n_bars": n_bars, "tempo": tempo,
         "random_state": random_state, "sample_rate": sample_rate},
        "random_piece",
    )
    name = os.fspath(soundfont)
    n_bars, tempo = int(n_bars), float(tempo)
    pitch_array = np.sort(check_pitches(pitches))
    low, high = _check_velocity_range(velocity_range, "random_piece")
    rng = np.random.default_rng(random_state)
    _check_piece_range(pitch_array)

    tonic = int(rng.integers(12))
    in_key = pitch_array[np.isin((pitch_array - tonic) % 12, _MAJOR_SCALE)]
    middle = (pitch_array[0] + pitch_array[-1]) / 2
    left_scale = in_key[in_key < middle]
    right_scale = in_key[in_key >= middle]
    beat = 60.0 / tempo
    mid_velocity = (low + high + 1) // 2
    pm, piano = _new_midi(tempo)

    def add(pitch: int, start_beat: float, n_beats: float, velocity: int) -> None:
        # Release a little early (at most 50 ms) so repeated pitches get a new onset.
        start = start_beat * beat
        end = start + n_beats * beat - min(0.05, 0.1 * n_beats * beat)
        piano.notes.append(pretty_midi.Note(int(velocity), int(pitch), start, end))

    # Right hand: start near the middle of the upper register.
    position = int(rng.integers(len(right_scale) // 4, 3 * len(right_scale) // 4 + 1))
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    for bar in range(n_bars):
        bar_start = 4.0 * bar
        rhythm = _RHYTHMS[int(rng.integers(len(_RHYTHMS)))]
        offset = 0.0
        for n_beats in rhythm:
            step = int(rng.choice(_STEPS, p=_STEP_PROBABILITIES))
            position = int(np.clip(position + step, 0, len(right_scale) - 1))
            velocity = rng.integers(mid_velocity, high + 1)
            add(right_scale[position], bar_start + offset, n_beats, velocity)
            offset += n_beats
        # Left hand: the bar's triad, degree -> root, third, fifth on the scale.
        degree = 0 if bar == n_bars - 1 else progression[bar % len(progression)]
        triad = _triad(left_scale, tonic, degree)
        velocity = int(rng.integers(low, mid_velocity + 1))
        if rng.random() < 0.5:
            for pitch in triad:
                add(pitch, bar_start, 4.0, velocity)
        else:
            for eighth, index in enumerate((0, 1, 2, 1, 0, 1, 2, 1)):
                add(triad[index], bar_start + 0.5 * eighth, 0.5, velocity)
    params = {
        "kind": "random_piece",
        "n_bars": n_bars,
        "tempo": tempo,
        "pitches": pitch_array.tolist(),
        "velocity_range": [low, high],
        "random_state": random_state if isinstance(random_state, (int, np.integer)) else None,
        "tonic": tonic,
    }
    return _render(pm, name, sample_rate, params)


def _check_piece_range(pitches: np.ndarray) -> None:
    """Refuse pitch sets too small for both hands in some key."""
    middle = (pitches[0] + pitches[-1]) / 2
    for tonic in range(12):
        in_key = pitches[np.isin((pitches - tonic) % 12, _MAJOR_SCALE)]
        n_left, n_right = int((in_key < middle).sum()), int((in_key >= middle).sum())
        if n_left < 7 or n_right < 5:
            raise ValueError(
                "pitches must hold, in every major key, at least 7 scale notes below their "
                "middle (left hand) and 5 above (right hand), e.g. two octaves of consecutive "
                f"pitches; got {pitches.size} pitches from {pitches[0]} to {pitches[-1]}."
            )


def _triad(scale: np.ndarray, tonic: int, degree: int) -> list[int]:
    """Root-position triad on ``degree`` in the lowest-but-centred octave of ``scale``."""
    root_class = (tonic + _MAJOR_SCALE[degree]) % 12
    roots = [i for i in range(len(scale) - 4) if scale[i] % 12 == root_class]
    if not roots:
        # Fewer than an octave and a fifth: fall back to the lowest triad that fits.
        roots = [0]
    index = roots[len(roots) // 2]
    return [int(scale[index]), int(scale[index + 2]), int(scale[index + 4])]


def render_piano_midi(
    midi_or_path: pretty_midi.PrettyMIDI | str | os.PathLike,
    soundfont: str | os.PathLike,
    sample_rate: int = 16000,
) -> RenderedPiano:
    """Render any MIDI file (all its instruments, with their own programs).

    Parameters
    ----------
    midi_or_path : pretty_midi.PrettyMIDI or path
        The MIDI.
    soundfont : str or path
        A SoundFont name or a ``.sf2``/``.sf3`` path.
    sample_rate : int, default 16000
        In Hz.

    Returns
    -------
    RenderedPiano
    """
    check_params({"soundfont": _SOUNDFONT, "sample_rate": SYNTHESIS_SAMPLE_RATE},
                 {"soundfont": soundfont, "sample_rate": sample_rate}, "render_piano_midi")
    name = os.fspath(soundfont)
    source = (
        os.fspath(midi_or_path) if isinstance(midi_or_path, (str, os.PathLike)) else None
    )
    pm = load_midi(midi_or_path, "midi_or_path")
    return _render(pm, name, sample_rate, {"kind": "midi", "source": source})


def labelled_frames(
    features: Any, roll: Any, pitches: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Frames in which exactly one pitch sounds, with that pitch as label.

    Use it to train dictionaries on isolated notes: ``fit(X, y)``.

    Parameters
    ----------
    features : array-like of shape (n_frames, n_bins)
        A spectrogram-like array on the roll's frame grid.
    roll : array-like of bool, shape (n_frames, n_pitches)
        The piano roll.
    pitches : iterable of int
        MIDI numbers of the roll's columns.

    Returns
    -------
    X : ndarray of shape (n_selected, n_bins)
        The selected rows of ``features``, in time order.
    y : ndarray of int64, shape (n_selected,)
        Their MIDI pitches.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=bool)
    >>> X, y = labelled_frames(np.arange(8.0).reshape(4, 2), roll, [60, 64])
    >>> X.tolist(), y.tolist()
    ([[0.0, 1.0], [6.0, 7.0]], [60, 64])
    """
    values = np.asarray(features)
    if values.ndim != 2:
        raise ValueError(
            f"features must be 2-d (n_frames, n_bins); got shape {values.shape}."
        )
    pitch_array = check_pitches(pitches)
    active = check_roll(roll, values.shape[0], pitch_array.size)
    single = active.sum(axis=1) == 1
    y = pitch_array[np.argmax(active[single], axis=1)]
    return values[single], y
