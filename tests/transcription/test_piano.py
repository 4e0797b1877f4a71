import numpy as np
import pretty_midi
import pytest
from sklearn.exceptions import NotFittedError

import decomp
from decomp import NMF
from decomp.audio import Spectrogram, write_audio
from decomp.data import labelled_frames
from decomp.metrics import frame_scores, precision_of_source_attribution
from decomp.transcription import (
    PianoTranscriber,
    activity_to_roll,
    choose_threshold,
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
    decomposer = NMF(n_components_per_source=4, max_iter=50, random_state=0)
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
