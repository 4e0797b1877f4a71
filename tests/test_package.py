import importlib.metadata

import pytest

import decomp
from decomp.cli import main


def test_public_api_is_reexported():
    assert decomp.NMF is decomp.estimators.NMF
    assert decomp.PianoTranscriber is decomp.transcription.PianoTranscriber
    assert decomp.load is decomp.persistence.load
    for name in decomp.__all__:
        assert hasattr(decomp, name), name


def test_version_is_the_installed_distribution(capsys):
    assert decomp.__version__ == importlib.metadata.version("decomp-audio")
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"decomp {decomp.__version__}"


def test_import_decomp_leaves_the_heavy_modules_for_first_use():
    import subprocess
    import sys

    heavy = ["sklearn", "scipy.signal", "librosa", "pretty_midi", "mir_eval", "pyro", "ray"]
    check = ("import sys, decomp; "
             f"print([name for name in {heavy!r} if name in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
    # First use imports what it needs, and later look-ups find it.
    used = subprocess.run([sys.executable, "-c", "import sys, decomp; decomp.BayesianNMF; "
                           "print('sklearn' in sys.modules, 'BayesianNMF' in vars(decomp))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert used == "True True"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        decomp.Nope  # noqa: B018
