import copy

import numpy as np
import pretty_midi
import pytest
import scipy.ndimage
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import NotFittedError

import decomp
from decomp import NMF
from decomp.audio import Spectrogram, write_audio
from decomp.data import labelled_frames
from decomp.metrics import frame_scores, note_scores, precision_of_source_attribution
from decomp.transcription import (
    PianoTranscriber,
    activity_to_roll,
    choose_threshold,
    hysteresis_threshold,
    protocol_features,
)
from decomp.transcription.plotting import plot_transcription


def test_transcribes_held_out_font_chords(tiny_transcriber, tiny_chords, tiny_protocol):
    assert tiny_transcriber.threshold_ > 0
    assert 0 < tiny_transcriber.validation_f1_ <= 1
    np.testing.assert_array_equal(tiny_transcriber.pitches_, tiny_protocol.pitches)
    result = tiny_transcriber.transcribe(tiny_chords.audio)
    reference = tiny_chords.roll(result.times, result.pitches)
    assert result.roll.shape == reference.shape == result.activations.shape
    scores = frame_scores(result.roll, reference)
    assert scores["f1"] > 0.7, scores
    assert precision_of_source_attribution(result.activations, reference) > 0.6
    notes = result.midi.instruments[0].notes
    assert notes and {note.pitch for note in notes} <= set(tiny_protocol.pitches)


def test_path_and_samples_give_the_same_transcription(tmp_path, tiny_transcriber, tiny_chords):
    path = write_audio(tmp_path / "chords.wav", tiny_chords.audio, tiny_chords.sample_rate)
    from_path = tiny_transcriber.transcribe(path)
    from_samples = tiny_transcriber.transcribe(tiny_chords.audio)
    np.testing.assert_array_equal(from_path.roll, from_samples.roll)
    np.testing.assert_allclose(from_path.times, from_samples.times)


def test_transcription_files(tmp_path, tiny_transcriber, tiny_chords):
    result = tiny_transcriber.transcribe(tiny_chords.audio)
    midi_path, arrays_path = result.save(tmp_path, "chords")
    arrays = np.load(arrays_path)
    n_frames, n_pitches = result.roll.shape
    assert arrays["times"].shape == (n_frames,)
    assert arrays["pitches"].tolist() == list(result.pitches)
    assert arrays["activations"].shape == (n_frames, n_pitches)
    assert arrays["roll"].dtype == bool and arrays["roll"].shape == (n_frames, n_pitches)
    written = pretty_midi.PrettyMIDI(str(midi_path))
    assert len(written.instruments[0].notes) == len(result.midi.instruments[0].notes)
    png = plot_transcription(result, tmp_path / "chords.png",
                             reference_roll=tiny_chords.roll(result.times, result.pitches))
    assert png.stat().st_size > 10_000


def test_chunking_does_not_change_the_result(tiny_transcriber, tiny_chords):
    from sklearn.base import clone

    exact = clone(tiny_transcriber)
    exact.__dict__.update({key: value for key, value in vars(tiny_transcriber).items()
                           if key.endswith("_")})
    exact.decomposer_ = clone(tiny_transcriber.decomposer_).set_params(tol=0.0, max_iter=40)
    exact.decomposer_.__dict__.update({key: value for key, value in
                                       vars(tiny_transcriber.decomposer_).items()
                                       if key.endswith("_")})
    features = Spectrogram().transform(tiny_chords.audio)
    whole = exact.set_params(chunk_frames=4096).transcribe_features(features)
    chunked = exact.set_params(chunk_frames=32).transcribe_features(features)
    np.testing.assert_allclose(chunked.activations, whole.activations, rtol=1e-4, atol=1e-6)


def test_save_and_load(tmp_path, tiny_transcriber, tiny_chords):
    path = tiny_transcriber.save(tmp_path / "transcriber.decomp")
    restored = decomp.load(path)
    assert isinstance(restored, PianoTranscriber)
    assert restored.threshold_ == tiny_transcriber.threshold_
    np.testing.assert_array_equal(restored.transcribe(tiny_chords.audio).roll,
                                  tiny_transcriber.transcribe(tiny_chords.audio).roll)


