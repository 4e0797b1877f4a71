import subprocess
import sys

import numpy as np
import pytest

import decomp.data
from decomp.audio import write_audio
from decomp.cli import main


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
    assert "broken.wav" in error and "1 of 2 file(s) failed" in error
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
    assert header.split() == ["method", "precision", "recall", "F1", "PSA", "ε-sparsity",
                              "RTF"]
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
    """A tiny AudioSlots on an 8 kHz, 33-bin front end, trained for one epoch."""
    from decomp.audio import Spectrogram
    from decomp.estimators.amortized import AudioSlots

    rng = np.random.default_rng(0)
    sources = (0.1 * rng.standard_normal((4, 2, 2000))).astype(np.float32)
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    model = AudioSlots(n_slots=2, embed_dim=16, n_layers=1, n_heads=2, decoder_hidden=16,
                       front_end=front_end, chunk_frames=16, max_epochs=1, random_state=0)
    return model.fit(sources.sum(axis=1), sources).save(tmp_path / "separator.decomp")


def test_separate_writes_one_wav_per_source(tmp_path, saved_separator, capsys):
    from decomp.audio import load_audio

    mixture = (0.1 * np.random.default_rng(1).standard_normal(3000)).astype(np.float32)
    good = write_audio(tmp_path / "mix.wav", mixture, 8000)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio")
    out = tmp_path / "stems"
    status = main(["separate", str(good), str(bad), "--model", str(saved_separator),
                   "--out", str(out), "--no-progress"])
    assert status == 1 and "1 of 2 file(s) failed" in capsys.readouterr().err
    stems = [load_audio(out / f"mix-{index}.wav", None)[0] for index in range(2)]
    assert all(stem.shape == (3000,) for stem in stems)
    np.testing.assert_allclose(stems[0] + stems[1], mixture, atol=1e-4)


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
