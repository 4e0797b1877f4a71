"""Tests for decomp.data.piano and decomp.data.protocol (small renders, mostly TimGM6mb)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pretty_midi
import pytest
from scipy.signal import find_peaks

from decomp.data import (
    DEFAULT_PROTOCOL,
    PianoProtocol,
    RenderedPiano,
    isolated_notes,
    labelled_frames,
    random_chords,
    random_piece,
    render_piano_midi,
)

from .conftest import render_in, requires_fluidsynth, requires_font

RENDER_MARKS = [pytest.mark.slow, requires_fluidsynth, requires_font("timgm6mb")]


def rendering(test):
    """Mark a test that renders with FluidSynth and TimGM6mb."""
    for mark in RENDER_MARKS:
        test = mark(test)
    return test

HOP = 160  # 10 ms frames at 16 kHz
SMALL_PITCHES = [48, 60, 69, 81]


@pytest.fixture(scope="session")
def small_isolated(session_cache_dir):
    return render_in(
        session_cache_dir, isolated_notes, "timgm6mb", pitches=[60, 69], velocities=[40, 96]
    )


def _frame_rms(audio: np.ndarray, hop: int = HOP) -> np.ndarray:
    """RMS of non-overlapping hop-long blocks centred on the frame times (n_frames,)."""
    n_frames = 1 + audio.size // hop
    padded = np.pad(audio, (hop // 2, hop))
    blocks = padded[: n_frames * hop].reshape(n_frames, hop)
    return np.sqrt(np.mean(blocks.astype(np.float64) ** 2, axis=1))


def _lowest_strong_peak(segment: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the lowest spectral peak above 30% of the highest.

    The lowest strong peak, not the highest, because some samples' octave partial is
    stronger than their fundamental.
    """
    n_fft = 8 * segment.size
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(segment.size), n_fft))
    frequencies = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    peaks, _ = find_peaks(spectrum, height=0.3 * spectrum.max())
    peaks = peaks[frequencies[peaks] > 20]
    return float(frequencies[peaks[0]])


# ------------------------------------------------------------------------ isolated notes


@rendering
def test_isolated_notes_layout(small_isolated):
    notes = small_isolated.midi.instruments[0].notes
    assert [(n.pitch, n.velocity) for n in notes] == [(60, 40), (60, 96), (69, 40), (69, 96)]
    starts = [n.start for n in notes]
    np.testing.assert_allclose(starts, [0.25, 1.0, 1.75, 2.5], atol=1e-3)
    np.testing.assert_allclose([n.end - n.start for n in notes], 0.5, atol=1e-3)
    assert small_isolated.duration == pytest.approx(4 * 0.75 + 0.5)
    assert small_isolated.sample_rate == 16000 and small_isolated.soundfont == "timgm6mb"
    assert small_isolated.params["velocities"] == [40, 96]


@rendering
def test_audio_is_loud_where_the_roll_is_on_and_quiet_in_gaps(small_isolated):
    times = small_isolated.frame_times(HOP)
    roll = small_isolated.roll(times, pitches=[60, 69])
    assert roll.shape == (times.size, 2)
    rms = _frame_rms(small_isolated.audio)
    on = roll.any(axis=1)
    assert on.sum() == 4 * 50
    assert np.max(rms[times < 0.25 - HOP / 16000]) < 1e-6  # before the first note
    notes = small_isolated.midi.instruments[0].notes
    for note, following in zip(notes, [*notes[1:], None], strict=True):
        note_frames = (times >= note.start + 0.01) & (times < note.end)
        assert roll[note_frames].sum() == note_frames.sum()  # the roll says "on"
        level = np.median(rms[note_frames])
        assert level > 5e-4
        # Audible through its whole length (after a 10 ms attack).
        assert np.min(rms[note_frames]) > 0.1 * level
        # In the gap, once the release has faded (200 ms), at least 20 dB quieter.
        next_start = following.start if following else small_isolated.duration
        gap_frames = (times >= note.end + 0.2) & (times < next_start - HOP / 16000)
        assert gap_frames.sum() >= 3 and not roll[gap_frames].any()
        assert np.max(rms[gap_frames]) < 0.1 * level, (note.pitch, note.velocity)


@pytest.mark.parametrize(
    "font",
    [
        pytest.param(font, marks=[*RENDER_MARKS, requires_font(font)])
        for font in ("fluidr3", "timgm6mb", "musescore-lite")
    ],
)
def test_fundamental_matches_pitch(font):
    notes = isolated_notes(font, pitches=SMALL_PITCHES, velocities=[80])
    sr = notes.sample_rate
    for note in notes.midi.instruments[0].notes:
        segment = notes.audio[int((note.start + 0.05) * sr) : int(note.end * sr)]
        frequency = _lowest_strong_peak(segment, sr)
        expected = pretty_midi.note_number_to_hz(note.pitch)
        assert abs(12 * np.log2(frequency / expected)) < 1.0, (font, note.pitch, frequency)