def test_choose_threshold_finds_the_separating_value():
    activity = np.array([[0.9, 0.1], [0.8, 0.05], [0.2, 0.7]])
    reference = np.array([[1, 0], [1, 0], [0, 1]], dtype=bool)
    threshold, f1 = choose_threshold(activity, reference)
    assert f1 == 1.0
    assert 0.2 < threshold <= 0.7


def test_fit_with_given_threshold_and_validation(tiny_protocol, tiny_chords):
    notes = tiny_protocol.training_notes()[0]
    features, roll = protocol_features(notes, Spectrogram(), tiny_protocol.pitches)
    X, y = labelled_frames(features, roll, tiny_protocol.pitches)
    validation = protocol_features(tiny_chords, Spectrogram(), tiny_protocol.pitches)
    decomposer = NMF(dictionary="frames", n_components_per_source=4, max_iter=50, random_state=0)
    fixed = PianoTranscriber(decomposer=decomposer, threshold=0.2).fit(
        X, y, validation=validation)
    assert fixed.threshold_ == 0.2 and 0 <= fixed.validation_f1_ <= 1
    auto = PianoTranscriber(decomposer=decomposer).fit(X, y, validation=validation)
    # The automatic threshold is the best of the candidate grid, by brute force.
    activity = auto._activity_batch(validation[0])
    grid = float(activity.max()) * np.geomspace(1e-3, 1.0, 120)
    scores = [frame_scores(activity_to_roll(activity, threshold, min_note_frames=2),
                           validation[1])["f1"] for threshold in grid]
    assert auto.validation_f1_ == pytest.approx(max(scores))
    assert auto.threshold_ == pytest.approx(grid[int(np.argmax(scores))])


def test_a_list_of_validation_recordings_normalises_each_alone(tiny_protocol, tiny_chords):
    notes = tiny_protocol.training_notes()[0]
    features, roll = protocol_features(notes, Spectrogram(), tiny_protocol.pitches)
    X, y = labelled_frames(features, roll, tiny_protocol.pitches)
    loud = protocol_features(tiny_chords, Spectrogram(), tiny_protocol.pitches)
    # The same chords 30 dB quieter: normalised with the loud ones, their notes would all
    # fall below any threshold that suits the loud recording.
    quiet = (loud[0] * 1e-3, loud[1])
    decomposer = NMF(dictionary="frames", n_components_per_source=4, max_iter=50, random_state=0)
    auto = PianoTranscriber(decomposer=decomposer).fit(X, y, validation=[loud, quiet])
    activity = np.concatenate([auto._activity_batch(features) for features, _ in (loud, quiet)])
    for part in np.split(activity, 2):
        assert 0.5 < part.max() <= 1.0  # each on its own scale (max 1 before the median filter)
    reference = np.concatenate([loud[1], quiet[1]])
    grid = float(activity.max()) * np.geomspace(1e-3, 1.0, 120)
    scores = [frame_scores(activity_to_roll(activity, threshold, min_note_frames=2),
                           reference)["f1"] for threshold in grid]
    assert auto.validation_f1_ == pytest.approx(max(scores))
    assert auto.threshold_ == pytest.approx(grid[int(np.argmax(scores))])
    # As two recordings they score as well as the loud one alone; concatenated (one scale),
    # the quiet half's notes are lost.
    alone = PianoTranscriber(decomposer=decomposer).fit(X, y, validation=loud)
    concatenated = PianoTranscriber(decomposer=decomposer).fit(
        X, y, validation=(np.concatenate([loud[0], quiet[0]]), reference))
    assert auto.validation_f1_ == pytest.approx(alone.validation_f1_, abs=0.02)
    assert concatenated.validation_f1_ < auto.validation_f1_ - 0.1


