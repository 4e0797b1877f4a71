"""Render MIDI to audio with the FluidSynth command-line synthesizer.

Reverb and chorus are switched off, so the audio holds only what the MIDI notes say (plus
each note's release), and labels computed from the MIDI match the audio. Renders are cached
on disk (:mod:`decomp.data.cache`), keyed by the MIDI bytes and the rendering parameters.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

from decomp._files import write_atomically
from decomp._validation import StrictInterval, check_params
from decomp.audio.pianoroll import load_midi
from decomp.data.cache import cached_arrays
from decomp.data.soundfonts import resolve_soundfont
from decomp.exceptions import MissingDependencyError

__all__ = ["render_midi", "midi_to_bytes", "DEFAULT_GAIN", "DEFAULT_RELEASE_TAIL"]

DEFAULT_GAIN = 0.5
"""FluidSynth master gain. Measured at 16 kHz with reverb and chorus off, over the three Debian
fonts: 5-note chords at velocity 96 peak at 0.20-0.24 (mono), at velocity 127 at 0.31-0.41
(mono) and up to 0.52 in one stereo channel; isolated notes peak below 0.1.
"""

DEFAULT_RELEASE_TAIL = 0.5
"""Seconds of audio kept after the MIDI's last note-off, long enough for the piano fonts' release
envelopes to fall by about 40 dB.
"""

SYNTHESIS_SAMPLE_RATE: list = [StrictInterval(Integral, 8000, 96000, closed="both")]
"""Constraint list of a synthesis ``sample_rate`` (Hz): FluidSynth's synth.sample-rate range."""

# Below this peak the render is treated as silent (about -80 dBFS).
_SILENCE_PEAK = 1e-4


