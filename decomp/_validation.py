"""Input checks shared by every estimator and job.

Each check names the argument, what was expected and what was got, and raises
``ValueError``/``TypeError``; nothing is silently clipped or reshaped.

Parameters are checked one way everywhere: scikit-learn's parameter constraints.
Estimators declare ``_parameter_constraints`` (checked by ``_validate_params``); plain
functions and classes that are not estimators call :func:`check_params` with the same
kind of dict. Either way a bad value raises scikit-learn's ``InvalidParameterError`` (a
``ValueError`` *and* a ``TypeError``) with one message form: "The 'n_fft' parameter of
Spectrogram must be an int in the range [1, inf). Got 0 instead." Integers are Python or
NumPy integers, never booleans (:class:`StrictInterval`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    Options,
    validate_parameter_constraints,
)

from decomp._backend import DEVICE_OPTIONS, is_device

__all__ = [
    "DEVICE",
    "GENERATOR_SEED",
    "RANDOM_STATE",
    "DeviceOption",
    "InvalidParameterError",
    "StrictInterval",
    "check_params",
    "check_spectrogram",
    "check_labels",
    "check_array_like",
    "check_audio",
    "check_finite",
]


# --- parameter constraints (scikit-learn's ``_parameter_constraints`` mechanism) ------------
class StrictInterval(Interval):
    """scikit-learn's :class:`~sklearn.utils._param_validation.Interval` without booleans.

    To Python (and to scikit-learn's ``Interval``) ``True`` is the int 1, so
    ``n_components=True`` would pass and fail later inside torch. decomp refuses it with
    the usual message: "The 'n_components' parameter of NMF must be an int in the range
    [1, inf) or None. Got True instead."
    """

    def _check_params(self) -> None:
        # A closed range of one value, [n, n], is a range too (e.g. max_sources when
        # min_sources is the number of classes); scikit-learn's Interval refuses it.
        if self.closed == "both" and self.left is not None and self.right == self.left:
            right, self.right = self.right, self.left + 1
            try:
                super()._check_params()
            finally:
                self.right = right
            return
        super()._check_params()

    def is_satisfied_by(self, val: Any) -> bool:
        if isinstance(val, (bool, np.bool_)):
            return False
        return super().is_satisfied_by(val)


class DeviceOption(Options):
    """The ``device`` values every estimator accepts (see :func:`decomp._backend.is_device`).

    Only the form is checked here; whether CUDA is there is checked when the device is
    resolved (:func:`decomp._backend.resolve_device`), with its own message. (An
    ``Options`` subclass because scikit-learn's validator takes only its own constraint
    classes.)
    """

    def __init__(self) -> None:
        super().__init__((str, torch.device), {"auto", "cpu", "cuda"})

    def is_satisfied_by(self, val: Any) -> bool:
        return is_device(val)

    def __str__(self) -> str:
        return DEVICE_OPTIONS


#: Constraint list of a ``device`` parameter.
DEVICE: list = [DeviceOption()]
#: Constraint list of a ``random_state`` parameter: scikit-learn's, without booleans.
RANDOM_STATE: list = [
    StrictInterval(Integral, 0, 2**32 - 1, closed="both"), np.random.RandomState, None,
]
#: Constraint list of a ``random_state`` that seeds a NumPy Generator
#: (``np.random.default_rng``): an int >= 0, a ``np.random.Generator`` or None.
GENERATOR_SEED: list = [
    StrictInterval(Integral, 0, None, closed="left"), np.random.Generator, None,
]


def check_params(constraints: Mapping[str, Any], params: Mapping[str, Any], caller: str
                 ) -> None:
    """Check a function's (or a non-estimator's) arguments against parameter constraints.

    The one shim between decomp and scikit-learn's validator
    (``sklearn.utils._param_validation.validate_parameter_constraints``), so a plain
    function refuses a bad argument exactly as an estimator's ``_validate_params`` does.

    Parameters
    ----------
    constraints : mapping of str to list or "no_validation"
        scikit-learn constraints by parameter name: :class:`StrictInterval`, ``Options``,
        ``StrOptions``, types, ``None``, ``"boolean"``, ...; a value is valid if it
        satisfies one of its list. Parameters without an entry are not checked.
    params : mapping of str to object
        The values, by parameter name.
    caller : str
        What the message names: the function, class or method (``"fit_flow"``,
        ``"Spectrogram"``, ``"NflowsDictionary.realnvp"``).

    Raises
    ------
    InvalidParameterError
        A subclass of both ``ValueError`` and ``TypeError``, for the first parameter that
        satisfies none of its constraints, with scikit-learn's message.

    Examples
    --------
    >>> from numbers import Integral
    >>> check_params({"n_fft": [StrictInterval(Integral, 1, None, closed="left")]},
    ...              {"n_fft": 0}, "Spectrogram")
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'n_fft' parameter of \
Spectrogram must be an int in the range [1, inf). Got 0 instead.
    """
    validate_parameter_constraints(dict(constraints), dict(params), caller_name=caller)


# --- input checks ------------------------------------------------------------------------


def check_array_like(value: Any, name: str) -> Any:
    """Accept a NumPy array, a torch tensor or a (nested) sequence of numbers.

    Sequences are converted to ``float`` NumPy arrays; arrays and tensors pass unchanged.
    """
    if isinstance(value, torch.Tensor):
        return value
    if hasattr(value, "toarray") or type(value).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"Sparse data was passed for {name}, but dense data is required. Use "
            "'.toarray()' to convert to a dense numpy array."
        )
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    if value is None or isinstance(value, (str, bytes, dict)):
        raise TypeError(
            f"{name} must be a NumPy array or a torch tensor; got {type(value).__name__}."
        )
    try:
        array = np.asarray(value)
        if array.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: {name} must hold real magnitudes.")
        return array.astype(float)
    except (TypeError, ValueError) as error:
        if str(error).startswith("Complex data"):
            raise
        raise TypeError(
            f"{name} must be a NumPy array or a torch tensor of numbers; "
            f"got {type(value).__name__} that cannot be converted ({error})."
        ) from None


def check_finite(value: Any, name: str) -> None:
    """Refuse NaN or infinity in a NumPy array or torch tensor, counting the bad entries."""
    if isinstance(value, torch.Tensor):
        finite = torch.isfinite(value.detach())
    else:
        finite = np.isfinite(value)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} contains NaN or infinity ({bad} entries).")


def check_audio(audio: Any, *, name: str = "audio", allow_batch: bool = True) -> Any:
    """Check a waveform or a batch of waveforms.

    Conditions, each with its own message: array-like; real floating dtype (integer PCM
    must be scaled first, since its range is not [-1, 1]); 1 dimension (n_samples,) or,
    when ``allow_batch``, 2 dimensions (n_items, n_samples); no empty axis; finite.

    Returns
    -------
    audio : ndarray or Tensor
        The input, unchanged (sequences are converted to a float NumPy array).
    """
    audio = check_array_like(audio, name)
    if isinstance(audio, torch.Tensor):
        floating = audio.is_floating_point()
    else:
        floating = np.issubdtype(audio.dtype, np.floating)
    if not floating:
        raise TypeError(
            f"{name} must hold real floating-point samples in [-1, 1]; got dtype {audio.dtype} "
            "(scale integer PCM to floats first, e.g. int16 / 32768)."
        )
    ranks = "1 (n_samples,) or 2 (n_items, n_samples)" if allow_batch else "1 (n_samples,)"
    if audio.ndim not in ((1, 2) if allow_batch else (1,)):
        raise ValueError(
            f"{name} must have {ranks} dimensions; got an array of shape {tuple(audio.shape)}."
        )
    if any(size == 0 for size in audio.shape):
        raise ValueError(f"{name} is empty: got an array of shape {tuple(audio.shape)}.")
    values = audio.detach() if isinstance(audio, torch.Tensor) else audio
    finite = torch.isfinite(values) if isinstance(values, torch.Tensor) else np.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} contains NaN or infinity ({bad} samples).")
    return audio


def check_spectrogram(
    X: Any,
    *,
    name: str = "X",
    allow_batch: bool = True,
    n_bins: int | None = None,
    nonnegative: bool = True,
    owner: str | None = None,
) -> Any:
    """Check a magnitude spectrogram or a batch of them.

    Parameters
    ----------
    X : ndarray or Tensor of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
        Time-major magnitudes.
    name : str
        The argument's name, used in messages.
    allow_batch : bool
        Whether a 3-d batch is accepted.
    n_bins : int, optional
        The number of bins the fitted model expects.
    nonnegative : bool
        Whether negative entries are refused.
    owner : str, optional
        The estimator's name, used in the bin-count message.

    Returns
    -------
    X : ndarray or Tensor
        The input, unchanged (sequences are converted to NumPy).

    Raises
    ------
    TypeError
        If ``X`` is not array-like or not of a real floating/integer type.
    ValueError
        If ``X`` has the wrong rank, is empty, holds NaN/inf or negative values, or
        its bin count differs from ``n_bins``.
    """
    X = check_array_like(X, name)
    if (X.is_complex() if isinstance(X, torch.Tensor) else np.iscomplexobj(X)):
        raise ValueError(f"Complex data not supported: {name} must hold real magnitudes.")
    if isinstance(X, torch.Tensor):
        if X.dtype == torch.bool:
            raise TypeError(f"{name} must hold real magnitudes; got dtype {X.dtype}.")
    elif not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise TypeError(f"{name} must hold real magnitudes; got dtype {X.dtype}.")
    ranks = "2 (n_frames, n_bins) or 3 (n_items, n_frames, n_bins)" if allow_batch else (
        "2 (n_frames, n_bins)"
    )
    if X.ndim not in ((2, 3) if allow_batch else (2,)):
        raise ValueError(
            f"{name} must have {ranks} dimensions; got an array of shape {tuple(X.shape)}. "
            "Reshape your data: a single frame is X.reshape(1, -1)."
        )
    shape = tuple(X.shape)
    if shape[-1] == 0:
        raise ValueError(
            f"{name} is empty: 0 feature(s) (shape={shape}) while a minimum of 1 is required."
        )
    if any(size == 0 for size in shape):
        raise ValueError(
            f"{name} is empty: 0 sample(s) (shape={shape}) while a minimum of 1 is required."
        )
    if n_bins is not None and X.shape[-1] != n_bins:
        raise ValueError(
            f"{name} has {X.shape[-1]} features, but {owner or 'the model'} is expecting "
            f"{n_bins} features as input (the number of bins, last axis, seen in fit)."
        )
    check_finite(X, name)
    values = X.detach() if isinstance(X, torch.Tensor) else X
    if nonnegative:
        minimum = float(values.min())
        if minimum < 0:
            flat_index = int(values.argmin()) if isinstance(values, torch.Tensor) else int(
                np.argmin(values)
            )
            frame = np.unravel_index(flat_index, tuple(X.shape))[-2]
            raise ValueError(
                f"Negative values in data passed to {name}: magnitudes must be non-negative; "
                f"got a minimum of {minimum:.3g} at frame {frame}."
            )
    return X


def check_labels(y: Any, n_frames: int, *, name: str = "y") -> np.ndarray:
    """Check per-frame source labels: a 1-d sequence of ``n_frames`` hashable labels.

    Returns a NumPy array of the labels.
    """
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-d array of source labels, one per frame; "
            f"got shape {labels.shape}."
        )
    if labels.shape[0] != n_frames:
        raise ValueError(
            f"{name} has {labels.shape[0]} labels but X has {n_frames} frames; "
            "they must match."
        )
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return labels


def check_range(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    """A pair (a, b) of finite numbers with low <= a <= b <= high."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high) of numbers; got {value!r}.")
    pair = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a pair (low, high) of numbers; got {value!r}.")
        pair.append(float(item))
    a, b = pair
    if not (np.isfinite(a) and np.isfinite(b) and low <= a <= b <= high):
        raise ValueError(
            f"{name} must satisfy {low:g} <= low <= high <= {high:g}; got ({a:g}, {b:g})."
        )
    return a, b
