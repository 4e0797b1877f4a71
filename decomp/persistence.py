"""Saving and loading fitted models: ``estimator.save(path)`` and ``decomp.load(path)``.

A model file is a torch archive holding only tensors, numbers, strings, lists and
dicts (it is read with ``weights_only=True``, so loading never runs pickled code):
the class name, the hyper-parameters, the fitted state and the library version.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decomp._version import __version__
from decomp.exceptions import ModelFileError

__all__ = ["Persistent", "save", "load", "encode", "decode", "FORMAT", "FORMAT_VERSION"]

FORMAT = "decomp-model"
FORMAT_VERSION = 1
_ALLOWED_MODULE_PREFIX = "decomp."


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
        cls = type(value)
        return {"__object__": f"{cls.__module__}.{cls.__qualname__}",
                "state": encode(value.to_dict())}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a value of type {type(value).__name__}: {value!r}")


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    if "__ndarray_list__" in value:
        array = np.asarray(value["__ndarray_list__"])
        return array.astype(object) if value["dtype"] == "O" else array
    if "__tensor__" in value:
        return value["__tensor__"]
    if "__dict__" in value:
        return {decode(key): decode(item) for key, item in value["__dict__"]}
    if "__tuple__" in value:
        return tuple(decode(item) for item in value["__tuple__"])
    if "__range__" in value:
        return range(*value["__range__"])
    if "__estimator__" in value:
        return _restore(_resolve_class(value["__estimator__"]), value["params"], value["state"])
    if "__object__" in value:
        return _resolve_class(value["__object__"]).from_dict(decode(value["state"]))
    raise ModelFileError(f"unknown entry in model file: keys {sorted(value)}")


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _restore(cls: type, params: Any, state: Any) -> Any:
    estimator = cls(**decode(params))
    estimator._set_state(decode(state))
    return estimator


class Persistent:
    """Mixin for estimators that save their parameters and fitted state.

    The fitted state is every public attribute ending in ``_`` (scikit-learn's
    convention); values may be arrays, tensors, numbers, strings, containers, objects
    with ``to_dict``/``from_dict`` and other :class:`Persistent` estimators.
    """

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


def _resolve_class(qualified_name: str) -> type:
    if not qualified_name.startswith(_ALLOWED_MODULE_PREFIX):
        raise ModelFileError(
            f"the model file names class {qualified_name!r}, which is not part of decomp."
        )
    module_name, _, class_name = qualified_name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ModelFileError(
            f"the model file names class {qualified_name!r}, which this version of decomp "
            f"({__version__}) does not have."
        ) from None


def save(estimator: Any, path: str | os.PathLike) -> Path:
    """Write a fitted estimator (or any decomp object with ``_get_state``) to ``path``.

    Returns the path written. The file is written to a temporary name first and then
    moved, so an interrupted save never leaves a truncated model behind.
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
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load(path: str | os.PathLike) -> Any:
    """Load a model written by ``save``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a decomp model, is corrupt, or needs a newer decomp.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file at {str(path)!r}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged archive
        raise ModelFileError(
            f"{str(path)!r} is not a readable decomp model file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'})."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a decomp model file.")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by decomp {payload.get('library_version')} in format "
            f"{payload['format_version']}; this decomp ({__version__}) reads format "
            f"{FORMAT_VERSION} and older. Upgrade decomp to load it."
        )
    cls = _resolve_class(payload["class"])
    try:
        estimator = _restore(cls, payload["params"], payload["state"])
    except ModelFileError:
        raise
    except Exception as error:
        raise ModelFileError(
            f"{str(path)!r} holds a {payload['class']} that this decomp cannot restore "
            f"({type(error).__name__}: {error})."
        ) from None
    return estimator