def midi_to_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    """The standard-MIDI-file bytes that ``midi.write`` produces."""
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def _without_empty_notes(midi: pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    """``midi`` without notes that start and end on the same tick (a copy if any are)."""

    def empty(note: pretty_midi.Note) -> bool:
        return midi.time_to_tick(note.end) <= midi.time_to_tick(note.start)

    if not any(empty(note) for instrument in midi.instruments for note in instrument.notes):
        return midi
    midi = copy.deepcopy(midi)
    for instrument in midi.instruments:
        instrument.notes = [note for note in instrument.notes if not empty(note)]
    return midi


def _fluidsynth_binary() -> str:
    binary = shutil.which("fluidsynth")
    if binary is None:
        raise MissingDependencyError(
            "The 'fluidsynth' program was not found on PATH; decomp renders piano data with it. "
            "Install it with `apt-get install fluidsynth`."
        )
    return binary


def run_writing_wav(
    command: list[str], wav_path: Path, program: str, context: str, *, dtype: str = "float32",
    timeout: float = 300.0,
) -> tuple[np.ndarray, int]:
    """Run an external program that writes ``wav_path`` and read what it wrote.

    Shared by the FluidSynth and espeak-ng renderers.

    Parameters
    ----------
    command : list of str
        The program and its arguments.
    wav_path : Path
        The file the program is expected to write.
    program : str
        Its name, for the error message.
    context : str
        What it was doing, for the error message (e.g. "rendering with FluidR3_GM.sf2").
    dtype : str, default="float32"
        Sample type read back.
    timeout : float, default=300.0
        Seconds after which the program is stopped (a runaway render fills the disk).

    Returns
    -------
    audio : ndarray of shape (n_samples, n_channels)
    sample_rate : int
        The file's rate in Hz.

    Raises
    ------
    RuntimeError
        If the program exits with an error, writes no file or runs past ``timeout``; the
        message quotes its output.
    """
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"{program} did not finish within {timeout:.0f} s {context}; it was stopped."
        ) from None
    if result.returncode != 0 or not wav_path.is_file():
        raise RuntimeError(
            f"{program} failed (exit status {result.returncode}) {context}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    audio, rate = soundfile.read(wav_path, dtype=dtype, always_2d=True)
    return audio, int(rate)


def _run_fluidsynth(
    midi_bytes: bytes, soundfont: Path, sample_rate: int, gain: float, seconds: float
) -> np.ndarray:
    """Render with the FluidSynth CLI in a temporary directory; returns (n_samples, 2) float32."""
    binary = _fluidsynth_binary()
    with tempfile.TemporaryDirectory(prefix="decomp-render-") as tmp:
        midi_path = Path(tmp) / "in.mid"
        wav_path = Path(tmp) / "out.wav"
        write_atomically(midi_path, lambda file: file.write(midi_bytes))
        command = [
            binary,
            "-n",  # no MIDI input driver
            "-i",  # no interactive shell
            "-q",
            "-R", "0",  # reverb off
            "-C", "0",  # chorus off
            # Load only the samples the MIDI plays: same audio, half the time for sf3 fonts.
            "-o", "synth.dynamic-sample-loading=1",
            "-g", repr(float(gain)),
            "-r", str(int(sample_rate)),
            "-T", "wav",
            "-O", "float",  # 32-bit float samples: no clipping or quantisation in the file
            "-F", str(wav_path),
            str(soundfont),
            str(midi_path),
        ]  # fmt: skip
        # FluidSynth renders far faster than real time; a render that takes longer than
        # the music itself has run away (e.g. a note that is never released).
        audio, rate = run_writing_wav(command, wav_path, "fluidsynth",
                                      f"rendering with {soundfont}", timeout=30.0 + seconds)
    if rate != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz audio; {sample_rate} Hz was asked for.")
    return audio


_RENDER_CONSTRAINTS: dict[str, list] = {
    "soundfont": [str, os.PathLike],
    "sample_rate": SYNTHESIS_SAMPLE_RATE,
    "gain": [StrictInterval(Real, 0, 10, closed="right")],
    "release_tail": [StrictInterval(Real, 0, 60, closed="both")],
    "cache": ["boolean"],
}


def render_midi(
    midi: pretty_midi.PrettyMIDI | str | os.PathLike,
    soundfont: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    gain: float = DEFAULT_GAIN,
    release_tail: float = DEFAULT_RELEASE_TAIL,
    cache: bool = True,
) -> np.ndarray:
    """Synthesize a MIDI file with FluidSynth.

    Parameters
    ----------
    midi : pretty_midi.PrettyMIDI or path
        What to play. A ``PrettyMIDI`` is written to a standard MIDI file first (note times
        are then quantised to its ticks; read it back with :func:`midi_to_bytes` and
        ``pretty_midi.PrettyMIDI(io.BytesIO(...))`` for labels that match exactly). Notes
        shorter than one tick are left out: pretty_midi writes their note-off before
        their note-on, which would leave the note sounding, and a sustaining instrument
        would keep FluidSynth rendering forever.
    soundfont : str or path
        A name from :data:`decomp.data.soundfonts.SOUNDFONTS` or a ``.sf2``/``.sf3`` path.
    sample_rate : int, default 16000
        Output rate in Hz, 8000 to 96000.
    gain : float, default DEFAULT_GAIN
        FluidSynth master gain, in (0, 10].
    release_tail : float, default DEFAULT_RELEASE_TAIL
        Seconds kept after the MIDI's end time (its last note-off) for note releases.
    cache : bool, default True
        Reuse and store renders in :func:`decomp.data.cache.cache_dir`.

    Returns
    -------
    audio : ndarray of float32, shape (n_samples,)
        Mono (the mean of FluidSynth's two channels), with
        ``n_samples = round((midi.get_end_time() + release_tail) * sample_rate)``:
        FluidSynth's output is cut or zero-padded to that length. Sample 0 is MIDI time 0.

    Raises
    ------
    MissingDependencyError
        If the ``fluidsynth`` program or a known SoundFont is not installed.
    TypeError, ValueError
        If an argument has the wrong type or value.
    RuntimeError
        If FluidSynth fails.

    Warns
    -----
    RuntimeWarning
        If the MIDI has notes but the render is silent (peak below 1e-4), or if the peak
        reaches 1.0 (it would clip once written as integer PCM; lower ``gain``).

    Examples
    --------
    >>> import pretty_midi
    >>> pm = pretty_midi.PrettyMIDI()
    >>> piano = pretty_midi.Instrument(program=0)
    >>> piano.notes.append(pretty_midi.Note(velocity=80, pitch=69, start=0.0, end=0.5))
    >>> pm.instruments.append(piano)
    >>> render_midi(pm, "timgm6mb").shape
    (16000,)
    """
    check_params(_RENDER_CONSTRAINTS, {"soundfont": soundfont, "sample_rate": sample_rate,
                                       "gain": gain, "release_tail": release_tail,
                                       "cache": cache}, "render_midi")
    pm = load_midi(midi)
    font_path = resolve_soundfont(soundfont)
    sample_rate, gain, release_tail = int(sample_rate), float(gain), float(release_tail)
    midi_bytes = midi_to_bytes(_without_empty_notes(pm))
    # The length comes from the MIDI as FluidSynth will read it (tick-quantised).
    end_time = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes)).get_end_time()
    n_samples = int(round((end_time + release_tail) * sample_rate))

    def compute() -> dict[str, np.ndarray]:
        stereo = _run_fluidsynth(midi_bytes, font_path, sample_rate, gain, end_time)
        mono = stereo.mean(axis=1, dtype=np.float64).astype(np.float32)
        audio = np.zeros(n_samples, dtype=np.float32)
        audio[: min(n_samples, mono.size)] = mono[:n_samples]
        return {"audio": audio}

    params = {
        "kind": "render_midi",
        "midi_sha256": hashlib.sha256(midi_bytes).hexdigest(),
        "sample_rate": sample_rate,
        "gain": gain,
        "release_tail": release_tail,
    }
    if cache:
        audio = cached_arrays(params, compute, soundfont=font_path, midi_bytes=midi_bytes)["audio"]
    else:
        audio = compute()["audio"]
    _check_level(audio, pm, gain)
    return audio


def _check_level(audio: np.ndarray, midi: pretty_midi.PrettyMIDI, gain: float) -> None:
    """Warn about a silent or clipping render; both mean the labels will not match the audio."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    has_notes = any(instrument.notes for instrument in midi.instruments)
    if has_notes and peak < _SILENCE_PEAK:
        warnings.warn(
            f"The render is silent (peak {peak:.2g}) although the MIDI has notes; check the "
            f"SoundFont has the MIDI's programs, and the gain ({gain:g}).",
            RuntimeWarning,
            stacklevel=3,
        )
    elif peak >= 1.0:
        warnings.warn(
            f"The render peaks at {peak:.3f} (>= 1.0) and would clip as integer PCM; lower "
            f"gain (now {gain:g}).",
            RuntimeWarning,
            stacklevel=3,
        )
