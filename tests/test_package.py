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
    assert decomp.__version__ == importlib.metadata.version("decomp")
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"decomp {decomp.__version__}"
