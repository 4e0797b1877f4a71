import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import decomp.data
from decomp.audio import write_audio
from decomp.cli import main
from tests.conftest import save_tiny_separator


@pytest.fixture
def saved_model(tmp_path, tiny_transcriber):
    return tiny_transcriber.save(tmp_path / "model.decomp")


def test_help_runs_as_a_program():
    completed = subprocess.run([sys.executable, "-m", "decomp.cli", "--help"],
                               capture_output=True, text=True, check=True)
    assert "transcribe" in completed.stdout and "demo" in completed.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: decomp" in capsys.readouterr().out


def test_transcribe_writes_outputs_and_survives_a_bad_file(tmp_path, saved_model, tiny_chords,
                                                           capsys):
    good = write_audio(tmp_path / "chords.wav", tiny_chords.audio, tiny_chords.sample_rate)
    tiny_chords.midi.write(str(tmp_path / "chords.mid"))  # ground truth beside the audio
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF but not really a wave file")
    out = tmp_path / "out"
    status = main(["transcribe", str(bad), str(good), "--model", str(saved_model),
                   "--out", str(out), "--plot", "--no-progress"])
    assert status == 1
    error = capsys.readouterr().err
    assert "broken.wav" in error and "1 done, 1 failed: see" in error
    arrays = np.load(out / "chords.npz")
    assert set(arrays.files) == {"times", "pitches", "activations", "roll"}
    assert (out / "chords.mid").stat().st_size > 0
    assert (out / "chords.png").stat().st_size > 0
    assert not (out / "broken.npz").exists()


def test_transcribe_argument_errors(tmp_path, saved_model, capsys):
    status = main(["transcribe", "a.wav", "b.wav", "--model", str(saved_model),
                   "--out", str(tmp_path), "--reference", "a.mid"])
    assert status == 2
    assert "--reference needs one MIDI file per audio file" in capsys.readouterr().err
    assert main(["transcribe", "a.wav", "--model", str(tmp_path / "none.decomp"),
                 "--out", str(tmp_path)]) == 2
    assert "no model file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["transcribe", "a.wav"])  # --out is required


def test_demo_on_a_small_protocol(tmp_path, monkeypatch, capsys):
    # Pieces need two octaves for melody and left hand; one velocity keeps training short.
    small = decomp.data.PianoProtocol(pitches=tuple(range(48, 73)), train_velocities=(64,))
    monkeypatch.setattr(decomp.data, "DEFAULT_PROTOCOL", small)
    assert main(["demo", "--out", str(tmp_path), "--bars", "2"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("method"))
    assert header.split() == ["method", "precision", "recall", "F1", "onset-F1", "on+off-F1",
                              "PSA", "ε-sparsity", "RTF"]
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()
            if line.split() and line.split()[0] in ("nmf", "dds3")}
    assert set(rows) == {"nmf", "dds3"}
    assert all(0 <= float(value) for row in rows.values() for value in row)
    names = ["piece.wav", "piece-reference.mid"] + [
        f"piece-{method}.{extension}" for method in ("nmf", "dds3")
        for extension in ("mid", "npz", "png")]
    for name in names:
        assert (tmp_path / name).stat().st_size > 0