def test_errors(tiny_protocol, tiny_transcriber, tiny_chords):
    X = np.abs(np.random.default_rng(0).normal(size=(10, 1025)))
    y = np.full(10, 60)
    with pytest.raises(ValueError, match="threshold='auto' chooses the threshold on validation"):
        PianoTranscriber().fit(X, y)
    with pytest.raises(ValueError, match="y must hold integer MIDI pitches"):
        PianoTranscriber(threshold=0.1).fit(X, np.full(10, 60.5))
    with pytest.raises(ValueError, match="X has 1025 bins but front_end produces 294"):
        PianoTranscriber(threshold=0.1, front_end=Spectrogram(kind="cqt")).fit(X, y)
    with pytest.raises(ValueError, match="The 'median_filter' parameter"):
        PianoTranscriber(median_filter=0, threshold=0.1).fit(X, y)
    with pytest.raises(NotFittedError):
        PianoTranscriber().transcribe(tiny_chords.audio)
    with pytest.raises(ValueError, match="audio is at 44100 Hz but the front end expects 16000"):
        tiny_transcriber.transcribe(tiny_chords.audio, sample_rate=44100)
    with pytest.raises(ValueError, match="features has 12 features, but PianoTranscriber"):
        tiny_transcriber.transcribe_features(np.ones((5, 12)))
    with pytest.raises(ValueError, match="the validation roll has shape"):
        PianoTranscriber().fit(X, y, validation=(X, np.zeros((3, 1), dtype=bool)))
    with pytest.raises(ValueError, match=r"validation must be a \(features, roll\) tuple or a "
                                         "non-empty list of them; got list of 2 items"):
        PianoTranscriber().fit(X, y, validation=[X, np.zeros((10, 1), dtype=bool)])
    with pytest.raises(ValueError, match="non-empty list of them; got list of 0 items"):
        PianoTranscriber().fit(X, y, validation=[])
    # Both are found before the decomposer is fitted (a DDS fit trains flows for minutes):
    # a decomposer whose fit would fail is never reached.
    unfittable = NMF(beta_loss="no-such-loss")
    with pytest.raises(ValueError, match="threshold='auto' chooses the threshold"):
        PianoTranscriber(decomposer=unfittable).fit(X, y)
    with pytest.raises(ValueError, match="validation must be a"):
        PianoTranscriber(decomposer=unfittable).fit(X, y, validation=[])
    with pytest.raises(FileNotFoundError):
        tiny_transcriber.transcribe("/nonexistent/recording.wav")


def test_evaluate_transcriber_matches_the_metrics(tiny_transcriber, tiny_chords):
    from decomp.transcription import evaluate_transcriber

    scores = evaluate_transcriber(tiny_transcriber, tiny_chords)
    expected = frame_scores(scores.transcription.roll, scores.reference_roll)
    assert scores.f1 == pytest.approx(expected["f1"])
    assert scores.precision == pytest.approx(expected["precision"])
    assert scores.psa == pytest.approx(precision_of_source_attribution(
        scores.transcription.activations, scores.reference_roll))
    assert 0 <= scores.sparsity <= 1 and scores.real_time_factor > 0
    np.testing.assert_array_equal(
        scores.reference_roll, tiny_chords.roll(scores.transcription.times,
                                                scores.transcription.pitches))


