"""Parameter validation: same bad value, same message, no compute, for estimators and plain
functions alike (one mechanism: scikit-learn's constraints); no private names cross
subpackages; the transcription mechanism does not import its policy."""

from __future__ import annotations

import ast
import importlib
import re
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

import decomp
import decomp.batch
from decomp import DDS1, DDS2, DDS3, NMF
from decomp._validation import DEVICE, RANDOM_STATE, StrictInterval, check_params
from decomp.audio import Spectrogram, frame_times, roll_to_midi
from decomp.data import (
    MixtureStream,
    PianoProtocol,
    RenderedPiano,
    instrument_mixtures,
    random_chords,
    render_midi,
    speech_mixtures,
)
from decomp.estimators import dds as dds_module
from decomp.estimators import nmf as nmf_module
from decomp.flows import ConditionalGlow, NflowsDictionary, StackedRealNVP, fit_flow
from decomp.metrics import bss_eval
from decomp.separation import NMFSeparator
from decomp.separation import baselines as baselines_module

DEVICES = ("'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index) or a torch.device of type 'cpu' "
           "or 'cuda'")
RANDOM_STATES = ("an int in the range [0, 4294967295], an instance of "
                 "'numpy.random.mtrand.RandomState' or None")
POSITIVE_INT = "an int in the range [1, inf)"

# (parameter, bad value, what the message says is allowed), for every estimator.
COMMON = [
    ("max_iter", True, POSITIVE_INT),
    ("max_iter", "100", POSITIVE_INT),
    ("max_iter", 0, POSITIVE_INT),
    ("tol", "1e-4", "a float in the range [0.0, inf)"),
    ("tol", float("nan"), "a float in the range [0.0, inf)"),
    ("random_state", True, RANDOM_STATES),
    ("device", "bogus", DEVICES),
    ("device", "meta", DEVICES),
    ("device", "cuda:x", DEVICES),
    ("device", 0, DEVICES),
    ("device", torch.device("meta"), DEVICES),
]
SPECIFIC = {
    NMF: [
        ("n_components", True, f"{POSITIVE_INT} or None"),
        ("n_components", "3", f"{POSITIVE_INT} or None"),
        ("n_components", 2.0, f"{POSITIVE_INT} or None"),
        ("n_components_per_source", False, f"{POSITIVE_INT} or None"),
        ("alpha", True, "a float in the range [0.0, inf)"),
        ("l1_ratio", 1.5, "a float in the range [0.0, 1.0]"),
        ("learning_rate", float("inf"), "a float in the range (0.0, inf)"),
    ],
    DDS1: [
        ("hidden_features", True, f"{POSITIVE_INT} or None"),
        ("n_flow_steps", "4", f"{POSITIVE_INT} or None"),
        ("batch_size", True, POSITIVE_INT),
        ("max_epochs", True, "an int in the range [0, inf)"),
        ("likelihood_weight", "1", "a float in the range [0.0, inf) or None"),
        ("validation_fraction", 1.0, "a float in the range [0.0, 1.0)"),
    ],
    NMFSeparator: [
        ("n_components_per_source", True, POSITIVE_INT),
        ("mask_power", "2", "a float in the range (0.0, inf)"),
    ],
}
SPECIFIC[DDS2] = SPECIFIC[DDS1] + [("n_components_per_source", True, POSITIVE_INT)]
SPECIFIC[DDS3] = SPECIFIC[DDS2]
ESTIMATORS = [NMF, DDS1, DDS2, DDS3, NMFSeparator]
CASES = [
    pytest.param(cls, name, value, allowed, id=f"{cls.__name__}-{name}={value!r}")
    for cls in ESTIMATORS
    for name, value, allowed in COMMON + SPECIFIC[cls]
]


def _message(cls: type, name: str, value: object, allowed: str) -> str:
    return re.escape(f"The {name!r} parameter of {cls.__name__} must be {allowed}. "
                     f"Got {value!r} instead.")


