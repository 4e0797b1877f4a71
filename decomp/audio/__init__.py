"""Audio front end: file input/output, spectrograms, piano rolls, timbre augmentation of frames.

Everything here is time-major: a waveform is ``(n_samples,)``, a spectrogram
``(n_frames, n_bins)``; :func:`to_librosa` / :func:`from_librosa` convert to and from
librosa's ``(n_bins, n_frames)``.
"""

from decomp.audio.io import (
    MIN_SAMPLE_RATE,
    SILENCE_FLOOR_DBFS,
    AudioFileError,
    AudioStream,
    audio_level,
    check_level,
    load_audio,
    write_audio,
)
from decomp.audio.pianoroll import midi_to_roll, roll_to_midi, roll_to_notes
from decomp.audio.spectrogram import Spectrogram, frame_times, from_librosa, to_librosa
from decomp.audio.timbre import equaliser_gains, partial_gains, timbre_copies

__all__ = [
    "MIN_SAMPLE_RATE",
    "SILENCE_FLOOR_DBFS",
    "AudioFileError",
    "AudioStream",
    "Spectrogram",
    "audio_level",
    "check_level",
    "equaliser_gains",
    "frame_times",
    "from_librosa",
    "load_audio",
    "midi_to_roll",
    "partial_gains",
    "roll_to_midi",
    "roll_to_notes",
    "timbre_copies",
    "to_librosa",
    "write_audio",
]