def test_evaluate_transcriber_note_scores(tiny_transcriber, tiny_chords):
    from decomp.transcription import evaluate_transcriber

    scores = evaluate_transcriber(tiny_transcriber, tiny_chords)
    expected = note_scores(scores.transcription, tiny_chords)  # every chord note is known
    fields = ("onset_precision", "onset_recall", "onset_f1", "onset_offset_precision",
              "onset_offset_recall", "onset_offset_f1")
    for field in fields:
        value = getattr(scores, f"note_{field}")
        assert type(value) is float and 0.0 <= value <= 1.0
        assert value == pytest.approx(expected[field])
    assert scores.note_onset_offset_f1 <= scores.note_onset_f1
    assert scores.note_onset_f1 > 0  # chords on a 1-s grid are found
    # a reference note of a pitch the transcriber does not know is left out, as in frames
    extended = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    extended.instruments = [pretty_midi.Instrument(program=0)]
    extended.instruments[0].notes = list(tiny_chords.midi.instruments[0].notes) + [
        pretty_midi.Note(80, 30, 0.0, 1.0)]  # a pitch the transcriber does not know
    rendered = decomp.data.RenderedPiano(tiny_chords.audio, tiny_chords.sample_rate, extended,
                                         tiny_chords.soundfont, tiny_chords.params)
    with_unknown = evaluate_transcriber(tiny_transcriber, rendered)
    assert with_unknown.note_onset_recall == pytest.approx(scores.note_onset_recall)
    assert with_unknown.f1 == pytest.approx(scores.f1)


def _small_transcription(value: float):
    from decomp.transcription.piano import Transcription

    roll = np.zeros((20, 3), dtype=bool)
    roll[5:15, 1] = True
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=80, pitch=61, start=0.1, end=0.3))
    midi.instruments.append(piano)
    return Transcription(times=np.arange(20) * 0.02, pitches=np.array([60, 61, 62]),
                         activations=np.full((20, 3), value), roll=roll, midi=midi)