@pytest.fixture
def no_compute(monkeypatch):
    """Make every entry point into computation fail: validation must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("computation started before the parameters were validated")

    for module, name in [
        (nmf_module, "initialize_nmf"), (nmf_module, "initialize_activations"),
        (nmf_module, "minimize"), (dds_module, "initialize_activations"),
        (dds_module, "minimize"), (dds_module, "fit_flow"),
        (baselines_module, "_training_stems"),
    ]:
        monkeypatch.setattr(module, name, fail)
    monkeypatch.setattr(dds_module._FlowDecomposer, "_make_flow", fail)
    monkeypatch.setattr(DDS3, "_make_flow", fail)


def _fit(estimator):
    rng = np.random.default_rng(0)
    if isinstance(estimator, NMFSeparator):
        return estimator.fit({"a": [rng.random(2000)], "b": [rng.random(2000)]})
    X = rng.random((20, 12)).astype(np.float32)
    if isinstance(estimator, NMF):
        return estimator.fit(X)
    return estimator.fit(X, np.repeat([0, 1], 10))


def _fitted(cls: type):
    """A fitted estimator, without running any engine (a fixed or untrained dictionary)."""
    if cls is NMF:
        rng = np.random.default_rng(0)
        return NMF(dictionary="frames").fit(rng.random((6, 12)), np.repeat([0, 1], 3))
    flow = (ConditionalGlow(2, 12, n_steps=1, hidden_features=4, random_state=0) if cls is DDS3
            else StackedRealNVP(2, 12, n_blocks=1, hidden_features=4, random_state=0))
    return cls.from_flow(flow, [0, 1])


@pytest.mark.parametrize(("cls", "name", "value", "allowed"), CASES)
def test_fit_refuses_bad_parameters_before_computing(no_compute, cls, name, value, allowed):
    with pytest.raises(ValueError, match=_message(cls, name, value, allowed)):
        _fit(cls(**{name: value}))


@pytest.mark.parametrize("cls", [NMF, DDS1, DDS2, DDS3])
@pytest.mark.parametrize(("name", "value", "allowed"), COMMON)
def test_transform_refuses_bad_parameters_before_computing(cls, name, value, allowed, request):
    estimator = _fitted(cls)
    request.getfixturevalue("no_compute")  # after fitting: from here nothing may compute
    estimator.set_params(**{name: value})
    with pytest.raises(ValueError, match=_message(cls, name, value, allowed)):
        estimator.transform(np.ones((5, 12), dtype=np.float32))


def test_separate_refuses_bad_parameters():
    separator = NMFSeparator()
    separator.model_ = _fitted(NMF)
    separator.classes_ = separator.model_.sources_
    separator.set_params(mask_power=True)
    with pytest.raises(ValueError, match=_message(NMFSeparator, "mask_power", True,
                                                  "a float in the range (0.0, inf)")):
        separator.separate(np.zeros(2000))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unavailable_cuda_is_refused_before_computing(no_compute, cls):
    if torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
        reason = f"but only {torch.cuda.device_count()} CUDA device(s) are visible"
    else:
        device, reason = "cuda", "but CUDA is not available"
    match = f"The 'device' parameter of {cls.__name__} is {device!r}, {reason}"
    with pytest.raises(ValueError, match=re.escape(match)):
        _fit(cls(device=device))


def test_strict_interval_refuses_booleans_only():
    integers = StrictInterval(Integral, 1, None, closed="left")
    assert integers.is_satisfied_by(3) and integers.is_satisfied_by(np.int64(3))
    assert not integers.is_satisfied_by(True) and not integers.is_satisfied_by(np.True_)
    reals = StrictInterval(Real, 0, None, closed="left")
    assert reals.is_satisfied_by(0.5) and reals.is_satisfied_by(2)
    assert not reals.is_satisfied_by(False) and not reals.is_satisfied_by(float("nan"))
    assert str(integers) == POSITIVE_INT


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", torch.device("cpu"),
                                    torch.device("cuda", 0)])
def test_device_constraint_accepts_the_documented_forms(device):
    assert DEVICE[0].is_satisfied_by(device)


@pytest.mark.parametrize("device", ["CPU", "gpu", "cuda:", "cuda:-1", "cpu:0", "mps", None, 1])
def test_device_constraint_refuses_other_values(device):
    assert not DEVICE[0].is_satisfied_by(device)
    assert str(DEVICE[0]) == DEVICES


@pytest.mark.parametrize("value", [0, 2**32 - 1, np.int64(7), np.random.RandomState(0), None])
def test_random_state_constraint_accepts_what_scikit_learn_accepts(value):
    validate_parameter_constraints({"random_state": RANDOM_STATE}, {"random_state": value},
                                   caller_name="f")


@pytest.mark.parametrize("value", [True, np.False_, -1, 2**32, "0", 1.0])
def test_random_state_constraint_refuses_booleans_and_the_rest(value):
    with pytest.raises(ValueError, match=_message(type("f", (), {}), "random_state", value,
                                                  RANDOM_STATES)):
        validate_parameter_constraints({"random_state": RANDOM_STATE}, {"random_state": value},
                                       caller_name="f")


# --- one mechanism for plain functions and non-estimators: check_params ---------------------


def test_check_params_raises_scikit_learn_error_and_message():
    constraints = {"n_fft": [StrictInterval(Integral, 1, None, closed="left")]}
    with pytest.raises(InvalidParameterError) as caught:
        check_params(constraints, {"n_fft": 0}, "Spectrogram")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)
    assert str(caught.value) == ("The 'n_fft' parameter of Spectrogram must be an int in the "
                                 "range [1, inf). Got 0 instead.")
    check_params(constraints, {"n_fft": np.int64(512), "unconstrained": object()}, "f")


def test_strict_interval_accepts_a_range_of_one_value():
    single = StrictInterval(Integral, 4, 4, closed="both")
    assert single.is_satisfied_by(4) and not single.is_satisfied_by(5)
    assert str(single) == "an int in the range [4, 4]"


def _flow_data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((20, 4)), np.repeat([0, 1], 10)


def _fit_flow(**setting):
    X, y = _flow_data()
    return fit_flow(StackedRealNVP(2, 4, n_blocks=1, hidden_features=4, random_state=0), X, y,
                    max_epochs=0, **setting)


def _stream(**setting):
    rng = np.random.default_rng(0)
    stems = rng.uniform(-0.5, 0.5, (4, 4000)).astype(np.float32)
    options = {"sample_rate": 4000, "crop_samples": 1000, "min_sources": 1, "max_sources": 2,
               "random_state": 0} | setting
    return MixtureStream(stems, ["a", "b", "c", "d"], **options)


def _rendered_piano():
    import pretty_midi

    return RenderedPiano(np.zeros(1000, np.float32), 1000, pretty_midi.PrettyMIDI(), "x")


# Entry points whose local integer checks used to disagree (some refused np.int64, some
# raised TypeError, some ValueError): (call with the value, parameter, caller, a good int).
INTEGER_ENTRY_POINTS = [
    (lambda v: Spectrogram(n_fft=v), "n_fft", "Spectrogram", 1024),
    (lambda v: Spectrogram().n_frames(v), "n_samples", "Spectrogram.n_frames", 1000),
    (lambda v: frame_times(v, 16000, 512), "n_frames", "frame_times", 3),
    (lambda v: ConditionalGlow(3, 6, n_steps=v, hidden_features=4), "n_steps",
     "ConditionalGlow", 1),
    (lambda v: StackedRealNVP(2, 4, n_blocks=v, hidden_features=4), "n_blocks",
     "StackedRealNVP", 1),
    (lambda v: NflowsDictionary.affine_coupling(2, 4, n_layers=v, hidden_features=4),
     "n_layers", "NflowsDictionary.affine_coupling", 1),
    (lambda v: _fit_flow(batch_size=v), "batch_size", "fit_flow", 8),
    (lambda v: _fit_flow(patience=v), "patience", "fit_flow", 2),
    (lambda v: _stream(crop_samples=v), "crop_samples", "MixtureStream", 1000),
    (lambda v: _stream().take(v), "n_mixtures", "MixtureStream.take", 1),
    (lambda v: _rendered_piano().frame_times(v), "hop_length", "RenderedPiano.frame_times", 100),
    (lambda v: PianoProtocol(sample_rate=v), "sample_rate", "PianoProtocol", 16000),
    (lambda v: roll_to_midi(np.ones((2, 1), bool), [0.0, 0.1], [60], program=v), "program",
     "roll_to_midi", 0),
    (lambda v: bss_eval(np.eye(2, 600), np.eye(2, 600) + 0.1, filter_length=v),
     "filter_length", "bss_eval", 8),
]
# Entry points where the argument is refused before anything is rendered (FluidSynth).
REFUSED_ONLY = [
    (lambda v: render_midi(pretty_midi_one_note(), "timgm6mb", sample_rate=v), "sample_rate",
     "render_midi"),
    (lambda v: random_chords("timgm6mb", n_chords=v), "n_chords", "random_chords"),
    (lambda v: instrument_mixtures("timgm6mb", v), "n_mixtures", "instrument_mixtures"),
    (lambda v: speech_mixtures(v), "n_mixtures", "speech_mixtures"),
    (lambda v: decomp.batch.run(None, [], "never-written", jobs=v), "jobs", "run"),
]


def pretty_midi_one_note():
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=80, pitch=60, start=0.0, end=0.1))
    midi.instruments.append(piano)
    return midi


@pytest.mark.parametrize(("call", "name", "caller", "good"), INTEGER_ENTRY_POINTS,
                         ids=[f"{caller}-{name}" for _, name, caller, _ in INTEGER_ENTRY_POINTS])
def test_numpy_integers_are_accepted_and_booleans_refused(call, name, caller, good):
    call(np.int64(good))
    _assert_refused(call, name, caller)


@pytest.mark.parametrize(("call", "name", "caller"), REFUSED_ONLY,
                         ids=[f"{caller}-{name}" for _, name, caller in REFUSED_ONLY])
def test_booleans_are_refused_before_rendering(call, name, caller):
    _assert_refused(call, name, caller)


def _assert_refused(call, name, caller):
    with pytest.raises(InvalidParameterError,
                       match=re.escape(f"The {name!r} parameter of {caller} must be ")) as caught:
        call(True)
    assert str(caught.value).endswith("Got True instead.")


# --- no private names across subpackages; the transcription layers -----------------------

PACKAGE = Path(decomp.__file__).parent


def _module_and_package(path: Path) -> tuple[str, str]:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def _package_of(module: str) -> str:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return module if path.is_dir() else module.rpartition(".")[0]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def test_no_module_imports_a_private_name_from_another_subpackage():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        _, package = _module_and_package(path)
        for line, module, names in _imports(path):
            if not module.startswith("decomp") or _package_of(module) == package:
                continue
            private = [name for name in names
                       if name.startswith("_") and not name.startswith("__")]
            offenders += [f"{path.relative_to(PACKAGE.parent)}:{line}: {module}.{name}"
                          for name in private]
    assert offenders == [], "promote these to public names:\n" + "\n".join(offenders)


def test_the_transcription_mechanism_does_not_import_its_policy():
    # Not even lazily: the package itself imports the policy, so it is refused too.
    targets = set()
    for _, module, names in _imports(PACKAGE / "transcription" / "piano.py"):
        targets |= {module, *(f"{module}.{name}" for name in names)}
    policy = sorted(target for target in targets if target == "decomp.transcription"
                    or target.startswith("decomp.transcription.defaults"))
    assert policy == []


@pytest.mark.parametrize("package", sorted(
    _module_and_package(path)[0] for path in PACKAGE.rglob("__init__.py")))
def test_public_all_lists_hold_public_names_only(package):
    module = importlib.import_module(package)
    names = [name for name in getattr(module, "__all__", []) if name != "__version__"]
    assert not [name for name in names if name.startswith("_")]
    assert all(hasattr(module, name) for name in names)
