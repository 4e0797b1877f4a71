"""decomp.pretrained: shipped models by name, a path still works, clear errors."""

import importlib
import shutil

import numpy as np
import pytest
import torch

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
    assert module.shipped_models() == ("instruments", "instruments-slots",
                                       "instruments-count", "instruments-ensemble",
                                       "instruments-nmf", "speech", "piano-nmf",
                                       "piano-dds2", "piano-dds3")
    assert set(module.SHIPPED_SEPARATORS) <= set(module.SHIPPED_MODELS)
    files = {name: file for name, (file, _) in module.SHIPPED_MODELS.items()}
    assert files == {"instruments": "separator-instruments.decomp",
                     "instruments-slots": "separator-instruments-slots.decomp",
                     "instruments-count": "separator-instruments-count.decomp",
                     "instruments-ensemble": "separator-instruments-ensemble.decomp",
                     "instruments-nmf": "separator-instruments-nmf.decomp",
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
        "instruments, instruments-slots, instruments-count, instruments-ensemble, "
        "instruments-nmf, speech, piano-nmf, piano-dds2, piano-dds3 (or give the path of "
        "a .decomp file).")
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


@pytest.mark.parametrize(("name", "kind", "n_outputs"),
                         [("instruments", "SeparatorEnsemble", 3),
                          ("instruments-slots", "AudioSlots", 3), ("speech", "MHUNet", 2)])
def test_shipped_separators_separate_unseen_mixtures(name, kind, n_outputs):
    from decomp.data import instrument_mixtures, speech_mixtures
    from decomp.estimators import amortized
    from decomp.separation import evaluate_separation

    separator = decomp.pretrained(name, kind=getattr(amortized, kind))
    networks = [member for member in getattr(separator, "separators_", [separator])
                if isinstance(member, amortized.AmortizedSeparator)]
    assert networks and not any(network._requires_labels for network in networks)  # blind
    assert separator.n_slots_ == n_outputs
    # Mixtures no training saw: the held-out font, or new sentences of the voices.
    test = (speech_mixtures(4, duration=2.0, random_state=7) if name == "speech" else
            instrument_mixtures("musescore-lite", 4, n_sources=2, duration=2.0, random_state=7))
    estimates = separator.separate(test.mixtures)
    assert estimates.shape == (4, n_outputs, test.mixtures.shape[1])
    np.testing.assert_allclose(estimates.sum(axis=1), test.mixtures, atol=1e-4)
    scores = evaluate_separation(estimates, test.sources, test.mixtures, test.sample_rate,
                                 n_sources=test.n_sources).summary()
    # The stored weights separate (a damaged or mis-loaded file scores about 0 dB).
    assert scores["si_sdr_improvement"] > 1.5


# ---------------------------------------------------------------------------------------
# benchmarks/train_default_models.py: the staged recipes that rebuild the shipped models


@pytest.fixture
def recipes(monkeypatch):
    """benchmarks/train_default_models.py, imported with train_separators beside it."""
    from tests.conftest import BENCHMARKS, load_benchmark

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return load_benchmark("train_default_models")


def test_every_recipe_is_a_chain_of_valid_stages(recipes, tmp_path):
    parser = recipes.train_separators.build_parser()
    by_name = {}
    for stages in recipes.SEPARATOR_RECIPES.values():
        seen = set()
        for stage in stages:
            # The chain owns these flags; a stage that set them would fight it.
            assert not {"--max-epochs", "--init-from", "--checkpoint-dir",
                        "--minutes"} & set(stage.arguments), stage.name
            args = parser.parse_args(recipes.stage_arguments(stage, tmp_path))
            assert args.max_epochs == stage.epochs and args.checkpoint_dir == tmp_path / stage.name
            assert stage.init_from is None or stage.init_from in seen, stage.name
            assert by_name.setdefault(stage.name, stage) == stage  # a shared name is one stage
            seen.add(stage.name)
    shipped = {name: stages[-1] for name, stages in recipes.SEPARATOR_RECIPES.items()}
    assert set(shipped) | set(recipes.SEPARATOR_NMF) | set(recipes.SEPARATOR_ENSEMBLES) == \
        set(module.SHIPPED_SEPARATORS)
    slots = parser.parse_args(recipes.stage_arguments(shipped["instruments-slots"], tmp_path))
    assert (slots.model, slots.n_slots, slots.silence_floor_db) == ("audioslots", 3, -10.0)
    # The shipped files carry the recipes' inference settings (the others keep the
    # estimators' defaults).
    for name in shipped:
        settings = recipes.SHIPPED_INFERENCE.get(name, {"inference_overlap": 0.5})
        model = decomp.pretrained(name)
        assert {key: model.get_params()[key] for key in settings} == settings, name