@rendering
def test_louder_velocity_is_louder(small_isolated):
    sr = small_isolated.sample_rate
    levels = {}
    for note in small_isolated.midi.instruments[0].notes:
        segment = small_isolated.audio[int(note.start * sr) : int(note.end * sr)]
        levels[(note.pitch, note.velocity)] = np.sqrt(np.mean(segment**2))
    assert levels[(60, 96)] > 2 * levels[(60, 40)]
    assert levels[(69, 96)] > 2 * levels[(69, 40)]


# ------------------------------------------------------------------------ random chords


@rendering
def test_chords_are_deterministic_and_seeded():
    kwargs = {"n_chords": 4, "polyphony": 3, "chord_duration": 0.3, "gap": 0.1}
    first = random_chords("timgm6mb", random_state=7, **kwargs)
    again = random_chords("timgm6mb", random_state=7, **kwargs)
    other = random_chords("timgm6mb", random_state=8, **kwargs)
    assert first.params["chords"] == again.params["chords"]
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.params["chords"] != other.params["chords"]
    assert not np.array_equal(first.audio, other.audio)
    generator = random_chords("timgm6mb", random_state=np.random.default_rng(7), **kwargs)
    assert generator.params["chords"] == first.params["chords"]


@pytest.mark.parametrize("polyphony", [pytest.param(p, marks=RENDER_MARKS) for p in (1, 2, 5)])
def test_chords_respect_polyphony_pitches_and_velocities(polyphony):
    pitches = list(range(48, 60))
    chords = random_chords(
        "timgm6mb",
        n_chords=6,
        polyphony=polyphony,
        pitches=pitches,
        velocity_range=(50, 60),
        chord_duration=0.2,
        gap=0.1,
        random_state=0,
    )
    times = chords.frame_times(HOP)
    roll = chords.roll(times, pitches=pitches)
    counts = roll.sum(axis=1)
    assert set(np.unique(counts)) == {0, polyphony}
    notes = chords.midi.instruments[0].notes
    assert len(notes) == 6 * polyphony
    assert all(50 <= n.velocity <= 60 and n.pitch in pitches for n in notes)
    for chord in chords.params["chords"]:
        assert len(set(chord)) == polyphony
    # The audio follows the chord frames.
    rms = _frame_rms(chords.audio)
    assert np.median(rms[counts > 0]) > 1e-3


@rendering
def test_full_polyphony_uses_every_pitch():
    chords = random_chords("timgm6mb", n_chords=1, polyphony=4, pitches=[60, 62, 64, 65])
    assert chords.params["chords"] == [[60, 62, 64, 65]]


# ------------------------------------------------------------------------ random piece


@rendering
def test_piece_is_plausible_and_deterministic():
    piece = random_piece("timgm6mb", n_bars=2, tempo=120, random_state=3)
    again = random_piece("timgm6mb", n_bars=2, tempo=120, random_state=3)
    np.testing.assert_array_equal(piece.audio, again.audio)
    other = random_piece("timgm6mb", n_bars=2, tempo=120, random_state=4)
    assert not np.array_equal(piece.audio[: other.audio.size], other.audio[: piece.audio.size])
    notes = piece.midi.instruments[0].notes
    pitches = np.array([n.pitch for n in notes])
    assert pitches.min() >= 36 and pitches.max() < 96
    # In the chosen major key.
    tonic = piece.params["tonic"]
    assert set(((pitches - tonic) % 12).tolist()) <= {0, 2, 4, 5, 7, 9, 11}
    # Two hands: notes in both halves of the range, and the last bar's bass is the tonic.
    assert (pitches < 66).any() and (pitches >= 66).any()
    last_bar = [n.pitch for n in notes if n.start >= 2.0 - 1e-6 and n.pitch < 66]
    assert min(last_bar) % 12 == tonic
    assert max(n.end for n in notes) <= 4.0
    roll = piece.roll(piece.frame_times(HOP), pitches=range(36, 96))
    assert 2 <= roll.sum(axis=1).max() <= 4
    velocities = [n.velocity for n in notes]
    assert min(velocities) >= 32 and max(velocities) <= 96