def test_transcribe_with_a_shipped_dds_model(tmp_path, tiny_chords):
    audio = write_audio(tmp_path / "chords.wav", tiny_chords.audio, tiny_chords.sample_rate)
    assert main(["transcribe", str(audio), "--method", "dds2", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    arrays = np.load(tmp_path / "chords.npz")
    assert arrays["pitches"].tolist() == list(range(36, 96))
    assert arrays["activations"].shape[1] == 60


@pytest.fixture
def saved_separator(tmp_path):
    return save_tiny_separator(tmp_path)


def test_separate_writes_one_wav_per_source(tmp_path, saved_separator, capsys):
    from decomp.audio import load_audio

    mixture = (0.1 * np.random.default_rng(1).standard_normal(3000)).astype(np.float32)
    good = write_audio(tmp_path / "mix.wav", mixture, 8000)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio")
    out = tmp_path / "stems"
    status = main(["separate", str(good), str(bad), "--model", str(saved_separator),
                   "--out", str(out), "--no-progress"])
    assert status == 1 and "1 done, 1 failed: see" in capsys.readouterr().err
    stems = [load_audio(out / f"mix-{index}.wav", None)[0] for index in range(2)]
    assert all(stem.shape == (3000,) for stem in stems)
    np.testing.assert_allclose(stems[0] + stems[1], mixture, atol=1e-4)


@pytest.mark.parametrize("overlap", ["0", "0.75"])
def test_separate_overlap_sets_the_models_inference_windows(tmp_path, saved_separator,
                                                            overlap):
    from decomp.audio import load_audio

    mixture = (0.1 * np.random.default_rng(2).standard_normal(4000)).astype(np.float32)
    path = write_audio(tmp_path / "mix.wav", mixture, 8000)
    out = tmp_path / "stems"
    assert main(["separate", str(path), "--model", str(saved_separator), "--overlap",
                 overlap, "--out", str(out), "--no-progress"]) == 0
    model = decomp.load(saved_separator).set_params(inference_overlap=float(overlap))
    expected = model.separate(load_audio(path, 8000)[0])
    for index, source in enumerate(expected):
        np.testing.assert_allclose(load_audio(out / f"mix-{index}.wav", None)[0], source,
                                   atol=1e-4)
    # The overlap is one of the settings the manifest fingerprints: another value reruns.
    from decomp.batch import SeparationJob, settings_hash
    hashes = {settings_hash(SeparationJob(model=str(saved_separator), inference_overlap=value))
              for value in (None, 0.0, 0.75)}
    assert len(hashes) == 3


def test_separate_overlap_errors(tmp_path, saved_separator, capsys):
    from decomp.batch import SeparationJob

    path = write_audio(tmp_path / "mix.wav", np.zeros(800, dtype=np.float32), 8000)
    for value in ("1", "-0.1", "half"):
        with pytest.raises(SystemExit):
            main(["separate", str(path), "--model", str(saved_separator), "--overlap", value,
                  "--out", str(tmp_path / "stems")])
        assert "expected a number in [0, 1)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"'inference_overlap' parameter of AudioSlots must "
                       r"be a float in the range \[0.0, 1.0\). Got 1.0 instead"):
        SeparationJob(model=str(saved_separator), inference_overlap=1.0).load()


def _two_tones(tmp_path):
    """One second of two sine tones at 16 kHz, and its WAV file ``tmp_path/mix.wav``."""
    time = np.arange(16000) / 16000
    mixture = (0.2 * np.sin(2 * np.pi * 220 * time) + 0.2 * np.sin(2 * np.pi * 1375 * time)
               ).astype(np.float32)
    return mixture, write_audio(tmp_path / "mix.wav", mixture, 16000)


def test_separate_overlap_on_the_shipped_ensemble_reaches_its_members(tmp_path):
    """--overlap on the shipped `instruments` (an ensemble) sets its members' windows."""
    from decomp.audio import load_audio

    _, path = _two_tones(tmp_path)
    out = tmp_path / "stems"
    assert main(["separate", str(path), "--model", "instruments", "--overlap", "0",
                 "--out", str(out), "--no-progress"]) == 0
    expected = decomp.pretrained("instruments").set_params(inference_overlap=0.0).separate(
        load_audio(path, None)[0])
    for index, source in enumerate(expected):
        np.testing.assert_allclose(load_audio(out / f"mix-{index}.wav", None)[0], source,
                                   atol=1e-4)


def test_separate_overlap_needs_a_windowed_separator(tmp_path, saved_nmf_separator, capsys):
    path = write_audio(tmp_path / "mix.wav", np.zeros(800, dtype=np.float32), 8000)
    assert main(["separate", str(path), "--model", str(saved_nmf_separator), "--overlap",
                 "0.5", "--out", str(tmp_path / "stems")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "an NMFSeparator",
                           "does not run in inference windows")


def test_separate_argument_errors(tmp_path, saved_separator, saved_model, capsys):
    mixture = write_audio(tmp_path / "mix.wav", np.zeros(800, dtype=np.float32), 8000)
    assert main(["separate", str(mixture), "--model", str(tmp_path / "missing.decomp"),
                 "--out", str(tmp_path)]) == 2
    assert "no model file" in capsys.readouterr().err
    assert main(["separate", str(mixture), "--model", str(saved_model),
                 "--out", str(tmp_path)]) == 2
    assert "not a separator" in capsys.readouterr().err
    # Labels for a model without classes: the file fails with the model's message.
    assert main(["separate", str(mixture), "--model", str(saved_separator), "--labels",
                 "violin", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "fitted without labels" in capsys.readouterr().err


# --- errors and safety: refusals before work, one-line errors, --debug ---------------------


def _error_lines(text):
    return [line for line in text.splitlines() if line.startswith("error:")]


def _assert_one_line_error(text, *fragments):
    """Exactly one ``error:`` line, holding every fragment, and no traceback."""
    lines = _error_lines(text)
    assert len(lines) == 1, text
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a command loads or fits a model (its checks must come first)."""
    import decomp.persistence
    import decomp.transcription

    class LoadedTooEarly(BaseException):  # not an Exception: the CLI must not catch it
        pass

    def refuse(*args, **kwargs):
        raise LoadedTooEarly("a model was loaded before the checks")

    monkeypatch.setattr(decomp.persistence, "load", refuse)
    monkeypatch.setattr(decomp.transcription, "default_transcriber", refuse)


def test_colliding_outputs_are_refused_before_any_work(tmp_path, no_model_loading, capsys):
    (tmp_path / "sub").mkdir()
    first, second = tmp_path / "s.ogg", tmp_path / "sub" / "s.wav"
    out = tmp_path / "out"
    for command in (["transcribe", "--model", str(tmp_path / "model.decomp")],
                    ["transcribe"],  # the default transcriber would be fitted: not before
                    ["separate", "--model", str(tmp_path / "separator.decomp")],
                    ["separate", "--labels", "a", "b", "--model",
                     str(tmp_path / "separator.decomp")]):
        assert main([*command, str(first), str(second), "--out", str(out)]) == 2
        _assert_one_line_error(capsys.readouterr().err, str(first), str(second),
                               "would both write")
        assert not out.exists()
    # The --help text says what happens.
    for command in ("transcribe", "separate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "rename one or run them" in " ".join(capsys.readouterr().out.split())


def test_outputs_never_overwrite_inputs_references_or_the_model(tmp_path, saved_model,
                                                                  no_model_loading, capsys):
    audio = tmp_path / "chords.wav"
    audio.write_bytes(b"audio")
    truth = tmp_path / "chords.mid"
    truth.write_bytes(b"ground truth")
    # --out on the audio's own folder would overwrite the ground truth beside it.
    assert main(["transcribe", str(audio), "--model", str(saved_model), "--out",
                 str(tmp_path), "--plot"]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(audio), str(truth), "ground truth")
    # ... and a --reference file in --out.
    other = tmp_path / "elsewhere"
    other.mkdir()
    reference = other / "chords.mid"
    reference.write_bytes(b"reference")
    assert main(["transcribe", str(audio), "--model", str(saved_model), "--out", str(other),
                 "--plot", "--reference", str(reference)]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(audio), str(reference), "--reference")
    # ... and the --model file, whatever its name.
    model = other / "chords.npz"
    model.write_bytes(saved_model.read_bytes())
    assert main(["transcribe", str(audio), "--model", str(model), "--out", str(other)]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(model), "--model")
    # ... and an input: a stem that separate would write, with or without --labels.
    stem = other / "chords-1.wav"
    stem.write_bytes(b"an input")
    for labels in ([], ["--labels", "1"]):
        assert main(["separate", str(audio), str(stem), "--model", str(saved_model),
                     "--out", str(other), *labels]) == 2
        _assert_one_line_error(capsys.readouterr().err, str(audio), str(stem), "input")
    assert truth.read_bytes() == b"ground truth" and reference.read_bytes() == b"reference"
    assert stem.read_bytes() == b"an input" and audio.read_bytes() == b"audio"


def test_out_must_be_a_writable_folder(tmp_path, no_model_loading, monkeypatch, capsys):
    audio = tmp_path / "mix.wav"
    model = tmp_path / "model.decomp"
    a_file = tmp_path / "taken"
    a_file.write_bytes(b"not a folder")
    for command in (["transcribe", str(audio), "--model", str(model)],
                    ["transcribe", str(audio)],
                    ["separate", str(audio), "--model", str(model)]):
        assert main([*command, "--out", str(a_file)]) == 2
        _assert_one_line_error(capsys.readouterr().err, str(a_file), "not a folder")
        assert main([*command, "--out", str(a_file / "sub")]) == 2  # cannot be created
        _assert_one_line_error(capsys.readouterr().err, str(a_file), "is a file")
    assert a_file.read_bytes() == b"not a folder"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root may write there anyway: let os.access answer as for a user
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: (
            Path(path) != locked and access(path, mode, **kwargs)))
    try:
        for command in (["transcribe", str(audio), "--model", str(model)],
                        ["separate", str(audio), "--model", str(model)]):
            for out in (locked, locked / "new"):
                assert main([*command, "--out", str(out)]) == 2
                _assert_one_line_error(capsys.readouterr().err, str(out), "not writable")
    finally:
        locked.chmod(0o700)


def test_separate_out_an_existing_file_with_a_real_model(tmp_path, saved_separator, capsys):
    mixture = write_audio(tmp_path / "mix.wav", np.zeros(800, dtype=np.float32), 8000)
    taken = tmp_path / "stems"
    taken.write_bytes(b"")
    assert main(["separate", str(mixture), "--model", str(saved_separator), "--out",
                 str(taken), "--no-progress"]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(taken))


def test_bad_model_files_are_one_line_errors(tmp_path, saved_model, capsys):
    import torch

    payload = torch.load(saved_model, weights_only=True)
    del payload["class"]
    classless = tmp_path / "classless.decomp"
    torch.save(payload, classless)
    garbage = tmp_path / "garbage.decomp"
    garbage.write_bytes(b"not a model at all")
    audio = tmp_path / "a.wav"
    for model in (classless, garbage):
        for command in ("transcribe", "separate"):
            assert main([command, str(audio), "--model", str(model), "--out",
                         str(tmp_path / "out")]) == 2
            _assert_one_line_error(capsys.readouterr().err, f"error: {model}: ")
    # The program itself prints no traceback either.
    completed = subprocess.run(
        [sys.executable, "-m", "decomp.cli", "transcribe", str(audio), "--model",
         str(classless), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert completed.returncode == 2
    _assert_one_line_error(completed.stderr, str(classless))


def test_models_of_the_wrong_kind_are_refused_up_front(tmp_path, saved_model, saved_separator,
                                                       capsys):
    audio = tmp_path / "a.wav"  # never read: the refusal comes first
    out = tmp_path / "out"
    assert main(["transcribe", str(audio), "--model", str(saved_separator),
                 "--out", str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(saved_separator), "AudioSlots",
                           "not a piano transcriber")
    assert main(["separate", str(audio), "--model", str(saved_model), "--out", str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(saved_model), "PianoTranscriber",
                           "not a separator")
    assert not out.exists()


def test_demo_bars_must_be_positive(capsys):
    for bars in ("0", "-3", "two"):
        with pytest.raises(SystemExit) as raised:
            main(["demo", "--bars", bars])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        assert "--bars" in error and ">= 1" in error and "Traceback" not in error


def test_missing_dependency_is_one_line_and_debug_shows_it(tmp_path, monkeypatch, capsys):
    import decomp.transcription
    from decomp.exceptions import MissingDependencyError

    message = ("The 'fluidsynth' program was not found on PATH; decomp renders piano data "
               "with it. Install it with `apt-get install fluidsynth`.")

    def missing(*args, **kwargs):
        raise MissingDependencyError(message)

    monkeypatch.setattr(decomp.transcription, "default_transcriber", missing)
    command = ["transcribe", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out")]
    assert main(command) == 1
    assert _assert_one_line_error(capsys.readouterr().err) == f"error: {message}"
    for debug in (["--debug", *command], [*command, "--debug"]):
        with pytest.raises(MissingDependencyError):
            main(debug)


def test_interrupt_exits_130_without_a_traceback(tmp_path, monkeypatch, capsys):
    import decomp.transcription

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(decomp.transcription, "default_transcriber", interrupted)
    assert main(["transcribe", str(tmp_path / "a.wav"), "--out", str(tmp_path)]) == 130
    error = capsys.readouterr().err
    assert error.splitlines()[-1] == "interrupted" and "Traceback" not in error


def test_unexpected_errors_per_file_are_one_line(tmp_path, saved_model, tiny_chords,
                                                 monkeypatch, capsys):
    from decomp.transcription import PianoTranscriber

    original = PianoTranscriber.transcribe

    def transcribe(self, audio, *args, **kwargs):
        if "bug" in str(audio):
            raise RuntimeError("something broke\nsecond line of detail")
        return original(self, audio, *args, **kwargs)

    monkeypatch.setattr(PianoTranscriber, "transcribe", transcribe)
    good = write_audio(tmp_path / "chords.wav", tiny_chords.audio, tiny_chords.sample_rate)
    bug = write_audio(tmp_path / "bug.wav", tiny_chords.audio, tiny_chords.sample_rate)
    out = tmp_path / "out"
    command = ["transcribe", str(bug), str(good), "--model", str(saved_model), "--out",
               str(out), "--no-progress"]
    assert main(command) == 1
    error = capsys.readouterr().err
    line = _assert_one_line_error(error)
    assert line == f"error: {bug}: RuntimeError: something broke"
    assert "second line" not in error and (out / "chords.npz").exists()
    assert main([*command, "--debug"]) == 1  # the others still run; the traceback is shown
    error = capsys.readouterr().err
    assert "Traceback" in error and "second line of detail" in error


def test_separate_streams_identical_stems_and_writes_atomically(tmp_path, saved_separator,
                                                               monkeypatch, capsys):
    import decomp
    from decomp.audio import _segments, load_audio
    from decomp.estimators.amortized import base

    monkeypatch.setattr(_segments, "STREAM_SEGMENT_FRAMES", 40)  # many segments, short file
    rng = np.random.default_rng(2)
    mixture = (0.1 * rng.standard_normal(20011)).astype(np.float32)  # 626 frames, 40 chunks
    good = write_audio(tmp_path / "mix.wav", mixture, 8000)
    out = tmp_path / "stems"
    assert main(["separate", str(good), "--model", str(saved_separator), "--out", str(out),
                 "--no-progress"]) == 0
    expected = decomp.load(saved_separator).separate(mixture)
    stems = np.stack([load_audio(out / f"mix-{index}.wav", None)[0] for index in range(2)])
    np.testing.assert_allclose(stems, expected, rtol=0, atol=1e-5)

    # A failure after some segments were written leaves neither new stem.
    original = base.stream_segments

    def failing(*args, **kwargs):
        for count, segment in enumerate(original(*args, **kwargs)):
            if count == 5:
                raise RuntimeError("interrupted")
            yield segment

    monkeypatch.setattr(base, "stream_segments", failing)
    other = write_audio(tmp_path / "other.wav", mixture, 8000)
    assert main(["separate", str(other), "--model", str(saved_separator), "--out", str(out),
                 "--no-progress"]) == 1
    assert "interrupted" in capsys.readouterr().err
    assert sorted(path.name for path in _written(out)) == ["mix-0.wav", "mix-1.wav"]


# --- shipped separators by name, and bad input ----------------------------------------------


@pytest.fixture
def shipped_dir(tmp_path, monkeypatch):
    """decomp/models stood in for by a folder holding a tiny 'instruments' separator."""
    import importlib

    folder = tmp_path / "models"
    folder.mkdir()
    save_tiny_separator(tmp_path).rename(folder / "separator-instruments.decomp")
    monkeypatch.setattr(importlib.import_module("decomp.pretrained"), "_models_dir",
                        lambda: folder)
    return folder


@pytest.fixture
def saved_nmf_separator(tmp_path):
    from decomp.audio import Spectrogram
    from decomp.separation import NMFSeparator

    rng = np.random.default_rng(0)
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    separator = NMFSeparator(n_components_per_source=2, front_end=front_end, random_state=0)
    stems = {"low": [0.1 * rng.standard_normal(2000)], "high": [rng.standard_normal(2000)]}
    return separator.fit(stems).save(tmp_path / "nmf.decomp")


def test_separate_with_a_shipped_name(tmp_path, shipped_dir, capsys):
    from decomp.audio import load_audio

    mixture = (0.1 * np.random.default_rng(1).standard_normal(3000)).astype(np.float32)
    audio = write_audio(tmp_path / "mix.wav", mixture, 8000)
    out = tmp_path / "stems"
    assert main(["separate", str(audio), "--model", "instruments", "--out", str(out),
                 "--no-progress"]) == 0
    stems = [load_audio(out / f"mix-{index}.wav", None)[0] for index in range(2)]
    np.testing.assert_allclose(stems[0] + stems[1], mixture, atol=1e-4)
    assert _error_lines(capsys.readouterr().err) == []
    with pytest.raises(SystemExit):
        main(["separate", "--help"])
    # argparse may wrap a line after a name's hyphen.
    assert ("instruments, instruments-slots, instruments-count, instruments-ensemble, "
            "instruments-nmf, speech") in " ".join(
        capsys.readouterr().out.split()).replace("- ", "-")


def test_shipped_names_unknown_missing_or_of_the_wrong_kind(tmp_path, shipped_dir, capsys):
    audio = tmp_path / "a.wav"  # never read: every refusal comes first
    out = tmp_path / "out"
    assert main(["separate", str(audio), "--model", "instrumnts", "--out", str(out)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert line == ("error: unknown model 'instrumnts' (did you mean 'instruments'?); shipped "
                    "models: instruments, instruments-slots, instruments-count, "
                    "instruments-ensemble, instruments-nmf, speech, piano-nmf, piano-dds2, "
                    "piano-dds3 (or give the path of a .decomp file).")
    assert main(["separate", str(audio), "--model", "speech", "--out", str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "speech", "missing from this installation",
                           "python benchmarks/train_default_models.py")
    assert main(["transcribe", str(audio), "--model", "instruments", "--out", str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "error: instruments: holds an AudioSlots",
                           "not a piano transcriber")
    assert not out.exists()


def test_transcribe_and_separate_take_shipped_piano_names(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    out = tmp_path / "out"
    assert main(["separate", str(audio), "--model", "piano-dds2", "--out", str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "piano-dds2: holds a PianoTranscriber",
                           "not a separator")
    with pytest.raises(SystemExit):
        main(["transcribe", "--help"])
    assert "piano-dds2, piano-dds3" in " ".join(capsys.readouterr().out.split())


def test_separate_tells_once_that_a_file_is_resampled(tmp_path, saved_separator,
                                                       saved_nmf_separator, capsys):
    from decomp.audio import load_audio

    t = np.arange(16000) / 16000
    audio = write_audio(tmp_path / "mix.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(
        np.float32), 16000)
    for model in (saved_separator, saved_nmf_separator):  # the library warns for the latter
        out = tmp_path / f"stems-{model.stem}"
        assert main(["separate", str(audio), "--model", str(model), "--out", str(out),
                     "--no-progress"]) == 0
        warned = [line for line in capsys.readouterr().err.splitlines()
                  if line.startswith("warning:")]
        assert warned == [f"warning: Audio file {str(audio)!r} is sampled at 16000 Hz; "
                          "resampling it to 8000 Hz, the model's rate."], model
        stems = sorted(_written(out))
        assert len(stems) == 2
        for stem in stems:
            samples, rate = load_audio(stem, None)
            assert rate == 8000 and samples.shape == (8000,)


def test_separate_a_silent_file_gives_silent_stems(tmp_path, saved_separator,
                                                   saved_nmf_separator, capsys):
    from decomp.audio import load_audio
    from decomp.exceptions import AudioWarning

    audio = write_audio(tmp_path / "silence.wav", np.zeros(4000, dtype=np.float32), 8000)
    for model in (saved_separator, saved_nmf_separator):
        out = tmp_path / f"stems-{model.stem}"
        assert main(["separate", str(audio), "--model", str(model), "--out", str(out),
                     "--no-progress"]) == 0
        error = capsys.readouterr().err
        assert _error_lines(error) == [] and "near-silent" in error
        stems = sorted(_written(out))
        assert len(stems) == 2
        for stem in stems:
            with pytest.warns(AudioWarning, match="near-silent"):
                samples = load_audio(stem, None)[0]
            assert samples.shape == (4000,) and np.isfinite(samples).all()
            assert not np.abs(samples).any()


def test_separate_unknown_labels_name_the_known_ones(tmp_path, saved_nmf_separator, capsys):
    audio = write_audio(tmp_path / "mix.wav", 0.1 * np.ones(2000, dtype=np.float32), 8000)
    out = tmp_path / "stems"
    assert main(["separate", str(audio), "--model", str(saved_nmf_separator), "--labels",
                 "low", "violin", "--out", str(out), "--no-progress"]) == 1
    _assert_one_line_error(capsys.readouterr().err, str(audio), "unknown classes ['violin']",
                           "['high', 'low']")
    assert list(_written(out)) == []


# --- options on par with basic-pitch ---------------------------------------------------------


def test_python_dash_m_decomp_runs_the_command_line():
    completed = subprocess.run([sys.executable, "-m", "decomp", "transcribe", "--help"],
                               capture_output=True, text=True, check=True)
    assert "usage: decomp transcribe" in completed.stdout


def test_every_option_is_in_help(capsys):
    expected = {
        "transcribe": ["--method", "--model", "--out", "--device", "--threads", "--threshold",
                       "--sustain-ratio", "--min-note-length", "--pitch-range", "--save-notes",
                       "--sonify", "--plot", "--reference", "--jobs", "--address",
                       "--force", "--no-progress", "--debug", "--verbose", "--quiet"],
        "separate": ["--model", "--out", "--labels", "--device", "--jobs", "--address",
                     "--force", "--no-progress", "--debug", "--verbose", "--quiet"],
        "demo": ["--out", "--bars", "--seed", "--methods", "--debug", "--verbose", "--quiet"],
    }
    for command, options in expected.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for option in options:
            assert option in text, (command, option)
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(option in text for option in ("-v", "-q", "--debug", "python -m decomp"))


def test_the_default_transcribe_needs_no_fluidsynth(tmp_path, tiny_chords, monkeypatch,
                                                    capsys):
    import decomp.data.render
    from decomp.exceptions import MissingDependencyError
    from decomp.transcription import defaults

    def missing(*args, **kwargs):
        raise MissingDependencyError("The 'fluidsynth' program was not found on PATH.")

    monkeypatch.setattr(decomp.data.render, "_fluidsynth_binary", missing)
    monkeypatch.setattr(defaults, "fit_transcriber", missing)
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(tmp_path / "empty-cache"))
    audio = write_audio(tmp_path / "some.wav", tiny_chords.audio, tiny_chords.sample_rate)
    out = tmp_path / "d"
    assert main(["transcribe", str(audio), "--out", str(out), "--no-progress"]) == 0
    assert _error_lines(capsys.readouterr().err) == []
    assert np.load(out / "some.npz")["pitches"].tolist() == list(range(36, 96))
    assert (out / "some.mid").stat().st_size > 0


@pytest.fixture
def chords_wav(tmp_path, tiny_chords):
    return write_audio(tmp_path / "chords.wav", tiny_chords.audio, tiny_chords.sample_rate)


def _transcribe(tmp_path, model, audio, name, *options):
    out = tmp_path / name
    assert main(["transcribe", str(audio), "--model", str(model), "--out", str(out),
                 "--no-progress", *options]) == 0
    return out


def _notes(midi_path):
    import pretty_midi

    return [note for instrument in pretty_midi.PrettyMIDI(str(midi_path)).instruments
            for note in instrument.notes]


def test_save_notes_writes_a_csv_of_the_midi_notes(tmp_path, saved_model, chords_wav):
    out = _transcribe(tmp_path, saved_model, chords_wav, "out", "--save-notes")
    lines = (out / "chords.csv").read_text().splitlines()
    assert lines[0] == "onset_s,offset_s,pitch,velocity"
    rows = [line.split(",") for line in lines[1:]]
    notes = sorted((note.start, note.end, note.pitch, note.velocity)
                   for note in _notes(out / "chords.mid"))
    assert len(rows) == len(notes) > 0
    for row, note in zip(rows, notes, strict=True):  # the MIDI file rounds to its ticks
        assert float(row[0]) == pytest.approx(note[0], abs=5e-3)
        assert float(row[1]) == pytest.approx(note[1], abs=5e-3)
        assert (int(row[2]), int(row[3])) == note[2:]
        assert float(row[0]) < float(row[1]) and 1 <= int(row[3]) <= 127


def test_sonify_writes_sine_tones_as_long_as_the_recording(tmp_path, saved_model, chords_wav,
                                                           tiny_chords):
    from decomp.audio import load_audio

    out = _transcribe(tmp_path, saved_model, chords_wav, "out", "--sonify")
    audio, rate = load_audio(out / "chords-sonified.wav", None)
    assert rate == 16000
    assert abs(len(audio) - len(tiny_chords.audio)) <= 512 + 1  # to one hop
    assert 0 < np.abs(audio).max() <= 0.9 + 1e-6


def test_threshold_sustain_ratio_and_min_note_length(tmp_path, saved_model, chords_wav):
    import decomp

    plain = np.load(_transcribe(tmp_path, saved_model, chords_wav, "plain") / "chords.npz")
    low = np.load(_transcribe(tmp_path, saved_model, chords_wav, "low", "--threshold",
                              "0.05") / "chords.npz")
    high = np.load(_transcribe(tmp_path, saved_model, chords_wav, "high", "--threshold",
                               "0.9") / "chords.npz")
    assert low["roll"].sum() > plain["roll"].sum() > high["roll"].sum()
    # The options give what the same settings give from Python.
    model = decomp.load(saved_model).set_params(sustain_ratio=0.5, min_note_frames=8)
    model.threshold_ = 0.3
    expected = model.transcribe(str(chords_wav)).roll
    got = np.load(_transcribe(tmp_path, saved_model, chords_wav, "set", "--threshold", "0.3",
                              "--sustain-ratio", "0.5", "--min-note-length", "0.256")
                  / "chords.npz")["roll"]  # 0.256 s = 8 hops of 32 ms
    np.testing.assert_array_equal(got, expected)
    assert got.any()


def test_pitch_range_drops_the_other_pitches(tmp_path, saved_model, chords_wav):
    out = _transcribe(tmp_path, saved_model, chords_wav, "out", "--pitch-range", "62", "65",
                      "--save-notes")
    arrays = np.load(out / "chords.npz")
    assert arrays["pitches"].tolist() == [62, 63, 64, 65]
    assert arrays["roll"].shape[1] == arrays["activations"].shape[1] == 4
    assert all(62 <= note.pitch <= 65 for note in _notes(out / "chords.mid"))
    pitches = {int(line.split(",")[2]) for line in
               (out / "chords.csv").read_text().splitlines()[1:]}
    assert pitches <= {62, 63, 64, 65}


def test_note_option_errors(tmp_path, saved_model, chords_wav, capsys):
    base = ["transcribe", str(chords_wav), "--model", str(saved_model), "--out",
            str(tmp_path / "out")]
    for options, message in ((["--threshold", "0"], "expected a number > 0"),
                             (["--sustain-ratio", "1.5"], "expected a number in (0, 1]"),
                             (["--min-note-length", "-1"], "expected seconds >= 0"),
                             (["--pitch-range", "60", "200"], "from 0 to 127"),
                             (["--device", "tpu"], "invalid choice")):
        with pytest.raises(SystemExit) as raised:
            main([*base, *options])
        assert raised.value.code == 2 and message in capsys.readouterr().err
    assert main([*base, "--pitch-range", "70", "60"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "LOW <= HIGH")
    assert main([*base, "--pitch-range", "20", "30"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "none of the pitches", "60-67")
    assert not (tmp_path / "out").exists()


def test_reference_is_repeated_and_never_swallows_the_audio(tmp_path, saved_model,
                                                            tiny_chords, capsys):
    first = write_audio(tmp_path / "a.wav", tiny_chords.audio, tiny_chords.sample_rate)
    second = write_audio(tmp_path / "b.wav", tiny_chords.audio, tiny_chords.sample_rate)
    references = tmp_path / "references"
    references.mkdir()
    for name in ("ra.mid", "rb.mid"):
        tiny_chords.midi.write(str(references / name))
    out = tmp_path / "out"
    # The audio after --reference stays audio.
    assert main(["transcribe", "--reference", str(references / "ra.mid"), str(first),
                 "--reference", str(references / "rb.mid"), str(second), "--model",
                 str(saved_model), "--out", str(out), "--plot", "--no-progress"]) == 0
    assert all((out / f"{name}.png").stat().st_size > 0 for name in ("a", "b"))
    assert main(["transcribe", str(first), str(second), "--reference",
                 str(references / "ra.mid"), "--model", str(saved_model), "--out", str(out),
                 "--plot"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "one MIDI file per audio file (2)",
                           "got 1")


def test_device(tmp_path, saved_model, chords_wav, saved_separator, monkeypatch, capsys):
    import torch

    import decomp
    from decomp.batch import set_device as _set_device

    model = decomp.load(saved_model)
    _set_device(model, "cpu")
    assert model.decomposer_.device == "cpu"
    out = _transcribe(tmp_path, saved_model, chords_wav, "cpu", "--device", "cpu")
    assert (out / "chords.npz").exists()
    mixture = write_audio(tmp_path / "mix.wav", np.zeros(800, dtype=np.float32), 8000)
    assert main(["separate", str(mixture), "--model", str(saved_separator), "--out",
                 str(tmp_path / "stems"), "--device", "cpu", "--no-progress"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (["transcribe", str(chords_wav)], ["separate", str(mixture)]):
        assert main([*command, "--model", str(saved_model), "--out", str(tmp_path / "gpu"),
                     "--device", "cuda"]) == 2
        _assert_one_line_error(capsys.readouterr().err, "--device", "CUDA is not available")
    assert not (tmp_path / "gpu").exists()


def test_verbose_and_quiet_set_the_logging_level(tmp_path, saved_model, tiny_chords,
                                                 monkeypatch, capsys):
    import logging

    from decomp.transcription import piano

    seen = []
    original = piano.PianoTranscriber.transcribe

    def transcribe(self, audio, *args, **kwargs):
        library = logging.getLogger("decomp.transcription")
        seen.append(library.getEffectiveLevel())
        library.debug("a debug message")
        library.info("an info message")
        import warnings

        from decomp.exceptions import AudioWarning
        warnings.warn("a warning from the library", AudioWarning, stacklevel=1)
        return original(self, audio, *args, **kwargs)

    monkeypatch.setattr(piano.PianoTranscriber, "transcribe", transcribe)
    audio = write_audio(tmp_path / "chords.wav", tiny_chords.audio, tiny_chords.sample_rate)
    command = ["transcribe", str(audio), "--model", str(saved_model), "--out",
               str(tmp_path / "out")]
    assert main([*command, "--no-progress"]) == 0
    error = capsys.readouterr().err
    assert "an info message" in error and "a debug message" not in error
    assert "warning: a warning from the library" in error
    # --force: the first run is in the manifest, and would be skipped.
    command.append("--force")
    assert main(["-v", *command, "--no-progress"]) == 0
    assert "debug: a debug message" in capsys.readouterr().err
    assert main([*command, "--verbose", "--no-progress"]) == 0
    assert "debug: a debug message" in capsys.readouterr().err
    assert main([*command, "-q"]) == 0  # no progress bar, no info, no warnings
    assert capsys.readouterr().err == ""
    assert seen == [logging.INFO, logging.DEBUG, logging.DEBUG, logging.ERROR]
    # Errors still show with -q; the logger is left as it was.
    assert main(["--quiet", "transcribe", str(tmp_path / "missing.wav"), "--model",
                 str(saved_model), "--out", str(tmp_path / "out")]) == 1
    assert "missing.wav" in capsys.readouterr().err
    assert logging.getLogger("decomp").handlers == []


def _written(out):
    """The files a command wrote into ``out``, besides its manifest."""
    return [path for path in out.iterdir() if path.name != "manifest.jsonl"]


def test_threads_option(tmp_path, saved_model, chords_wav, monkeypatch, capsys):
    from decomp.batch import TranscriptionJob

    loaded = []
    original = TranscriptionJob.load

    def spy(job):
        transcriber = original(job)
        loaded.append(transcriber.n_threads)
        return transcriber

    monkeypatch.setattr(TranscriptionJob, "load", spy)
    out = _transcribe(tmp_path, saved_model, chords_wav, "two", "--threads", "2")
    assert (out / "chords.mid").exists() and loaded == [2]
    for bad in ("0", "1.5", "x"):
        with pytest.raises(SystemExit) as stopped:
            main(["transcribe", str(chords_wav), "--model", str(saved_model), "--out",
                  str(tmp_path / "bad"), "--threads", bad])
        assert stopped.value.code == 2
        assert "--threads" in capsys.readouterr().err


# The stem left out is written as digital silence, which load_audio warns about.
@pytest.mark.filterwarnings("ignore:Audio file .* is near-silent")
def test_separate_sources_tells_a_counting_separator_how_many(tmp_path, capsys):
    from decomp.audio import load_audio
    from decomp.batch import SeparationJob, settings_hash

    rng = np.random.default_rng(4)
    time = np.arange(16000) / 16000
    mixture = (0.2 * np.sin(2 * np.pi * 220 * time) + 0.2 * np.sin(2 * np.pi * 1375 * time)
               + 0.01 * rng.standard_normal(16000)).astype(np.float32)
    path = write_audio(tmp_path / "mix.wav", mixture, 16000)
    out = tmp_path / "stems"
    assert main(["separate", str(path), "--model", "instruments-count", "--sources", "2",
                 "--out", str(out), "--no-progress"]) == 0
    stems = np.stack([load_audio(out / f"mix-{index}.wav", None)[0] for index in range(3)])
    assert (np.abs(stems).max(axis=1) > 0).sum() == 2  # in every window one head is left out
    np.testing.assert_allclose(stems.sum(axis=0), load_audio(path, None)[0], atol=1e-3)
    hashes = {settings_hash(SeparationJob(model="instruments-count", n_sources=value))
              for value in (None, 2, 3)}
    assert len(hashes) == 3


@pytest.mark.filterwarnings("ignore:Audio file .* is near-silent")  # the silent stems
def test_separate_sources_with_audioslots_merges_slots(tmp_path, capsys):
    """--sources on the shipped AudioSlots: its slots are merged into that many stems."""
    from decomp.audio import load_audio

    mixture, path = _two_tones(tmp_path)
    out = tmp_path / "stems"
    assert main(["separate", str(path), "--model", "instruments-slots", "--sources", "1",
                 "--out", str(out), "--no-progress"]) == 0
    stems = np.stack([load_audio(out / f"mix-{index}.wav", None)[0] for index in range(3)])
    assert (np.abs(stems).max(axis=1) > 0).tolist() == [True, False, False]
    np.testing.assert_allclose(stems[0], mixture, atol=1e-3)  # one source: all of it


def test_separate_refine_separates_the_rest_again(tmp_path):
    """--refine on the shipped AudioSlots told three sources: the stems still sum to the
    mixture, differ from a single pass, and the setting is part of the run's identity."""
    from decomp.audio import load_audio
    from decomp.batch import SeparationJob, settings_hash

    time = np.arange(16000) / 16000
    mixture = sum(0.15 * np.sin(2 * np.pi * frequency * time)
                  for frequency in (196, 523, 1397)).astype(np.float32)
    path = write_audio(tmp_path / "mix.wav", mixture, 16000)
    stems = {}
    for refine in (None, "1"):
        out = tmp_path / f"stems-{refine}"
        assert main(["separate", str(path), "--model", "instruments-slots", "--sources", "3",
                     *(["--refine", refine] if refine else []), "--out", str(out),
                     "--no-progress"]) == 0
        stems[refine] = np.stack([load_audio(out / f"mix-{index}.wav", None)[0]
                                  for index in range(3)])
        np.testing.assert_allclose(stems[refine].sum(axis=0), mixture, atol=1e-3)
    assert not np.allclose(stems[None], stems["1"], atol=1e-3)
    hashes = {settings_hash(SeparationJob(model="instruments-slots", n_sources=3,
                                          refine_passes=value)) for value in (None, 1, 2)}
    assert len(hashes) == 3


def test_separate_refine_errors(tmp_path, saved_nmf_separator, capsys):
    path = write_audio(tmp_path / "mix.wav", np.zeros(800, dtype=np.float32), 8000)
    out = str(tmp_path / "stems")
    assert main(["separate", str(path), "--model", "instruments-slots", "--refine", "4",
                 "--out", out]) == 2
    _assert_one_line_error(capsys.readouterr().err,
                           "instruments-slots: AudioSlots(refine_passes=4)",
                           "at most n_slots_ (3) passes")
    assert main(["separate", str(path), "--model", "instruments-slots", "--sources", "3",
                 "--refine", "4", "--out", out]) == 2
    _assert_one_line_error(capsys.readouterr().err, "at most n_sources (3) passes")
    # The shipped ensemble passes the setting to its AudioSlots member, which refuses it.
    assert main(["separate", str(path), "--model", "instruments", "--refine", "4",
                 "--out", out]) == 2
    _assert_one_line_error(capsys.readouterr().err, "instruments: AudioSlots(refine_passes=4)",
                           "at most n_slots_ (3) passes")
    assert main(["separate", str(path), "--model", str(saved_nmf_separator), "--refine", "1",
                 "--out", out]) == 2
    _assert_one_line_error(capsys.readouterr().err, "an NMFSeparator, which has no refinement")


def test_separate_sources_errors(tmp_path, saved_separator, saved_nmf_separator, capsys):
    path = write_audio(tmp_path / "mix.wav", np.zeros(800, dtype=np.float32), 8000)
    out = str(tmp_path / "stems")
    # An NMFSeparator told a count separates that many of its classes, chosen blind.
    assert main(["separate", str(path), "--model", str(saved_nmf_separator), "--sources",
                 "1", "--out", out, "--no-progress"]) == 0
    assert sorted(path.name for path in Path(out).glob("*.wav")) == ["mix-0.wav"]
    assert main(["separate", str(path), "--model", str(saved_nmf_separator), "--sources",
                 "3", "--out", out]) == 2
    _assert_one_line_error(capsys.readouterr().err, "NMFSeparator(n_sources=3) separates",
                           "of its 2 fitted classes")
    assert main(["separate", str(path), "--model", str(saved_separator), "--sources", "3",
                 "--out", out]) == 2
    _assert_one_line_error(capsys.readouterr().err, "AudioSlots(n_sources=3) merges",
                           "at most n_slots_ (2)")
    assert main(["separate", str(path), "--model", "instruments-count", "--sources", "4",
                 "--out", out]) == 2
    _assert_one_line_error(capsys.readouterr().err, "instruments-count: MHUNet's n_sources=4",
                           "at most n_slots_ (3) sources")
    with pytest.raises(SystemExit):
        main(["separate", str(path), "--model", "instruments-count", "--sources", "0",
              "--out", out])
    assert "an integer >= 1" in capsys.readouterr().err


def test_separate_with_a_saved_ensemble(tmp_path, saved_separator, capsys):
    import decomp
    from decomp import SeparatorEnsemble
    from decomp.audio import load_audio
    from decomp.batch import set_device

    ensemble = SeparatorEnsemble([str(saved_separator), str(saved_separator)]).fit()
    path = ensemble.save(tmp_path / "ensemble.decomp")
    mixture = (0.1 * np.random.default_rng(2).standard_normal(3000)).astype(np.float32)
    audio = write_audio(tmp_path / "mix.wav", mixture, 8000)
    out = tmp_path / "stems"
    assert main(["separate", str(audio), "--model", str(path), "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    stems = np.stack([load_audio(out / f"mix-{index}.wav", None)[0] for index in range(2)])
    # One member twice: the ensemble separates as that member does.
    np.testing.assert_allclose(stems, decomp.load(saved_separator).separate(mixture),
                               atol=1e-4)
    loaded = decomp.load(path)
    set_device(loaded, "cpu")  # reaches the members
    assert [member.device for member in loaded.separators_] == ["cpu", "cpu"]
    # Told the count, every member is (here: the count its two slots already give).
    assert main(["separate", str(audio), "--model", str(path), "--sources", "2", "--out",
                 str(tmp_path / "told"), "--no-progress"]) == 0
    assert main(["separate", str(audio), "--model", str(path), "--sources", "3", "--out",
                 str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "AudioSlots(n_sources=3) merges")
    assert main(["separate", str(audio), "--model", str(path), "--refine", "3", "--out",
                 str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "at most n_slots_ (2) passes")