def test_the_shipped_ensemble_is_its_recipe(recipes):
    from decomp.estimators.amortized import AudioSlots, MHUNet

    shipped = decomp.pretrained("instruments-ensemble")
    recipe = recipes.SEPARATOR_ENSEMBLES["instruments-ensemble"]
    assert {key: shipped.get_params()[key] for key in recipe} == recipe
    assert [type(member) for member in shipped.separators_] == [AudioSlots, MHUNet]
    assert shipped.front_end_.sample_rate == 16000 and shipped.n_slots_ == 3
    assert module.pretrained_file("instruments-ensemble").stat().st_size < 20_000


def test_the_shipped_instruments_and_its_blind_nmf_are_their_recipes(recipes):
    from decomp.estimators.amortized import AudioSlots, MHUNet
    from decomp.separation import NMFSeparator

    nmf = decomp.pretrained("instruments-nmf")
    assert isinstance(nmf, NMFSeparator) and nmf.n_slots_ == 3
    assert nmf.n_sources == recipes.SEPARATOR_NMF["instruments-nmf"]
    assert len(nmf.classes_) == 10 and nmf.model_.components_.shape[0] == 160
    shipped = decomp.pretrained("instruments")
    recipe = recipes.SEPARATOR_ENSEMBLES["instruments"]
    assert {key: shipped.get_params()[key] for key in recipe} == recipe
    assert [type(member) for member in shipped.separators_] == [AudioSlots, MHUNet,
                                                                NMFSeparator]
    assert shipped.front_end_.sample_rate == 16000 and shipped.n_slots_ == 3


def _fake_training(recipes, monkeypatch, calls):
    """Replace train_separators.train by one that records its arguments and saves a tiny
    model with a training.json, as a finished run leaves them."""
    script = recipes.train_separators

    def train(args, directory):
        calls.append(args)
        directory.mkdir(parents=True, exist_ok=True)
        path = save_tiny_separator(directory).rename(directory / "model.decomp")
        training = {"minutes": 1.0, "epochs": args.max_epochs, "best_epoch": args.max_epochs,
                    "settings": script.training_settings(args)}
        (directory / "training.json").write_text(recipes.json.dumps(training))
        return decomp.load(path), training

    monkeypatch.setattr(script, "train", train)


def test_a_chain_starts_each_stage_from_the_last_and_reuses_finished_ones(
        recipes, monkeypatch, tmp_path):
    base = ("--model", "audioslots", "--n-slots", "2")
    chain = (recipes.Stage("first", base, 3),
             recipes.Stage("second", (*base, "--learning-rate", "1e-4"), 2, init_from="first"),
             recipes.Stage("third", base, 1, init_from="second", half_precision_init=True))
    monkeypatch.setitem(recipes.SEPARATOR_RECIPES, "chained", chain)
    calls = []
    _fake_training(recipes, monkeypatch, calls)
    shipped = recipes.train_separator("chained", tmp_path, evaluate=False)
    assert [args.checkpoint_dir.name for args in calls] == ["first", "second", "third"]
    assert [args.max_epochs for args in calls] == [3, 2, 1]
    assert [args.init_from for args in calls] == [
        None, str(tmp_path / "first" / "model.decomp"),
        str(tmp_path / "second" / "model-float16.decomp")]
    # The float16 copy a later stage starts from is the stage's model, halved.
    halved = decomp.load(tmp_path / "second" / "model-float16.decomp").network_state_
    trained = decomp.load(tmp_path / "second" / "model.decomp").network_state_
    for key, value in trained.items():
        assert halved[key].dtype == torch.float16
        torch.testing.assert_close(halved[key], value.half())
    assert all(value.dtype == torch.float16 for value in shipped.network_state_.values()
               if value.is_floating_point())
    assert shipped.max_seconds is None and shipped.inference_overlap == 0.5
    monkeypatch.setitem(recipes.SHIPPED_INFERENCE, "chained", {"inference_overlap": 0.75})
    assert recipes.train_separator("chained", tmp_path, evaluate=False).inference_overlap == 0.75
    assert len(calls) == 3
    # Run again: every stage is finished, so nothing trains.
    recipes.train_separator("chained", tmp_path, evaluate=False)
    assert len(calls) == 3
    # The last stage is finished: the folders of the stages before it are not needed.
    first_shipped = (tmp_path / "third" / "model.decomp").read_bytes()
    shutil.rmtree(tmp_path / "first")
    rebuilt = recipes.train_separator("chained", tmp_path, evaluate=False)
    assert len(calls) == 3 and not (tmp_path / "first").exists()
    assert (tmp_path / "third" / "model.decomp").read_bytes() == first_shipped
    for key, value in shipped.network_state_.items():
        torch.testing.assert_close(rebuilt.network_state_[key], value)
    # Without the last stage, the chain resumes after the last finished one.
    shutil.rmtree(tmp_path / "third")
    recipes.train_separator("chained", tmp_path, evaluate=False)
    assert len(calls) == 4 and not (tmp_path / "first").exists()
    assert calls[-1].init_from == str(tmp_path / "second" / "model-float16.decomp")


