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