def test_an_interrupted_transcription_save_keeps_the_previous_files(tmp_path, monkeypatch):
    from decomp.transcription import piano

    midi_path, arrays_path = _small_transcription(1.0).save(tmp_path / "new", "piece")
    before = {midi_path: midi_path.read_bytes(), arrays_path: arrays_path.read_bytes()}

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(piano, "_write_npz", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _small_transcription(2.0).save(tmp_path / "new", "piece")
    monkeypatch.undo()
    assert arrays_path.read_bytes() == before[arrays_path]
    with np.load(arrays_path) as arrays:
        assert (arrays["activations"] == 1.0).all()
    assert pretty_midi.PrettyMIDI(str(midi_path)).instruments[0].notes[0].pitch == 61
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["piece.mid", "piece.npz"]


# --------------------------------------------------------------- streaming and honest inputs


def _with_chunk_frames(transcriber, chunk_frames):
    import copy

    small = copy.deepcopy(transcriber)
    small.chunk_frames = chunk_frames
    return small


def _notes(transcription):
    return [(note.pitch, note.start, note.end, note.velocity)
            for note in transcription.midi.instruments[0].notes]


@pytest.mark.parametrize("file_rate", [16000, 22050])
def test_streamed_file_equals_in_memory_samples(tmp_path, tiny_transcriber, tiny_chords,
                                                file_rate, recwarn):
    import librosa

    from decomp.audio import load_audio

    audio = librosa.resample(tiny_chords.audio, orig_sr=tiny_chords.sample_rate,
                             target_sr=file_rate)
    path = write_audio(tmp_path / "chords.wav", 0.5 * audio, file_rate)
    # Tiny chunks, so the recording is read and decomposed in many pieces.
    transcriber = _with_chunk_frames(tiny_transcriber, 16)
    streamed = transcriber.transcribe(path)
    in_memory = transcriber.transcribe(load_audio(path, 16000)[0])
    assert streamed.roll.shape[0] > 5 * 16
    np.testing.assert_array_equal(streamed.activations, in_memory.activations)
    np.testing.assert_array_equal(streamed.roll, in_memory.roll)
    np.testing.assert_array_equal(streamed.times, in_memory.times)
    assert _notes(streamed) == _notes(in_memory) and _notes(streamed)
    assert not [w for w in recwarn if issubclass(w.category, decomp.exceptions.AudioWarning)]


def test_chunks_per_batch_does_not_change_the_result(tiny_transcriber, tiny_chords):
    features = Spectrogram().transform(tiny_chords.audio)
    transcriber = _with_chunk_frames(tiny_transcriber, 16)
    one_by_one = transcriber.transcribe_features(features)  # the CPU default: 1 per batch
    transcriber._chunks_per_batch = {"cpu": 4}
    batched = transcriber.transcribe_features(features)
    # Each item of a batch stops on its own, so batching changes nothing that matters.
    np.testing.assert_allclose(one_by_one.activations, batched.activations, rtol=0,
                               atol=1e-4 * float(batched.activations.max()))
    np.testing.assert_array_equal(one_by_one.roll, batched.roll)


def _noise(level_dbfs, seconds=3.0, rate=16000, offset=0.0):
    rng = np.random.default_rng(0)
    return (offset + 10 ** (level_dbfs / 20) * rng.standard_normal(int(seconds * rate))
            ).astype(np.float32)


@pytest.mark.parametrize("name, audio", [
    ("hiss", _noise(-90)),
    ("dc-offset", _noise(-100, offset=0.2)),
])
def test_near_silence_gives_no_notes_and_a_warning(tmp_path, tiny_transcriber, name, audio):
    from decomp.exceptions import AudioWarning

    path = write_audio(tmp_path / f"{name}.wav", audio, 16000)
    with pytest.warns(AudioWarning, match=rf"{name}\.wav.*near-silent.*-60 dBFS floor"):
        from_file = tiny_transcriber.transcribe(path)
    with pytest.warns(AudioWarning, match="near-silent"):
        from_samples = tiny_transcriber.transcribe(audio)
    for result in (from_file, from_samples):
        assert not result.roll.any() and not result.midi.instruments[0].notes


def test_quiet_real_piano_is_still_transcribed(tmp_path, tiny_transcriber, tiny_chords,
                                               recwarn):
    from decomp.audio import audio_level

    level = audio_level(tiny_chords.audio, tiny_chords.sample_rate)
    quiet = tiny_chords.audio * np.float32(10 ** ((-40 - level) / 20))  # at -40 dBFS
    assert audio_level(quiet, 16000) == pytest.approx(-40, abs=0.01)
    result = tiny_transcriber.transcribe(write_audio(tmp_path / "quiet.wav", quiet, 16000))
    reference = tiny_chords.roll(result.times, result.pitches)
    assert frame_scores(result.roll, reference)["f1"] > 0.7
    assert not [w for w in recwarn if issubclass(w.category, decomp.exceptions.AudioWarning)]


def test_audio_beyond_full_scale_warns(tmp_path, tiny_transcriber, tiny_chords):
    from decomp.exceptions import AudioWarning

    loud = 1000 * tiny_chords.audio / np.abs(tiny_chords.audio).max()
    path = write_audio(tmp_path / "loud.wav", loud, 16000)
    with pytest.warns(AudioWarning, match=r"loud\.wav.*beyond full scale.*peak is 1000"):
        result = tiny_transcriber.transcribe(path)
    assert result.roll.any()
    with pytest.warns(AudioWarning, match="beyond full scale"):
        tiny_transcriber.transcribe(loud)


def test_truncated_file_warns(tmp_path, tiny_transcriber, tiny_chords):
    import soundfile

    from decomp.exceptions import AudioWarning

    path = tmp_path / "cut.wav"
    soundfile.write(path, tiny_chords.audio, 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # the header still announces every frame
    with pytest.warns(AudioWarning, match=r"cut\.wav.*shorter than its header says"):
        result = tiny_transcriber.transcribe(path)
    assert result.roll.shape[0] < tiny_transcriber.transcribe(tiny_chords.audio).roll.shape[0]


def test_sample_rate_too_low_is_refused(tmp_path, tiny_transcriber):
    path = write_audio(tmp_path / "phone.wav", _noise(-20, rate=4000), 4000)
    with pytest.raises(ValueError, match=r"phone\.wav.*4000 Hz, below the 8000 Hz needed"):
        tiny_transcriber.transcribe(path)


def test_streamed_file_with_a_constant_q_front_end_is_close_to_in_memory(
        tmp_path, tiny_protocol, tiny_chords):
    import copy

    front_end = Spectrogram(kind="log-cqt", compression=100.0, bins_per_octave=24, fmin=55.0)
    notes = tiny_protocol.training_notes()[0]
    features, roll = protocol_features(notes, front_end, tiny_protocol.pitches)
    X, y = labelled_frames(features, roll, tiny_protocol.pitches)
    transcriber = PianoTranscriber(
        decomposer=NMF(dictionary="frames", n_components_per_source=4, max_iter=50, tol=0.0,
                       random_state=0),
        front_end=front_end, threshold=0.2, chunk_frames=16).fit(X, y)
    path = write_audio(tmp_path / "chords.wav", tiny_chords.audio, 16000)
    streamed = transcriber.transcribe(path)
    in_memory = copy.deepcopy(transcriber).transcribe(tiny_chords.audio)
    top = float(in_memory.activations.max())
    np.testing.assert_allclose(streamed.activations, in_memory.activations, rtol=0,
                               atol=1e-3 * top)
    assert (streamed.roll != in_memory.roll).mean() < 0.01


# --- hysteresis (sustain_ratio) ------------------------------------------------------------
def test_a_dip_above_the_sustain_level_keeps_one_note():
    # one pitch: up, a dip to 0.4 (below the threshold 0.5, above 0.5 * 0.6 = 0.3), up again
    activity = np.array([0.0, 0.6, 0.7, 0.4, 0.4, 0.8, 0.35, 0.1, 0.0])[:, None]
    held = activity_to_roll(activity, 0.5, sustain_ratio=0.6)
    assert held[:, 0].tolist() == [False, True, True, True, True, True, True, False, False]
    split = activity_to_roll(activity, 0.5, sustain_ratio=1.0)
    assert split[:, 0].tolist() == [False, True, True, False, False, True, False, False, False]
    # the note also reaches back: frames above the sustain level before the onset count
    rising = np.array([0.35, 0.45, 0.9, 0.2])[:, None]
    assert hysteresis_threshold(rising, 0.5, 0.3)[:, 0].tolist() == [True, True, True, False]


def test_activity_above_the_sustain_level_alone_never_starts_a_note():
    activity = np.zeros((12, 3))
    activity[2:5, 0] = 0.4        # a run above low only: no note
    activity[7, 1] = 0.45         # an isolated frame above low only: no note
    activity[7, 2] = 0.9          # a note in another pitch does not leak across pitches
    activity[6, 1] = activity[8, 1] = 0.2
    roll = hysteresis_threshold(activity, 0.5, 0.3)
    assert roll[:, :2].sum() == 0
    assert roll[:, 2].tolist() == [False] * 7 + [True] + [False] * 4


def test_sustain_ratio_then_min_note_frames():
    activity = np.array([0.0, 0.6, 0.35, 0.0, 0.6, 0.0])[:, None]
    roll = activity_to_roll(activity, 0.5, sustain_ratio=0.5, min_note_frames=2)
    assert roll[:, 0].tolist() == [False, True, True, False, False, False]


@settings(max_examples=60, deadline=None)
@given(activity=hnp.arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 5)),
                           elements=st.floats(0, 1)),
       threshold=st.floats(0, 1), min_note_frames=st.integers(1, 4))
