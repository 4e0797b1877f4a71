"""Tests for decomp.transcription.plotting."""

from __future__ import annotations

import numpy as np
import pretty_midi

from decomp.transcription.piano import Transcription
from decomp.transcription.plotting import plot_transcription


def _transcription() -> Transcription:
    roll = np.zeros((20, 3), dtype=bool)
    roll[5:15, 1] = True
    return Transcription(times=np.arange(20) * 0.02, pitches=np.array([60, 61, 62]),
                         activations=roll.astype(float), roll=roll, midi=pretty_midi.PrettyMIDI())


def test_the_format_follows_the_suffix_and_no_temporary_remains(tmp_path):
    # The atomic writer's temporary ends in ".part": the format must come from the target.
    png = plot_transcription(_transcription(), tmp_path / "out" / "roll.png")
    svg = plot_transcription(_transcription(), tmp_path / "out" / "roll.svg", title="t")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in svg.read_bytes()[:1000]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["roll.png", "roll.svg"]
