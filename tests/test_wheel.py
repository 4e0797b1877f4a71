"""The wheel a user installs: built from this repository, installed with plain pip into a
fresh virtual environment, it transcribes and separates a WAV with the shipped models.

Slow (about a minute: the dependencies install from pip's cache, which ``make setup``
filled) and it needs the package index, like ``make setup`` itself.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*command, **options):
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            **options)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools comes from the test's environment, so the build asks
    # the index for nothing.
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", out, ROOT)
    (path,) = out.glob("*.whl")
    return path


def test_the_wheel_carries_the_package_and_its_shipped_models(wheel):
    assert wheel.name.startswith("decomp_audio-")
    names = zipfile.ZipFile(wheel).namelist()
    for model in ("piano-nmf", "piano-dds2", "piano-dds3", "separator-instruments",
                  "separator-instruments-count", "separator-instruments-ensemble",
                  "separator-speech"):
        assert f"decomp/models/{model}.decomp" in names
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/"))]
    metadata = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert "Name: decomp-audio" in metadata and "License-Expression: MIT" in metadata


def test_the_wheel_installs_into_a_fresh_environment_and_transcribes_a_wav(wheel, tmp_path):
    environment = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", environment)
    python = environment / "bin" / "python"
    # Plain pip; the constraints file only keeps these machines' local CPU build of torch.
    _run(python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel)
    _run(python, "-m", "pip", "check")

    # A user's recording: an A major triad (A4, C#5, E5) of decaying harmonic tones.
    sample_rate = 22050
    time = np.arange(2 * sample_rate) / sample_rate
    chord = sum(0.15 * np.sin(2 * np.pi * 440 * 2 ** (step / 12) * harmonic * time)
                / harmonic * np.exp(-1.5 * time)
                for step in (0, 4, 7) for harmonic in (1, 2, 3))
    sf.write(tmp_path / "chord.wav", chord.astype(np.float32), sample_rate)

    decomp = environment / "bin" / "decomp"
    # Outside the repository, so the installed package is the one imported.
    _run(decomp, "transcribe", tmp_path / "chord.wav", "--out", tmp_path / "midi", "-q",
         cwd=tmp_path)
    notes = pretty_midi.PrettyMIDI(str(tmp_path / "midi" / "chord.mid")).instruments[0].notes
    assert {69, 73, 76} <= {note.pitch for note in notes}
    _run(decomp, "separate", tmp_path / "chord.wav", "--model", "instruments",
         "--out", tmp_path / "stems", "-q", cwd=tmp_path)
    stems = sorted((tmp_path / "stems").glob("chord-*.wav"))
    assert len(stems) == 3 and all(np.isfinite(sf.read(stem)[0]).all() for stem in stems)
    version = _run(python, "-c", "import decomp, importlib.metadata as m; "
                   "print(decomp.__file__, decomp.__version__ == m.version('decomp-audio'))",
                   cwd=tmp_path).stdout.split()
    assert version[0].startswith(str(environment)) and version[1] == "True"