def test_sustain_ratio_one_is_a_single_threshold(activity, threshold, min_note_frames):
    expected = activity >= threshold
    if min_note_frames > 1:
        expected = scipy.ndimage.binary_opening(
            expected, structure=np.ones((min_note_frames, 1), dtype=bool))
    roll = activity_to_roll(activity, threshold, sustain_ratio=1.0,
                            min_note_frames=min_note_frames)
    np.testing.assert_array_equal(roll, expected)
    np.testing.assert_array_equal(hysteresis_threshold(activity, threshold, threshold),
                                  activity >= threshold)


@settings(max_examples=60, deadline=None)
@given(activity=hnp.arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 5)),
                           elements=st.floats(0, 1)),
       threshold=st.floats(0.01, 1), sustain_ratio=st.floats(0.01, 1))
def test_hysteresis_lies_between_its_two_thresholds(activity, threshold, sustain_ratio):
    roll = activity_to_roll(activity, threshold, sustain_ratio=sustain_ratio)
    assert np.all(roll[activity >= threshold])               # every onset-level frame is on
    assert not np.any(roll[activity < threshold * sustain_ratio])  # nothing below low is on


def test_choose_threshold_for_a_sustain_ratio():
    # a note that dips to 0.3, and a stray frame at 0.35 that is no note: one threshold
    # cannot keep the dip without the stray frame; hysteresis (onset above 0.35, sustain
    # down to 0.3) can
    activity = np.array([0.0, 0.9, 0.3, 0.3, 0.9, 0.0, 0.35])[:, None]
    reference = np.array([0, 1, 1, 1, 1, 0, 0], dtype=bool)[:, None]
    _, single = choose_threshold(activity, reference)
    threshold, held = choose_threshold(activity, reference, sustain_ratio=0.5)
    assert single == pytest.approx(8 / 9)
    assert held == 1.0
    assert 0.35 < threshold <= 0.6
    assert activity_to_roll(activity, threshold, sustain_ratio=0.5)[:, 0].tolist() == (
        reference[:, 0].tolist())


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5, True, "half"])
def test_sustain_ratio_is_checked(ratio):
    X = np.abs(np.random.default_rng(0).normal(size=(10, 1025)))
    with pytest.raises((ValueError, TypeError), match="The 'sustain_ratio' parameter of "
                       r"PianoTranscriber must be a float in the range \(0\.0, 1\.0\]"):
        PianoTranscriber(sustain_ratio=ratio, threshold=0.1).fit(X, np.full(10, 60))