def test_a_stage_folder_trained_otherwise_is_refused_or_resumed(recipes, monkeypatch, tmp_path):
    stage = recipes.Stage("only", ("--model", "audioslots", "--learning-rate", "1e-3"), 4)
    calls = []
    _fake_training(recipes, monkeypatch, calls)
    recipes.train_stage(stage, tmp_path)
    record = tmp_path / "only" / "training.json"
    training = recipes.json.loads(record.read_text())

    def rewrite(**changes):
        record.write_text(recipes.json.dumps({**training, **changes}))

    rewrite(settings={**training["settings"], "learning_rate": 3e-4, "seed": 5})
    with pytest.raises(SystemExit, match=r"differs in learning_rate, seed\); move it away"):
        recipes.train_stage(stage, tmp_path)
    rewrite(epochs=5)
    with pytest.raises(SystemExit, match=r"differs in epochs \(5, not 4\)"):
        recipes.train_stage(stage, tmp_path)
    rewrite(settings=None)
    with pytest.raises(SystemExit, match=r"the settings \(none recorded\)"):
        recipes.train_stage(stage, tmp_path)
    # A setting a run predates is compared at its default (the flag did not exist yet).
    rewrite(settings={key: value for key, value in training["settings"].items()
                      if key != "silence_floor_db"})
    recipes.train_stage(stage, tmp_path)
    assert len(calls) == 1
    rewrite(epochs=2)  # a run stopped early resumes: train_separators.train is called
    recipes.train_stage(stage, tmp_path)
    assert len(calls) == 2


def test_the_recipe_flags_reach_fit_transcriber(recipes, monkeypatch, tmp_path, capsys):
    from decomp.audio import timbre_copies
    from decomp.transcription import DDS_TIMBRE_AUGMENTATION, default_dds_settings

    calls = []

    class Stop(Exception):
        pass

    def fit(settings, protocol, **arguments):
        calls.append((settings, arguments))
        raise Stop

    def run(*argv):
        monkeypatch.setattr("sys.argv", ["train_default_models.py", *argv])
        with pytest.raises(Stop):
            recipes.main()
        return calls.pop()

    monkeypatch.setattr(recipes, "fit_transcriber", fit)
    # No flag: the shipped recipe, default_dds_settings with its augmentation.
    settings, arguments = run("--methods", "dds3", "--out", str(tmp_path))
    assert repr(settings.get_params(deep=True)) == repr(
        default_dds_settings("dds3").set_params(
            decomposer=settings.decomposer).get_params(deep=True))
    assert settings.normalization == 0.998 and settings.front_end.n_bins == 384
    assert arguments == DDS_TIMBRE_AUGMENTATION["dds3"]
    settings, arguments = run("--methods", "dds2", "--stft-bins", "256", "--flow-noise",
                              "0.1", "--partial-range", "-5", "5", "--normalization", "0.99",
                              "--out", str(tmp_path))
    assert settings.normalization == 0.99
    assert settings.front_end.n_bins == 256 and settings.decomposer.flow_noise == 0.1
    options = {"tilt_range": (0.0, 0.0), "band_range": (0.0, 0.0),
               "partial_range": (-5.0, 5.0)}
    assert arguments == {"n_timbre_copies": 1, "timbre_options": options}
    frames = np.abs(np.random.default_rng(0).standard_normal((4, 64))).astype(np.float32)
    timbre_copies(frames, np.full(4, 60), decomp.audio.Spectrogram(n_bins=64), **options)
    # The shipped models are never trained with an experiment's flags, nor NMF given them.
    for argv, message in ((["--methods", "dds3", "--flow-noise", "0.2"],
                           "--flow-noise trains an experiment"),
                          (["--methods", "nmf", "--normalization", "0.99", "--out", "x"],
                           "--normalization sets a DDS recipe, but --methods names no DDS")):
        monkeypatch.setattr("sys.argv", ["train_default_models.py", *argv])
        with pytest.raises(SystemExit):
            recipes.main()
        assert message in capsys.readouterr().err
