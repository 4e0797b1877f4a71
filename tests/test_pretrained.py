"""decomp.pretrained: shipped models by name, a path still works, clear errors."""

import importlib

import numpy as np
import pytest

import decomp
from decomp.estimators.amortized import AmortizedSeparator, AudioSlots
from decomp.exceptions import ModelFileError
from decomp.separation import NMFSeparator
from decomp.transcription import PianoTranscriber, pretrained_path
from tests.conftest import save_tiny_separator

# ``decomp.pretrained`` is the function; its module is reached through sys.modules.
module = importlib.import_module("decomp.pretrained")
SEPARATORS = (AmortizedSeparator, NMFSeparator)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty folder standing in for the package's ``decomp/models``."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr(module, "_models_dir", lambda: folder)
    return folder


def test_one_table_of_shipped_models():
    assert decomp.pretrained is module.pretrained and "pretrained" in decomp.__all__
    assert module.shipped_models() == ("instruments", "instruments-count", "speech",
                                       "piano-nmf", "piano-dds2", "piano-dds3")
    assert set(module.SHIPPED_SEPARATORS) <= set(module.SHIPPED_MODELS)
    files = {name: file for name, (file, _) in module.SHIPPED_MODELS.items()}
    assert files == {"instruments": "separator-instruments.decomp",
                     "instruments-count": "separator-instruments-count.decomp",
                     "speech": "separator-speech.decomp", "piano-nmf": "piano-nmf.decomp",
                     "piano-dds2": "piano-dds2.decomp", "piano-dds3": "piano-dds3.decomp"}
    assert all(description and "\n" not in description
               for _, description in module.SHIPPED_MODELS.values())
    # The transcription defaults read the same table: the same files, the same folder.
    for method in ("nmf", "dds2", "dds3"):
        assert pretrained_path(method) == module.pretrained_file(f"piano-{method}")
        assert pretrained_path(method).parent.name == "models"
        assert pretrained_path(method).parent.parent.name == "decomp"
    with pytest.raises(ValueError, match="shipped transcribers are 'nmf', 'dds2' and 'dds3'; "
                                         "got 'dds1'"):
        pretrained_path("dds1")


def test_shipped_piano_models_load_by_name():
    transcriber = decomp.pretrained("piano-dds3", kind=PianoTranscriber)
    assert isinstance(transcriber, PianoTranscriber)
    assert type(transcriber.decomposer_).__name__ == "DDS3"


def test_a_shipped_separator_loads_by_name(models_dir, tmp_path):
    saved = save_tiny_separator(tmp_path)
    saved.rename(models_dir / "separator-speech.decomp")
    separator = decomp.pretrained("speech", kind=SEPARATORS)
    assert isinstance(separator, AudioSlots)
    mixture = np.random.default_rng(0).standard_normal(1200).astype(np.float32) * 0.1
    assert separator.separate(mixture).shape == (2, 1200)
    # The other separator is not there: missing, with how to rebuild it.
    with pytest.raises(FileNotFoundError) as missing:
        decomp.pretrained("instruments")
    message = str(missing.value)
    assert "'instruments'" in message and "separator-instruments.decomp" in message
    assert "missing from this installation" in message
    assert "python benchmarks/train_default_models.py" in message and "\n" not in message


def test_a_path_still_works(tmp_path, monkeypatch, models_dir):
    saved = save_tiny_separator(tmp_path)  # tmp_path/separator.decomp
    assert isinstance(decomp.pretrained(saved), AudioSlots)  # a Path
    assert isinstance(decomp.pretrained(str(saved)), AudioSlots)  # a str with a separator
    monkeypatch.chdir(tmp_path)
    assert isinstance(decomp.pretrained("separator.decomp"), AudioSlots)  # the suffix
    (tmp_path / "mymodel").write_bytes(saved.read_bytes())
    assert isinstance(decomp.pretrained("mymodel"), AudioSlots)  # an existing file
    # A path that does not exist is load's error, not an unknown name.
    with pytest.raises(FileNotFoundError, match="no model file at 'gone.decomp'"):
        decomp.pretrained("gone.decomp")
    # A shipped name wins over a file of that name; ./name reads the file.
    (tmp_path / "instruments").write_bytes(saved.read_bytes())
    with pytest.raises(FileNotFoundError, match="missing from this installation"):
        decomp.pretrained("instruments")
    assert isinstance(decomp.pretrained("./instruments"), AudioSlots)


