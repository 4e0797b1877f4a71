"""Saving and loading fitted models: ``estimator.save(path)`` and ``decomp.load(path)``.

A model file is a torch archive holding only tensors, numbers, strings, lists and
dicts: the class name, the hyper-parameters, the fitted state and the library version.

Loading is safe by construction. The archive is read with ``weights_only=True``, so no
pickled code runs, and the names in it are resolved only against a registry: the
subclasses of :class:`Persistent` (the estimators) and the registered value types
(:class:`~decomp.flows.DictionaryFlow` subclasses and
:class:`~decomp.audio.Spectrogram`). Before any constructor is called, a restored
estimator's parameters must be among its constructor's parameters and its fitted state
must name public attributes ending in ``_``. Anything else in a file (another
function or class of decomp or of any other module, an unknown key, a malformed
manifest) is refused with :class:`~decomp.exceptions.ModelFileError`, before anything is
called. What restoring a registered class does is what its constructor and
``from_dict`` do: store arguments and weights.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from decomp._files import atomic_write
from decomp._version import __version__
from decomp.exceptions import ModelFileError

__all__ = ["Persistent", "save", "load", "encode", "decode", "register_value_type",
           "registered_classes", "FORMAT", "FORMAT_VERSION"]

FORMAT = "decomp-model"
FORMAT_VERSION = 1
# Deeper nesting than any model needs; a crafted file must not exhaust the stack.
_MAX_DEPTH = 64
# A fitted attribute: public, ending in "_" (scikit-learn's convention). This also keeps
# a file from setting dunders such as ``__class__`` or private state.
_STATE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*_\Z")

# Qualified name -> class. Estimators register by subclassing Persistent; value types
# (objects saved through to_dict/from_dict) through register_value_type.
_ESTIMATOR_CLASSES: dict[str, type] = {}
_VALUE_TYPES: dict[str, type] = {}


def register_value_type(cls: type) -> type:
    """Allow ``cls`` to be saved and restored through ``to_dict`` / ``from_dict``.

    ``to_dict`` returns a mapping with text keys (:func:`load` refuses anything else
    before calling ``from_dict``). Only registered value types (and :class:`Persistent`
    estimators) are restored by :func:`load`; use as a class decorator or call it once
    per class.
    """
    if not (callable(getattr(cls, "to_dict", None)) and callable(getattr(cls, "from_dict",
                                                                          None))):
        raise TypeError(f"{cls.__name__} needs to_dict() and a classmethod from_dict().")
    _VALUE_TYPES[_qualified_name(cls)] = cls
    return cls


def registered_classes() -> dict[str, list[str]]:
    """The qualified class names :func:`load` restores, by kind (for docs and audits)."""
    _import_registrations()
    return {"estimators": sorted(_ESTIMATOR_CLASSES), "value types": sorted(_VALUE_TYPES)}


def _import_registrations() -> None:
    # Importing these packages defines (and so registers) every model class. The module
    # names are fixed here, never taken from a file.
    for module in ("decomp.estimators", "decomp.flows", "decomp.separation",
                   "decomp.transcription"):
        importlib.import_module(module)
    from decomp.audio.spectrogram import Spectrogram

    _VALUE_TYPES.setdefault(_qualified_name(Spectrogram), Spectrogram)


def encode(value: Any) -> Any:
    """Turn a value into what ``torch.load(weights_only=True)`` accepts, reversibly."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            return {"__ndarray_list__": value.tolist(), "dtype": value.dtype.kind}
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.detach().cpu()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {"__dict__": [[encode(key), encode(item)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(item) for item in value]}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, range):
        return {"__range__": [value.start, value.stop, value.step]}
    if isinstance(value, Persistent):
        return {"__estimator__": _qualified_name(type(value)),
                "params": encode(value.get_params(deep=False)),
                "state": encode(value._get_state())}
    if hasattr(value, "to_dict") and hasattr(type(value), "from_dict"):
        _import_registrations()
        name = _qualified_name(type(value))
        if _VALUE_TYPES.get(name) is not type(value):
            raise TypeError(
                f"cannot save a {type(value).__name__}: {name} is not a registered value "
                "type (see decomp.persistence.register_value_type), so it could not be "
                "loaded back."
            )
        return {"__object__": name, "state": encode(value.to_dict())}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a value of type {type(value).__name__}: {value!r}")


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`; anything :func:`encode` does not write is refused.

    Raises
    ------
    ModelFileError
        For an entry of unknown form, a class that is not registered, parameters a
        class does not take, or nesting deeper than any model needs.
    """
    return _decode(value, 0)


_ATOMS = (type(None), bool, int, float, str, torch.Tensor)


def _decode(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ModelFileError(f"the model file nests entries deeper than {_MAX_DEPTH} levels.")
    depth += 1
    if isinstance(value, list):
        return [_decode(item, depth) for item in value]
    if isinstance(value, _ATOMS):
        return value
    if not isinstance(value, dict):
        raise ModelFileError(f"unexpected entry of type {type(value).__name__} in model file.")
    keys = set(value)
    if keys == {"__ndarray__"} and isinstance(value["__ndarray__"], torch.Tensor):
        return value["__ndarray__"].numpy()
    if (keys == {"__ndarray_list__", "dtype"} and isinstance(value["__ndarray_list__"], list)
            and value["dtype"] in ("O", "U", "S")):
        array = np.asarray(_decode(value["__ndarray_list__"], depth))
        if array.dtype.kind not in "OUS":
            raise ModelFileError("a text array in the model file holds non-text entries.")
        return array.astype(object) if value["dtype"] == "O" else array
    if keys == {"__tensor__"} and isinstance(value["__tensor__"], torch.Tensor):
        return value["__tensor__"]
    if keys == {"__dict__"} and isinstance(value["__dict__"], list):
        pairs = value["__dict__"]
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            raise ModelFileError("a mapping in the model file is not a list of pairs.")
        keys_and_items = [(_decode(key, depth), _decode(item, depth)) for key, item in pairs]
        if not all(isinstance(key, (type(None), bool, int, float, str, tuple))
                   for key, _ in keys_and_items):
            raise ModelFileError("a mapping in the model file has a key of unhashable type.")
        try:
            return dict(keys_and_items)
        except TypeError:
            raise ModelFileError("a mapping in the model file has an unhashable key.") from None
    if keys == {"__tuple__"} and isinstance(value["__tuple__"], list):
        return tuple(_decode(item, depth) for item in value["__tuple__"])
    if (keys == {"__range__"} and isinstance(value["__range__"], list)
            and len(value["__range__"]) == 3
            and all(type(item) is int for item in value["__range__"])
            and value["__range__"][2] != 0):
        return range(*value["__range__"])
    if keys == {"__estimator__", "params", "state"}:
        cls = _resolve_class(value["__estimator__"], _ESTIMATOR_CLASSES, "estimator")
        return _restore(cls, value["params"], value["state"], depth)
    if keys == {"__object__", "state"}:
        cls = _resolve_class(value["__object__"], _VALUE_TYPES, "value type")
        description = _decode(value["state"], depth)
        # Every to_dict returns a mapping with text keys; anything else would reach
        # from_dict's indexing (a tensor indexed by a string, say) instead of this error.
        if not isinstance(description, dict) or not all(
                isinstance(key, str) for key in description):
            raise ModelFileError(
                f"the stored {_qualified_name(cls)} in the model file is not a mapping "
                f"with text keys; got {type(description).__name__}."
            )
        return cls.from_dict(description)
    shown = sorted(str(key)[:40] for key in keys)[:8]
    raise ModelFileError(f"unknown entry in model file: keys {shown}")


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _parameter_names(cls: type) -> set[str]:
    signature = inspect.signature(cls.__init__)
    return {parameter.name for parameter in list(signature.parameters.values())[1:]
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}


def _restore(cls: type, params: Any, state: Any, depth: int = 0) -> Any:
    """``cls(**params)`` with its fitted ``state``, after checking both against ``cls``."""
    params = _decode(params, depth)
    state = _decode(state, depth)
    name = _qualified_name(cls)
    if not isinstance(params, dict) or not all(isinstance(key, str) for key in params):
        raise ModelFileError(f"the parameters of {name} in the model file are not a mapping.")
    unknown = sorted(set(params) - _parameter_names(cls))
    if unknown:
        raise ModelFileError(
            f"the model file gives {name} parameters it does not take: {unknown[:8]}."
        )
    if not isinstance(state, dict) or not all(
            isinstance(key, str) and _STATE_NAME.match(key) for key in state):
        bad = sorted(str(key)[:40] for key in (state if isinstance(state, dict) else {})
                     if not (isinstance(key, str) and _STATE_NAME.match(key)))
        raise ModelFileError(
            f"the fitted state of {name} in the model file must map public attribute names "
            f"ending in '_' to values; got {bad[:8] or type(state).__name__}."
        )
    # A parameter added after a file was written takes the value that reproduces how
    # that file's model behaved, not the new default.
    estimator = cls(**{**cls._absent_params, **params})
    estimator._set_state(state)
    return estimator


class Persistent:
    """Mixin for estimators that save their parameters and fitted state.

    The fitted state is every public attribute ending in ``_`` (scikit-learn's
    convention); values may be arrays, tensors, numbers, strings, containers, registered
    value types (see :func:`register_value_type`) and other :class:`Persistent`
    estimators. Every subclass is registered for :func:`load` when it is defined.

    A subclass that gains a parameter lists in ``_absent_params`` the value that keeps
    the behaviour of files written before it existed (when it differs from the default):
    :func:`load` gives that value to a file that does not store the parameter.
    """

    _absent_params: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _ESTIMATOR_CLASSES[_qualified_name(cls)] = cls

    def _get_state(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in vars(self).items()
            if key.endswith("_") and not key.startswith("_")
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the fitted object to ``path``; load it back with :func:`decomp.load`.

        Raises
        ------
        NotFittedError
            If it has not been fitted.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        return save(self, path)


def _resolve_class(qualified_name: Any, registry: dict[str, type], kind: str) -> type:
    """The registered class of that name; nothing is imported or called by name."""
    if not isinstance(qualified_name, str):
        raise ModelFileError(
            f"the model file names a class by a {type(qualified_name).__name__}, not a string."
        )
    _import_registrations()
    cls = registry.get(qualified_name)
    if cls is None:
        shown = qualified_name if len(qualified_name) <= 120 else qualified_name[:117] + "..."
        raise ModelFileError(
            f"the model file names {shown!r}, which is not a registered decomp {kind} in "
            f"this version of decomp ({__version__}); nothing was loaded."
        )
    return cls


def save(estimator: Any, path: str | os.PathLike) -> Path:
    """Write a fitted estimator (or any decomp object with ``_get_state``) to ``path``.

    Returns the path written. The file is written under a unique temporary name in the
    same folder, fsync'ed and then moved, so an interrupted save leaves the previous model
    (or none) and concurrent saves of the same path never collide.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": _qualified_name(type(estimator)),
        "params": encode(estimator.get_params(deep=False)),
        "state": encode(estimator._get_state()),
    }
    with atomic_write(path) as file:
        torch.save(payload, file)
    return path


def load(path: str | os.PathLike) -> Any:
    """Load a model written by ``save``.

    Only registered decomp classes are restored (see the module docstring): a crafted
    file cannot make loading call any other function or class.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a decomp model, is corrupt, names anything that is not a
        registered decomp class, or needs a newer decomp. The message names the file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or an os.PathLike; got {type(path).__name__}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file at {str(path)!r}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign archive
        raise ModelFileError(f"not a readable decomp model file ({_torch_load_detail(error)}).",
                             str(path)) from None
    try:
        class_name = _check_manifest(payload)
        return _restore(_resolve_class(class_name, _ESTIMATOR_CLASSES, "estimator"),
                        payload["params"], payload["state"])
    except ModelFileError as error:
        raise ModelFileError(error.reason, str(path)) from None
    except RecursionError:
        raise ModelFileError("the model file nests entries too deeply.", str(path)) from None
    except Exception as error:
        # A registered class refused the stored parameters or weights.
        raise ModelFileError(
            f"it holds a {payload['class']} that this decomp cannot restore "
            f"({type(error).__name__}: {_first_line(error)}).", str(path)
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def _torch_load_detail(error: BaseException) -> str:
    """The useful part of torch.load's message: the refused global, or the first sentence."""
    text = str(error)
    if text.startswith("Weights only load failed"):
        # torch's advice here is to load with weights_only=False: exactly what must not be
        # done with an untrusted file, so only the refused object is reported.
        refused = [line.strip() for line in text.splitlines()
                   if "GLOBAL" in line or "WeightsUnpickler error" in line]
        detail = f": {refused[0][:160].rstrip('.')}" if refused else ""
        return f"it holds pickled Python objects, which are never loaded{detail}"
    sentence = _first_line(error).split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {sentence}"


_MANIFEST_KEYS = ("format", "format_version", "library_version", "class", "params", "state")


def _check_manifest(payload: Any) -> str:
    """Check the file's top level; returns the class name it stores."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"not a decomp model file (no 'format': {FORMAT!r} entry).")
    version = payload.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(
            f"the model file's format_version must be a positive int; got {version!r:.40}; "
            "the file is damaged."
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"written by decomp {str(payload.get('library_version')):.40} in format "
            f"{version}; this decomp ({__version__}) reads format {FORMAT_VERSION} and older. "
            "Upgrade decomp to load it."
        )
    missing = [key for key in _MANIFEST_KEYS if key not in payload]
    if missing:
        raise ModelFileError(f"the model file lacks the entries {missing}; it is damaged.")
    if not isinstance(payload["library_version"], str):
        raise ModelFileError("the model file's library_version is not a string.")
    if not isinstance(payload["class"], str):
        raise ModelFileError("the model file's class entry is not a string.")
    return payload["class"]
