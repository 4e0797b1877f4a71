"""Data sets rendered from MIDI (isolated piano notes, random chords, short pieces, instrument
mixtures) and two-speaker speech mixtures synthesised with espeak-ng; stem banks and
endless dynamically mixed training streams.

Nothing is downloaded: MIDI is generated here and rendered with FluidSynth and the
General-MIDI SoundFonts that Debian packages install; renders are cached on disk.
"""

from decomp.data.cache import cache_dir, cache_key
from decomp.data.mixtures import (
    DEFAULT_INSTRUMENTS,
    INSTRUMENTS,
    MAX_SOURCES,
    PEAK_CEILING,
    SPEECH_VOICES,
    GMInstrument,
    MixtureSet,
    instrument_mixtures,
    speech_mixtures,
)
from decomp.data.piano import (
    RenderedPiano,
    isolated_notes,
    labelled_frames,
    random_chords,
    random_piece,
    render_piano_midi,
)
from decomp.data.protocol import DEFAULT_PROTOCOL, PianoProtocol
from decomp.data.render import render_midi
from decomp.data.soundfonts import SOUNDFONTS, available_soundfonts, resolve_soundfont
from decomp.data.stems import (
    TRAINING_SOUNDFONTS,
    Augmentation,
    MixtureExample,
    MixtureStream,
    StemBank,
    instrument_stems,
    speech_stems,
)

__all__ = [
    "DEFAULT_INSTRUMENTS",
    "GMInstrument",
    "INSTRUMENTS",
    "MAX_SOURCES",
    "MixtureSet",
    "PEAK_CEILING",
    "SPEECH_VOICES",
    "instrument_mixtures",
    "speech_mixtures",
    "DEFAULT_PROTOCOL",
    "PianoProtocol",
    "RenderedPiano",
    "SOUNDFONTS",
    "available_soundfonts",
    "cache_dir",
    "cache_key",
    "isolated_notes",
    "labelled_frames",
    "random_chords",
    "random_piece",
    "render_midi",
    "render_piano_midi",
    "resolve_soundfont",
    "TRAINING_SOUNDFONTS",
    "Augmentation",
    "MixtureExample",
    "MixtureStream",
    "StemBank",
    "instrument_stems",
    "speech_stems",
]
