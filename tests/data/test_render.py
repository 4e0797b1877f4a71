"""Tests for decomp.data.render (they run FluidSynth on a few notes)."""

from __future__ import annotations

import sys

import numpy as np
import pretty_midi
import pytest

from decomp.data import render
from decomp.data.render import DEFAULT_RELEASE_TAIL, render_midi, run_writing_wav
from decomp.exceptions import MissingDependencyError

from .conftest import requires_fluidsynth, requires_font

pytestmark = [pytest.mark.slow, requires_fluidsynth, requires_font("timgm6mb")]


def _midi(notes, program=0):
    """PrettyMIDI with one instrument holding (pitch, velocity, start, end) notes."""
    pm = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    for pitch, velocity, start, end in notes:
        instrument.notes.append(pretty_midi.Note(velocity, pitch, start, end))
    pm.instruments.append(instrument)
    return pm


@pytest.fixture
def spy(monkeypatch):
    """Count calls to the FluidSynth runner."""
    calls = []
    original = render._run_fluidsynth

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(render, "_run_fluidsynth", counting)
    return calls


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_shape_dtype_length_and_alignment(sample_rate):
    pm = _midi([(69, 90, 0.5, 1.0)])
    audio = render_midi(pm, "timgm6mb", sample_rate)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == round((1.0 + DEFAULT_RELEASE_TAIL) * sample_rate)
    # Nothing before the note-on, sound within 20 ms after it.
    assert np.abs(audio[: int(0.5 * sample_rate)]).max() < 1e-4
    assert np.abs(audio[int(0.5 * sample_rate) : int(0.52 * sample_rate)]).max() > 1e-3


def test_release_tail_sets_length():
    pm = _midi([(60, 90, 0.0, 0.3)])
    assert render_midi(pm, "timgm6mb", release_tail=0.0).shape == (int(0.3 * 16000),)
    assert render_midi(pm, "timgm6mb", release_tail=1.2).shape == (int(1.5 * 16000),)


def test_path_input_matches_object(tmp_path):
    pm = _midi([(64, 80, 0.1, 0.4), (67, 80, 0.2, 0.4)])
    path = tmp_path / "in.mid"
    pm.write(str(path))
    np.testing.assert_array_equal(render_midi(path, "timgm6mb"), render_midi(pm, "timgm6mb"))


def test_cache_hit_skips_fluidsynth(spy, fresh_cache_dir):
    pm = _midi([(62, 70, 0.0, 0.4)])
    first = render_midi(pm, "timgm6mb")
    assert len(spy) == 1
    entries = sorted(p.suffix for p in fresh_cache_dir.iterdir())
    assert entries == [".mid", ".npz"]
    second = render_midi(pm, "timgm6mb")
    assert len(spy) == 1
    np.testing.assert_array_equal(first, second)
    # Other parameters are other entries.
    render_midi(pm, "timgm6mb", gain=0.25)
    render_midi(pm, "timgm6mb", sample_rate=8000)
    assert len(spy) == 3
    render_midi(pm, "timgm6mb", cache=False)
    assert len(spy) == 4


def test_cache_hit_needs_no_fluidsynth(fresh_cache_dir, monkeypatch, tmp_path):
    pm = _midi([(62, 70, 0.0, 0.4)])
    first = render_midi(pm, "timgm6mb")
    monkeypatch.setenv("PATH", str(tmp_path))
    np.testing.assert_array_equal(render_midi(pm, "timgm6mb"), first)


def test_corrupt_cache_entry_is_rerendered(spy, fresh_cache_dir):
    pm = _midi([(65, 70, 0.0, 0.4)])
    first = render_midi(pm, "timgm6mb")
    (entry,) = fresh_cache_dir.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    second = render_midi(pm, "timgm6mb")
    assert len(spy) == 2
    np.testing.assert_array_equal(first, second)
    assert render_midi(pm, "timgm6mb") is not None and len(spy) == 2


def test_cache_key_includes_the_midi(fresh_cache_dir):
    one, two = _midi([(60, 70, 0.0, 0.4)]), _midi([(61, 70, 0.0, 0.4)])
    render_midi(one, "timgm6mb")
    render_midi(two, "timgm6mb")
    assert len(list(fresh_cache_dir.glob("*.npz"))) == 2


def test_missing_fluidsynth_names_the_package(fresh_cache_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependencyError, match="apt-get install fluidsynth"):
        render_midi(_midi([(60, 70, 0.0, 0.2)]), "timgm6mb")
    assert not list(fresh_cache_dir.glob("*.npz"))