def test_activity_to_roll_refuses_a_bad_sustain_ratio():
    with pytest.raises(ValueError, match=r"sustain_ratio must be in \(0, 1\]; got 0"):
        activity_to_roll(np.ones((3, 2)), 0.5, sustain_ratio=0)
    with pytest.raises(ValueError, match="low must be at most high"):
        hysteresis_threshold(np.ones((3, 2)), 0.5, 0.6)


def test_sustain_ratio_is_saved_and_used(tmp_path, tiny_transcriber, tiny_chords):
    held = copy.deepcopy(tiny_transcriber).set_params(sustain_ratio=0.5)
    restored = decomp.load(held.save(tmp_path / "held.decomp"))
    assert restored.sustain_ratio == 0.5
    result = restored.transcribe(tiny_chords.audio)
    np.testing.assert_array_equal(result.roll, held.transcribe(tiny_chords.audio).roll)
    smoothed = restored._postprocess(result.activations)
    np.testing.assert_array_equal(result.roll, activity_to_roll(
        smoothed, restored.threshold_, sustain_ratio=0.5,
        min_note_frames=restored.min_note_frames))
    assert restored.threshold_ == tiny_transcriber.threshold_


def test_a_model_file_without_sustain_ratio_loads_with_the_default(tmp_path, tiny_transcriber,
                                                                    tiny_chords):
    from decomp.persistence import encode

    path = tiny_transcriber.save(tmp_path / "old.decomp")
    payload = torch.load(path, weights_only=True)
    params = dict(tiny_transcriber.get_params(deep=False))
    del params["sustain_ratio"]  # as written before the parameter existed
    payload["params"] = encode(params)
    torch.save(payload, path)
    restored = decomp.load(path)
    assert restored.sustain_ratio == 1.0
    np.testing.assert_array_equal(restored.transcribe(tiny_chords.audio).roll,
                                  tiny_transcriber.transcribe(tiny_chords.audio).roll)