def test_unknown_names_are_one_line_naming_the_shipped_models():
    with pytest.raises(ValueError) as typo:
        decomp.pretrained("instrumnts")
    assert str(typo.value) == (
        "unknown model 'instrumnts' (did you mean 'instruments'?); shipped models: "
        "instruments, instruments-count, speech, piano-nmf, piano-dds2, piano-dds3 (or give "
        "the path of a .decomp file).")
    with pytest.raises(ValueError) as unknown:
        decomp.pretrained("separator")
    assert "did you mean" not in str(unknown.value)
    assert str(unknown.value).startswith("unknown model 'separator'; shipped models: ")
    with pytest.raises(TypeError, match="name_or_path must be"):
        decomp.pretrained(3)


def test_kind_is_checked_with_a_one_line_reason(tmp_path):
    saved = save_tiny_separator(tmp_path)
    assert isinstance(decomp.pretrained(saved, kind=AmortizedSeparator), AudioSlots)
    with pytest.raises(ModelFileError) as wrong:
        decomp.pretrained(saved, kind=PianoTranscriber)
    assert wrong.value.reason == "holds an AudioSlots, not a PianoTranscriber."
    assert wrong.value.path == str(saved)
    assert str(wrong.value) == f"{saved}: holds an AudioSlots, not a PianoTranscriber."
    with pytest.raises(ModelFileError) as wrong:
        decomp.pretrained("piano-dds2", kind=SEPARATORS)
    assert wrong.value.reason == ("holds a PianoTranscriber, not an AmortizedSeparator or "
                                  "an NMFSeparator.")
    with pytest.raises(TypeError, match="kind must be a class"):
        decomp.pretrained(saved, kind="separator")


def test_articles_follow_how_names_are_read():
    expected = {"AudioSlots": "an AudioSlots", "PianoTranscriber": "a PianoTranscriber",
                "NMFSeparator": "an NMFSeparator", "MHUNet": "an MHUNet", "NMF": "an NMF",
                "DDS3": "a DDS3", "SoundOfPixels": "a SoundOfPixels", "BlockVAE": "a BlockVAE"}
    assert {name: module.with_article(name) for name in expected} == expected


@pytest.mark.parametrize(("name", "n_outputs"), [("instruments", 3), ("speech", 2)])
def test_shipped_separators_separate_unseen_mixtures(name, n_outputs):
    from decomp.data import instrument_mixtures, speech_mixtures
    from decomp.estimators.amortized import MHUNet
    from decomp.separation import evaluate_separation

    separator = decomp.pretrained(name, kind=MHUNet)
    assert separator.classes_ is None and separator.n_slots_ == n_outputs  # blind heads
    # Mixtures no training saw: the held-out font, or new sentences of the voices.
    test = (instrument_mixtures("musescore-lite", 4, n_sources=2, duration=2.0, random_state=7)
            if name == "instruments" else speech_mixtures(4, duration=2.0, random_state=7))
    estimates = separator.separate(test.mixtures)
    assert estimates.shape == (4, n_outputs, test.mixtures.shape[1])
    np.testing.assert_allclose(estimates.sum(axis=1), test.mixtures, atol=1e-4)
    scores = evaluate_separation(estimates, test.sources, test.mixtures, test.sample_rate,
                                 n_sources=test.n_sources).summary()
    # The stored weights separate (a damaged or mis-loaded file scores about 0 dB).
    assert scores["si_sdr_improvement"] > 1.5
