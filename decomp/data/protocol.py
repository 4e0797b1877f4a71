"""The default piano experiment protocol shared by every benchmark.

Dictionaries are trained on isolated notes rendered with two SoundFonts and tested on
chords and pieces rendered with a third, so every reported figure is under a timbre shift
(as in the DDS paper, which trains and tests on different MAPS pianos).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

from decomp._validation import StrictInterval, check_params
from decomp.audio.pianoroll import check_pitches
from decomp.data.piano import (
    RenderedPiano,
    _check_velocity_range,
    isolated_notes,
    random_chords,
    random_piece,
)
from decomp.data.render import SYNTHESIS_SAMPLE_RATE

__all__ = ["PianoProtocol", "DEFAULT_PROTOCOL"]


@dataclass(frozen=True)
class PianoProtocol:
    """Which fonts, pitches and velocities the piano experiments use.

    Attributes
    ----------
    train_soundfonts : tuple of str, default ("fluidr3", "timgm6mb")
        Fonts for the isolated training notes.
    test_soundfont : str, default "musescore-lite"
        Font for the test chords and pieces; not among the training fonts.
    pitches : tuple of int, default tuple(range(36, 96))
        The 60 MIDI pitches C2..B6 that are trained and tested.
    velocity_range : (int, int), default (32, 96)
        Test velocities are drawn from this range (inclusive).
    train_velocities : tuple of int, default (40, 64, 96)
        Velocities of the isolated training notes, inside ``velocity_range``.
    sample_rate : int, default 16000
        In Hz.

    Examples
    --------
    >>> DEFAULT_PROTOCOL.test_soundfont, len(DEFAULT_PROTOCOL.pitches)
    ('musescore-lite', 60)
    """

    train_soundfonts: tuple[str, ...] = ("fluidr3", "timgm6mb")
    test_soundfont: str = "musescore-lite"
    pitches: tuple[int, ...] = tuple(range(36, 96))
    velocity_range: tuple[int, int] = (32, 96)
    train_velocities: tuple[int, ...] = (40, 64, 96)
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ so lists passed in become tuples.
        fonts = self.train_soundfonts
        if isinstance(fonts, str) or not fonts:
            raise ValueError(
                "train_soundfonts must be a non-empty tuple of SoundFont names or paths; "
                f"got {fonts!r}."
            )
        object.__setattr__(self, "train_soundfonts", tuple(str(font) for font in fonts))
        if self.test_soundfont in self.train_soundfonts:
            raise ValueError(
                f"test_soundfont must differ from the training fonts {self.train_soundfonts}; "
                f"got {self.test_soundfont!r}."
            )
        object.__setattr__(self, "pitches", tuple(check_pitches(self.pitches).tolist()))
        low, high = _check_velocity_range(self.velocity_range, "PianoProtocol")
        object.__setattr__(self, "velocity_range", (low, high))
        check_params({"sample_rate": SYNTHESIS_SAMPLE_RATE}, {"sample_rate": self.sample_rate},
                     "PianoProtocol")
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        velocities = tuple(self.train_velocities)
        velocity = StrictInterval(Integral, 1, 127, closed="both")  # a MIDI velocity
        check_params(
            {f"train_velocities[{index}]": [velocity] for index in range(len(velocities))},
            {f"train_velocities[{index}]": value for index, value in enumerate(velocities)},
            "PianoProtocol",
        )
        velocities = tuple(int(velocity) for velocity in velocities)
        if not velocities or min(velocities) < low or max(velocities) > high:
            raise ValueError(
                f"train_velocities must be non-empty and lie in velocity_range {(low, high)}; "
                f"got {velocities}."
            )
        object.__setattr__(self, "train_velocities", velocities)

    def training_notes(self) -> list[RenderedPiano]:
        """Isolated notes, one rendering per training font (in ``train_soundfonts`` order)."""
        return [
            isolated_notes(
                font,
                pitches=self.pitches,
                velocities=self.train_velocities,
                sample_rate=self.sample_rate,
            )
            for font in self.train_soundfonts
        ]

    def test_chords(
        self,
        polyphony: int = 2,
        n_chords: int = 20,
        random_state: int | np.random.Generator | None = 0,
    ) -> RenderedPiano:
        """Random chords with the test font; see :func:`decomp.data.piano.random_chords`."""
        return random_chords(
            self.test_soundfont,
            n_chords=n_chords,
            polyphony=polyphony,
            pitches=self.pitches,
            velocity_range=self.velocity_range,
            random_state=random_state,
            sample_rate=self.sample_rate,
        )

    def test_piece(
        self, random_state: int | np.random.Generator | None = 0, n_bars: int = 4
    ) -> RenderedPiano:
        """A short piece with the test font; see :func:`decomp.data.piano.random_piece`."""
        return random_piece(
            self.test_soundfont,
            n_bars=n_bars,
            pitches=self.pitches,
            velocity_range=self.velocity_range,
            random_state=random_state,
            sample_rate=self.sample_rate,
        )


DEFAULT_PROTOCOL = PianoProtocol()
"""The protocol every benchmark uses unless told otherwise."""