@pytest.mark.parametrize(
    "font",
    [pytest.param(f, marks=requires_font(f)) for f in ("fluidr3", "timgm6mb", "musescore-lite")],
)
def test_level_of_loud_chord_leaves_headroom(font):
    chord = [(p, 96, 0.0, 1.0) for p in (48, 55, 60, 64, 67)]
    audio = render_midi(_midi(chord), font)
    peak = np.abs(audio).max()
    assert 0.05 < peak < 0.5, peak


def test_silent_render_warns():
    with pytest.warns(RuntimeWarning, match="silent"):
        render_midi(_midi([(60, 64, 0.0, 0.3)]), "timgm6mb", gain=1e-7)


def test_clipping_render_warns():
    chord = [(p, 127, 0.0, 0.5) for p in (36, 43, 48, 52, 55, 60, 64)]
    with pytest.warns(RuntimeWarning, match="clip"):
        render_midi(_midi(chord), "timgm6mb", gain=10.0)


def test_empty_midi_renders_the_tail_silently():
    audio = render_midi(pretty_midi.PrettyMIDI(), "timgm6mb")
    assert audio.shape == (int(DEFAULT_RELEASE_TAIL * 16000),)
    assert not audio.any()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sample_rate": 4000}, ValueError,
         r"'sample_rate' parameter of render_midi must be an int in the range \[8000, 96000\]. "
         r"Got 4000 instead"),
        ({"sample_rate": 16000.0}, TypeError, "'sample_rate' parameter .* Got 16000.0"),
        ({"gain": 0}, ValueError, r"'gain' parameter .* a float in the range \(0.0, 10.0\]. Got 0"),
        ({"gain": 11}, ValueError, r"'gain' parameter .* Got 11"),
        ({"gain": "loud"}, TypeError, "'gain' parameter .* Got 'loud'"),
        ({"release_tail": -1}, ValueError,
         r"'release_tail' parameter .* a float in the range \[0.0, 60.0\]. Got -1"),
        ({"soundfont": "steinway"}, ValueError, "soundfont must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    arguments = {"midi": _midi([(60, 64, 0.0, 0.2)]), "soundfont": "timgm6mb", **kwargs}
    with pytest.raises(error, match=message):
        render_midi(**arguments)


def test_bad_midi(tmp_path):
    with pytest.raises(TypeError, match="midi must be a pretty_midi.PrettyMIDI or a path"):
        render_midi(b"MThd", "timgm6mb")
    with pytest.raises(FileNotFoundError, match="no MIDI file at"):
        render_midi(tmp_path / "absent.mid", "timgm6mb")


def test_run_writing_wav_reports_a_failing_program(tmp_path):
    wav_path = tmp_path / "out.wav"
    command = [sys.executable, "-c", "import sys; sys.stderr.write('no voice'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"tool failed \(exit status 3\) with x: no voice"):
        run_writing_wav(command, wav_path, "tool", "with x")
    # Exit status 0 but no file written is a failure too.
    with pytest.raises(RuntimeError, match=r"tool failed \(exit status 0\) with x"):
        run_writing_wav([sys.executable, "-c", "pass"], wav_path, "tool", "with x")


def test_run_writing_wav_reads_what_the_program_wrote(tmp_path):
    wav_path = tmp_path / "out.wav"
    script = ("import numpy, soundfile, sys; "
              "soundfile.write(sys.argv[1], numpy.zeros((8, 2)), 16000, subtype='FLOAT')")
    audio, rate = run_writing_wav([sys.executable, "-c", script, str(wav_path)], wav_path,
                                  "tool", "writing")
    assert audio.shape == (8, 2) and audio.dtype == np.float32 and rate == 16000


def test_run_writing_wav_stops_a_runaway_program(tmp_path):
    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(RuntimeError, match=r"tool did not finish within 1 s with x"):
        run_writing_wav(command, tmp_path / "out.wav", "tool", "with x", timeout=1.0)


def test_a_note_shorter_than_a_tick_is_left_out():
    # A zero-length clarinet note at the end: pretty_midi writes its note-off first, and
    # FluidSynth used to render the never-released note until the disk was full.
    notes = [(60, 80, 0.1, 0.5), (62, 80, 0.999999, 1.0)]
    audio = render_midi(_midi(notes, program=71), "timgm6mb", 8000, cache=False)
    reference = render_midi(_midi(notes[:1], program=71), "timgm6mb", 8000, cache=False)
    assert audio.shape == reference.shape == (int(round((0.5 + DEFAULT_RELEASE_TAIL) * 8000)),)
    np.testing.assert_allclose(audio, reference, atol=1e-6)
