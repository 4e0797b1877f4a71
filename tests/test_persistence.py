"""Model files: round trips, and loading that only ever restores registered decomp classes.

Every crafted file below would run a command, write a file or exit the process if
loading resolved names freely (as it once did: any attribute of any ``decomp.*`` module,
called with keyword arguments from the file). Each test checks that loading raises
:class:`ModelFileError` and that the sentinel the gadget would create never appears.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator

import decomp
from decomp import NMF
from decomp.exceptions import ModelFileError
from decomp.persistence import (
    FORMAT,
    FORMAT_VERSION,
    Persistent,
    decode,
    encode,
    register_value_type,
    registered_classes,
)

# Callables of decomp that a permissive resolver (any attribute of any decomp module,
# called with the file's keyword arguments) would run: they run a program, write a file
# or exit the process. test_crafted_files_are_real_exploits checks that they do.
REAL_GADGETS = (
    "decomp.data.render.run_writing_wav",
    "decomp.audio.io.write_audio",
    "decomp.persistence.save",
    "decomp.cli.main",
)
# Further names a crafted file might try: outside decomp, or not plain functions.
GADGETS = REAL_GADGETS + (
    "decomp.persistence.register_value_type",
    "decomp.data.render.subprocess.run",
    "builtins.exec",
    "os.system",
    "subprocess.Popen",
    "decomp.estimators.nmf.NMF.__init__",
    "decomp.estimators.nmf.NMF.__class__",
)


def _gadget_arguments(gadget: str, sentinel: Path) -> dict:
    """Exactly the keyword arguments that make ``gadget`` touch ``sentinel`` (or exit)."""
    arguments = {
        "decomp.data.render.run_writing_wav": {
            "command": ["touch", str(sentinel)], "wav_path": str(sentinel),
            "program": "touch", "context": "x"},
        "decomp.audio.io.write_audio": {
            "path": str(sentinel), "audio": np.zeros(10, np.float32), "sample_rate": 8000},
        "decomp.persistence.save": {"estimator": NMF(), "path": str(sentinel)},
        "decomp.cli.main": {"argv": ["--version"]},
        "builtins.exec": {"source": f"open({str(sentinel)!r}, 'w')"},
        "os.system": {"command": f"touch {sentinel}"},
        "subprocess.Popen": {"args": ["touch", str(sentinel)]},
        "decomp.data.render.subprocess.run": {"args": ["touch", str(sentinel)]},
    }
    return arguments.get(gadget, {"path": str(sentinel)})


def _manifest(class_name: str, params, state) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "library_version": decomp.__version__, "class": class_name,
            "params": params, "state": state}


def _write(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "SENTINEL.wav"
    yield path
    assert not path.exists(), "loading a crafted model file ran a gadget"


@pytest.fixture(scope="module")
def fitted_nmf():
    X = np.random.default_rng(0).gamma(1.0, 1.0, size=(20, 6))
    return NMF(n_components=2, max_iter=20, random_state=0).fit(X)


def test_round_trip_of_nested_values(tmp_path, fitted_nmf):
    values = {"a": (1, 2.5, "x"), 3: [None, True, range(0, 9, 3)],
              "arrays": [np.arange(4.0), np.array(["p", "q"]), torch.ones(2)],
              "estimator": fitted_nmf}
    decoded = decode(encode(values))
    assert decoded["a"] == (1, 2.5, "x") and decoded[3] == [None, True, range(0, 9, 3)]
    np.testing.assert_array_equal(decoded["arrays"][1], ["p", "q"])
    np.testing.assert_array_equal(decoded["estimator"].components_, fitted_nmf.components_)
    restored = decomp.load(fitted_nmf.save(tmp_path / "nmf.decomp"))
    np.testing.assert_array_equal(restored.components_, fitted_nmf.components_)


def test_registry_lists_models_and_value_types():
    classes = registered_classes()
    assert "decomp.estimators.nmf.NMF" in classes["estimators"]
    assert "decomp.transcription.piano.PianoTranscriber" in classes["estimators"]
    assert "decomp.flows.realnvp.StackedRealNVP" in classes["value types"]
    assert "decomp.audio.spectrogram.Spectrogram" in classes["value types"]
    everything = classes["estimators"] + classes["value types"]
    assert not any(name in everything for name in GADGETS)


@pytest.mark.parametrize("gadget", GADGETS)
def test_gadget_as_the_model_class_is_refused(tmp_path, sentinel, gadget):
    params = encode(_gadget_arguments(gadget, sentinel))
    path = _write(tmp_path / "crafted.decomp", _manifest(gadget, params, encode({})))
    with pytest.raises(ModelFileError, match="not a registered decomp estimator"):
        decomp.load(path)


@pytest.mark.parametrize("gadget", GADGETS)
@pytest.mark.parametrize("where", ["param-estimator", "param-object", "state-object",
                                   "deep-list"])
def test_gadget_nested_in_a_genuine_model_is_refused(tmp_path, sentinel, fitted_nmf, gadget,
                                                      where):
    arguments = encode(_gadget_arguments(gadget, sentinel))
    as_estimator = {"__estimator__": gadget, "params": arguments, "state": encode({})}
    as_object = {"__object__": gadget, "state": arguments}
    params = encode(fitted_nmf.get_params(deep=False))
    state = encode(fitted_nmf._get_state())
    pairs = params["__dict__"]
    if where == "param-estimator":
        pairs.append(["init", as_estimator])
    elif where == "param-object":
        pairs.append(["init", as_object])
    elif where == "state-object":
        state["__dict__"].append(["components_", as_object])
    else:
        state["__dict__"].append(["history_", [[[as_object]]]])
    path = _write(tmp_path / "crafted.decomp", _manifest("decomp.estimators.nmf.NMF", params,
                                                           state))
    with pytest.raises(ModelFileError, match="not a registered decomp"):
        decomp.load(path)


def test_cli_gadget_cannot_exit_the_process(tmp_path):
    # decomp.cli.main(argv=["--version"]) raises SystemExit: it must never be reached.
    path = _write(tmp_path / "exit.decomp", _manifest(
        "decomp.cli.main", encode({"argv": ["--version"]}), encode({})))
    with pytest.raises(ModelFileError):
        decomp.load(path)


def test_unknown_parameters_are_refused_before_construction(tmp_path, monkeypatch):
    constructed = []
    original = NMF.__init__

    @functools.wraps(original)  # keeps the signature that load checks against
    def recording_init(self, **kwargs):
        constructed.append(kwargs)
        original(self, **kwargs)

    monkeypatch.setattr(NMF, "__init__", recording_init)
    path = _write(tmp_path / "m.decomp", _manifest(
        "decomp.estimators.nmf.NMF", encode({"n_components": 2, "command": ["ls"]}),
        encode({})))
    with pytest.raises(ModelFileError, match=r"parameters it does not take: \['command'\]"):
        decomp.load(path)
    assert constructed == []


@pytest.mark.parametrize("key", ["__class__", "__dict__", "_private_", "transform", "fit",
                                 "__init_subclass__", "components"])
def test_state_may_only_set_fitted_attributes(tmp_path, key):
    path = _write(tmp_path / "m.decomp", _manifest(
        "decomp.estimators.nmf.NMF", encode({}), encode({key: encode(1)})))
    with pytest.raises(ModelFileError, match="public attribute names ending in '_'"):
        decomp.load(path)


class _RunsOnUnpickle:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def test_pickle_payloads_never_run(tmp_path, sentinel):
    raw = tmp_path / "raw-pickle.decomp"
    raw.write_bytes(pickle.dumps(_RunsOnUnpickle(sentinel), protocol=2))
    archived = tmp_path / "archived.decomp"
    torch.save({"format": FORMAT, "format_version": 1, "payload": _RunsOnUnpickle(sentinel)},
               archived)
    for path in (raw, archived):
        with pytest.raises(ModelFileError, match="not a readable decomp model file"):
            decomp.load(path)


def test_deep_nesting_is_refused(tmp_path):
    nested: list = []
    for _ in range(100):
        nested = [nested]
    path = _write(tmp_path / "deep.decomp", _manifest(
        "decomp.estimators.nmf.NMF", encode({}), {"__dict__": [["history_", nested]]}))
    with pytest.raises(ModelFileError, match="deeper than"):
        decomp.load(path)


@pytest.mark.parametrize("change, message", [
    ({"class": None}, "lacks the entries"),
    ({"class": 3}, "class entry is not a string"),
    ({"format_version": "1"}, "format_version must be a positive int"),
    ({"format_version": True}, "format_version must be a positive int"),
    ({"format_version": 0}, "format_version must be a positive int"),
    ({"format_version": 7}, "Upgrade decomp"),
    ({"library_version": 1.0}, "library_version is not a string"),
    ({"params": [1, 2]}, "parameters of decomp.estimators.nmf.NMF .* are not a mapping"),
    ({"state": "x"}, "fitted state of decomp.estimators.nmf.NMF"),
    ({"format": "other"}, "not a decomp model file"),
])
def test_malformed_manifests_get_one_clear_error(tmp_path, change, message):
    payload = _manifest("decomp.estimators.nmf.NMF", encode({}), encode({}))
    for key, value in change.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    path = _write(tmp_path / "m.decomp", payload)
    with pytest.raises(ModelFileError, match=message) as raised:
        decomp.load(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("stored, message", [
    (torch.zeros(3), "is not a mapping with text keys; got Tensor"),
    ([1, 2], "is not a mapping with text keys; got list"),
    ({1: 2}, "is not a mapping with text keys; got dict"),
    ({"config": {}}, "needs a 'config' and a 'state' mapping"),
    ({"config": torch.zeros(2), "state": {}}, "needs a 'config' and a 'state' mapping"),
])
def test_a_stored_flow_that_is_not_a_description_gets_a_clear_error(tmp_path, stored,
                                                                      message):
    # A tensor here once reached from_dict's state["config"]: torch's indexing path, with
    # its deprecation warning, instead of an error naming the model file's fault.
    flow_entry = {"__object__": "decomp.flows.realnvp.StackedRealNVP", "state": encode(stored)}
    payload = _manifest("decomp.estimators.dds.DDS2", encode({}),
                        {"__dict__": [["flow_", flow_entry]]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelFileError, match=message):
            decomp.load(_write(tmp_path / "flow.decomp", payload))


def test_unregistered_value_types_cannot_be_saved():
    class Described:
        def to_dict(self):
            return {}

        @classmethod
        def from_dict(cls, state):
            return cls()

    with pytest.raises(TypeError, match="not a registered value type"):
        encode(Described())
    register_value_type(Described)
    assert isinstance(decode(encode(Described())), Described)


def test_subclasses_of_persistent_register_themselves(tmp_path):
    class Tiny(Persistent, BaseEstimator):
        def __init__(self, size: int = 1) -> None:
            self.size = size

        def fit(self):
            self.value_ = np.arange(self.size)
            return self

    restored = decomp.load(Tiny(size=3).fit().save(tmp_path / "tiny.decomp"))
    assert isinstance(restored, Tiny) and restored.size == 3
    np.testing.assert_array_equal(restored.value_, [0, 1, 2])


def test_a_parameter_added_later_keeps_the_behaviour_of_older_files(tmp_path):
    class Grown(Persistent, BaseEstimator):
        # Files from before `sharpen` existed behaved as sharpen=False.
        _absent_params = {"sharpen": False}

        def __init__(self, size: int = 1, sharpen: bool = True) -> None:
            self.size = size
            self.sharpen = sharpen

        def fit(self):
            self.value_ = self.size
            return self

    old = _write(tmp_path / "old.decomp", _manifest(
        f"{Grown.__module__}.{Grown.__qualname__}", encode({"size": 2}), encode({})))
    assert decomp.load(old).sharpen is False
    new = decomp.load(Grown(size=2).fit().save(tmp_path / "new.decomp"))
    assert new.sharpen is True and new.size == 2


# --- property test: whatever the file holds, load returns a model or raises ModelFileError
_CLASS_NAMES = st.sampled_from(GADGETS + (
    "decomp.estimators.nmf.NMF", "decomp.transcription.piano.PianoTranscriber",
    "decomp.audio.spectrogram.Spectrogram", "decomp.flows.realnvp.StackedRealNVP",
    "decomp.separation.baselines.NMFSeparator"))
_TAGS = ("__ndarray__", "__ndarray_list__", "dtype", "__tensor__", "__dict__", "__tuple__",
         "__range__", "__estimator__", "__object__", "params", "state", "config")
_LEAVES = (st.none() | st.booleans() | st.integers(-3, 64) | st.floats(allow_nan=True)
           | st.text(max_size=8) | _CLASS_NAMES
           | st.builds(lambda n: torch.zeros(n), st.integers(0, 3)))


def _nodes(children):
    keys = st.sampled_from(_TAGS) | st.text(max_size=6)
    return (st.lists(children, max_size=4)
            | st.dictionaries(keys, children, max_size=4)
            | st.builds(lambda name, params, state: {"__estimator__": name, "params": params,
                                                     "state": state},
                        _CLASS_NAMES, children, children)
            | st.builds(lambda name, state: {"__object__": name, "state": state},
                        _CLASS_NAMES, children)
            | st.builds(lambda pairs: {"__dict__": pairs},
                        st.lists(st.lists(children, min_size=2, max_size=2), max_size=3)))


_VALUES = st.recursive(_LEAVES, _nodes, max_leaves=25)


def _load_safely(path: Path, sentinel: Path):
    try:
        loaded = decomp.load(path)
    except ModelFileError:
        loaded = None
    assert not sentinel.exists()
    assert loaded is None or isinstance(loaded, Persistent)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(class_name=_CLASS_NAMES, params=_VALUES, state=_VALUES,
       extra=st.dictionaries(st.text(max_size=6), _VALUES, max_size=2))
def test_random_manifests_load_or_raise_model_file_error(tmp_path, class_name, params, state,
                                                         extra):
    sentinel = tmp_path / "SENTINEL.wav"
    payload = {**extra, **_manifest(class_name, params, state)}
    _load_safely(_write(tmp_path / "random.decomp", payload), sentinel)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_archives_load_or_raise_model_file_error(tmp_path, fitted_nmf, data):
    sentinel = tmp_path / "SENTINEL.wav"
    genuine = io.BytesIO()
    torch.save(_manifest("decomp.estimators.nmf.NMF", encode(fitted_nmf.get_params()),
                         encode(fitted_nmf._get_state())), genuine)
    content = bytearray(genuine.getvalue())
    kind = data.draw(st.sampled_from(["flip", "truncate", "random", "member"]))
    if kind == "flip":
        for index in data.draw(st.lists(st.integers(0, len(content) - 1), min_size=1,
                                        max_size=8)):
            content[index] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        content = content[:data.draw(st.integers(0, len(content) - 1))]
    elif kind == "random":
        content = bytearray(data.draw(st.binary(max_size=512)))
    else:
        # A valid zip whose pickle names a gadget global: the weights-only unpickler
        # must refuse it.
        rewritten = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(bytes(content))) as source, \
                zipfile.ZipFile(rewritten, "w") as target:
            for member in source.infolist():
                blob = source.read(member)
                if member.filename.endswith("data.pkl"):
                    blob = pickle.dumps(_RunsOnUnpickle(sentinel), protocol=2)
                target.writestr(member, blob)
        content = bytearray(rewritten.getvalue())
    path = tmp_path / "damaged.decomp"
    path.write_bytes(bytes(content))
    _load_safely(path, sentinel)


@pytest.mark.parametrize("gadget", REAL_GADGETS)
def test_crafted_files_are_real_exploits(tmp_path, gadget):
    """Checks the tests above: their crafted files are real exploits, not typos.

    Resolving the file's class name the permissive way (any attribute of a ``decomp``
    module, as loading once did) and calling it with the file's parameters creates the
    sentinel (or exits), so the refusals above mean something.
    """
    import importlib

    sentinel = tmp_path / "SENTINEL.wav"
    payload = _manifest(gadget, encode(_gadget_arguments(gadget, sentinel)), encode({}))
    module_name, _, name = payload["class"].rpartition(".")
    permissive = getattr(importlib.import_module(module_name), name)
    arguments = decode(payload["params"])
    if gadget == "decomp.cli.main":
        with pytest.raises(SystemExit):
            permissive(**arguments)
        return
    if gadget == "decomp.data.render.run_writing_wav":
        arguments["wav_path"] = Path(arguments["wav_path"])
    try:
        permissive(**arguments)
    except Exception:  # noqa: S110 - touch writes no WAV, so the reader fails afterwards
        pass
    assert sentinel.exists()