@rendering
def test_render_piano_midi_from_path(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(80, 60, 0.1, 0.6))
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(80, 38, 0.2, 0.3))
    pm.instruments.extend([piano, drums])
    path = tmp_path / "song.mid"
    pm.write(str(path))
    rendered = render_piano_midi(path, "timgm6mb")
    assert isinstance(rendered, RenderedPiano)
    assert rendered.params == {"kind": "midi", "source": str(path)}
    roll = rendered.roll(rendered.frame_times(HOP), pitches=[38, 60])
    assert roll[:, 0].sum() == 0  # drums are not piano notes
    assert roll[:, 1].sum() == 50
    assert rendered.duration == pytest.approx(0.6 + 0.5, abs=1e-3)


# ------------------------------------------------------------------------ labelled frames


def test_labelled_frames_selects_single_notes():
    roll = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=bool)
    features = np.arange(10.0).reshape(5, 2)
    X, y = labelled_frames(features, roll, [40, 50, 60])
    np.testing.assert_array_equal(X, features[[1, 3, 4]])
    assert y.tolist() == [40, 60, 60] and y.dtype == np.int64
    X, y = labelled_frames(features, np.zeros((5, 3), dtype=bool), [40, 50, 60])
    assert X.shape == (0, 2) and y.shape == (0,)


@rendering
def test_labelled_frames_on_rendered_notes(small_isolated):
    times = small_isolated.frame_times(HOP)
    roll = small_isolated.roll(times, pitches=[60, 69])
    features = np.abs(np.random.default_rng(0).normal(size=(times.size, 7)))
    X, y = labelled_frames(features, roll, [60, 69])
    assert X.shape == (200, 7)
    assert (y == 60).sum() == 100 and (y == 69).sum() == 100


def test_labelled_frames_errors():
    roll = np.zeros((4, 2), dtype=bool)
    with pytest.raises(ValueError, match=r"features must be 2-d \(n_frames, n_bins\); got shape"):
        labelled_frames(np.zeros(4), roll, [60, 61])
    with pytest.raises(ValueError, match=r"roll must have shape .* \(5, 2\).*got \(4, 2\)"):
        labelled_frames(np.zeros((5, 3)), roll, [60, 61])
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        labelled_frames(np.zeros((4, 3)), roll, [60, 61, 62])


# ------------------------------------------------------------------------ argument errors


@pytest.mark.parametrize(
    ("function", "kwargs", "error", "message"),
    [
        (random_chords, {"polyphony": 5, "pitches": [60, 62, 64]}, ValueError,
         r"polyphony must be at most the number of pitches \(3\); got 5"),
        (random_chords, {"polyphony": 0}, ValueError,
         r"'polyphony' parameter of random_chords must be an int in the range \[1, inf\). "
         r"Got 0 instead"),
        (random_chords, {"polyphony": 2.0}, TypeError, "'polyphony' parameter .* Got 2.0"),
        (random_chords, {"n_chords": 0}, ValueError, r"'n_chords' parameter .* Got 0"),
        (random_chords, {"velocity_range": (96, 32)}, ValueError,
         r"velocity_range must have low <= high; got \(96, 32\)"),
        (random_chords, {"velocity_range": (0, 50)}, ValueError,
         r"'velocity_range\[0\]' parameter of random_chords must be an int in the range "
         r"\[1, 127\]. Got 0"),
        (random_chords, {"velocity_range": (32, 200)}, ValueError,
         r"'velocity_range\[1\]' parameter .* \[1, 127\]. Got 200"),
        (random_chords, {"velocity_range": 64}, TypeError, "velocity_range must be a pair"),
        (random_chords, {"chord_duration": 0}, ValueError,
         r"'chord_duration' parameter .* a float in the range \(0.0, inf\). Got 0"),
        (random_chords, {"gap": -0.1}, ValueError,
         r"'gap' parameter .* a float in the range \[0.0, inf\). Got -0.1"),
        (random_chords, {"random_state": "seed"}, TypeError,
         "'random_state' parameter .*Generator' or None. Got 'seed' instead"),
        (random_chords, {"random_state": True}, TypeError, "'random_state' parameter"),
        (random_chords, {"sample_rate": 4000}, ValueError,
         r"'sample_rate' parameter of random_chords must be an int in the range "
         r"\[8000, 96000\]"),
        (random_chords, {"pitches": [60, 128]}, ValueError,
         r"pitches must lie in \[0, 127\].*got values from 60 to 128"),
        (random_chords, {"pitches": [60, 60]}, ValueError, "pitches must not repeat a pitch"),
        (random_chords, {"pitches": []}, ValueError, "pitches must be a non-empty"),
        (random_chords, {"pitches": [60.5]}, TypeError, "pitches must hold integer MIDI"),
        (isolated_notes, {"velocities": []}, ValueError, "velocities must hold at least one"),
        (isolated_notes, {"velocities": [64, 0]}, ValueError,
         r"'velocities\[1\]' parameter of isolated_notes must be an int in the range "
         r"\[1, 127\]. Got 0"),
        (isolated_notes, {"note_duration": float("nan")}, ValueError,
         "'note_duration' parameter .* Got nan"),
        (random_piece, {"n_bars": 0}, ValueError, r"'n_bars' parameter .* Got 0"),
        (random_piece, {"tempo": 5}, ValueError,
         r"'tempo' parameter of random_piece must be a float in the range \[20.0, 400.0\]. "
         r"Got 5"),
        (random_piece, {"pitches": range(60, 72)}, ValueError,
         "pitches must hold, in every major key, at least 7 scale notes"),
        (random_piece, {"soundfont": 42}, TypeError, "'soundfont' parameter of random_piece"),
    ],
)  # fmt: skip
def test_generator_errors(function, kwargs, error, message):
    arguments = {"soundfont": "timgm6mb", **kwargs}
    with pytest.raises(error, match=message):
        function(**arguments)