def test_with_decomposer_builds_a_fitted_copy_without_touching_the_original():
    rng = np.random.default_rng(0)
    X, y = rng.random((12, 20)), np.repeat([60, 62, 64], 4)
    original = PianoTranscriber(NMF(dictionary="frames", max_iter=5, device="cpu"),
                                threshold=0.4).fit(X, y)
    other = NMF(dictionary="frames", max_iter=7, device="cpu").fit(X[::-1].copy(), y[::-1])
    copy = original.with_decomposer(other, decomposer=NMF(max_iter=7), chunk_frames=64)
    assert copy.decomposer_ is other and copy.chunk_frames == 64
    assert copy.decomposer.max_iter == 7 and copy.threshold_ == original.threshold_
    assert copy.pitches_.tolist() == [60, 62, 64] and np.isnan(copy.validation_f1_)
    assert original.chunk_frames == 1024 and original.decomposer_ is not other
    assert copy.transcribe_features(X).roll.shape == (12, 3)
    with pytest.raises(ValueError, match="'chunk_frames' parameter of PianoTranscriber"):
        original.with_decomposer(other, chunk_frames=1)


def test_transcribes_with_n_threads_and_restores_the_process_count(
        tiny_transcriber, tiny_chords, monkeypatch):
    seen = []
    decomposer = tiny_transcriber.decomposer_
    original = decomposer.source_activations

    def spy(X):
        seen.append(torch.get_num_threads())
        return original(X)

    before = torch.get_num_threads()
    monkeypatch.setattr(decomposer, "source_activations", spy)
    one = tiny_transcriber.transcribe(tiny_chords.audio)  # the default: one thread
    assert tiny_transcriber.n_threads == 1 and set(seen) == {1}
    seen.clear()
    two = copy.copy(tiny_transcriber).set_params(n_threads=2).transcribe(tiny_chords.audio)
    assert set(seen) == {2}
    seen.clear()
    torch.set_num_threads(3)
    try:
        copy.copy(tiny_transcriber).set_params(n_threads=None).transcribe(tiny_chords.audio)
        assert set(seen) == {3}  # None keeps the process's setting
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    np.testing.assert_array_equal(one.roll, two.roll)


@pytest.mark.parametrize("n_threads", [0, -1, 1.5, True])
def test_bad_n_threads_gets_the_parameter_message(tiny_transcriber, tiny_chords, n_threads):
    transcriber = copy.copy(tiny_transcriber).set_params(n_threads=n_threads)
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="'n_threads' parameter of PianoTranscriber"):
        transcriber.transcribe(tiny_chords.audio)  # set after fitting: checked here too
    features = transcriber._front_end().transform(tiny_chords.audio)
    with pytest.raises(ValueError, match="'n_threads' parameter of PianoTranscriber"):
        transcriber.transcribe_features(features)
    assert torch.get_num_threads() == before


def test_quantile_normalization_is_saved_and_ignores_outlying_frames(tmp_path, tiny_transcriber,
                                                                      tiny_chords):
    held = copy.deepcopy(tiny_transcriber).set_params(normalization=0.99, median_filter=1)
    activity = np.random.default_rng(0).random((200, 3)).astype(np.float32)
    np.testing.assert_allclose(held._postprocess(activity),
                               activity / np.quantile(activity, 0.99), rtol=1e-6)
    spiked = activity.copy()
    spiked.flat[activity.argmax()] = 50.0  # the top value 50-fold: "max" follows, q not
    np.testing.assert_allclose(np.delete(held._postprocess(spiked), activity.argmax()),
                               np.delete(held._postprocess(activity), activity.argmax()),
                               rtol=1e-6)
    by_max = copy.deepcopy(held).set_params(normalization="max")
    assert by_max._postprocess(spiked).max() == pytest.approx(1.0)
    restored = decomp.load(held.save(tmp_path / "quantile.decomp"))
    assert restored.normalization == 0.99
    np.testing.assert_array_equal(restored.transcribe(tiny_chords.audio).roll,
                                  held.transcribe(tiny_chords.audio).roll)
    for bad in (0, 1, 1.5, "median"):
        with pytest.raises(ValueError, match="normalization"):
            copy.deepcopy(tiny_transcriber).set_params(normalization=bad).transcribe(
                tiny_chords.audio)