def test_unknown_font_is_refused_before_rendering():
    with pytest.raises(ValueError, match="soundfont must be one of"):
        isolated_notes("steinway", pitches=[60], velocities=[64])


def test_rendered_piano_frame_times():
    piano = RenderedPiano(np.zeros(1000, np.float32), 1000, pretty_midi.PrettyMIDI(), "x")
    assert piano.duration == 1.0
    np.testing.assert_allclose(piano.frame_times(100), np.arange(11) * 0.1)
    with pytest.raises(ValueError, match=r"'hop_length' parameter of RenderedPiano.frame_times "
                                         r"must be an int in the range \[1, inf\). Got 0"):
        piano.frame_times(0)
    np.testing.assert_allclose(piano.frame_times(np.int64(100)), np.arange(11) * 0.1)


# ------------------------------------------------------------------------ protocol


def test_default_protocol():
    protocol = DEFAULT_PROTOCOL
    assert protocol.train_soundfonts == ("fluidr3", "timgm6mb")
    assert protocol.test_soundfont == "musescore-lite"
    assert protocol.pitches == tuple(range(36, 96)) and len(protocol.pitches) == 60
    assert protocol.velocity_range == (32, 96) and protocol.sample_rate == 16000
    with pytest.raises(dataclasses.FrozenInstanceError):
        protocol.sample_rate = 8000  # type: ignore[misc]
    assert PianoProtocol(train_soundfonts=["fluidr3"]).train_soundfonts == ("fluidr3",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_soundfont": "timgm6mb"}, "test_soundfont must differ from the training fonts"),
        ({"train_soundfonts": ()}, "train_soundfonts must be a non-empty tuple"),
        ({"train_soundfonts": "fluidr3"}, "train_soundfonts must be a non-empty tuple"),
        ({"velocity_range": (90, 40)}, "velocity_range must have low <= high"),
        ({"train_velocities": (20, 64)}, r"train_velocities must be non-empty and lie in"),
        ({"pitches": (60, 60)}, "pitches must not repeat"),
        ({"sample_rate": 1000}, r"'sample_rate' parameter of PianoProtocol must be an int in the "
                                r"range \[8000, 96000\]. Got 1000"),
        ({"train_velocities": (64, 0)}, r"'train_velocities\[1\]' parameter of PianoProtocol"),
    ],
)
def test_protocol_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PianoProtocol(**kwargs)


@rendering
def test_protocol_renders_with_the_right_fonts():
    protocol = PianoProtocol(
        train_soundfonts=("timgm6mb",), test_soundfont="fluidr3", pitches=tuple(range(60, 72))
    )
    (training,) = protocol.training_notes()
    assert training.soundfont == "timgm6mb"
    assert len(training.midi.instruments[0].notes) == 12 * 3
    chords = protocol.test_chords(polyphony=3, n_chords=2, random_state=1)
    assert chords.soundfont == "fluidr3"
    assert all(60 <= n.pitch < 72 for n in chords.midi.instruments[0].notes)
    assert chords.params["polyphony"] == 3
    assert protocol.test_chords(3, 2, 1).params["chords"] == chords.params["chords"]


@rendering
@requires_font("musescore-lite")
def test_default_protocol_test_piece():
    piece = DEFAULT_PROTOCOL.test_piece(random_state=0, n_bars=1)
    assert piece.soundfont == "musescore-lite"
    assert piece.params["n_bars"] == 1 and piece.duration < 3.0
