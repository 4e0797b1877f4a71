"""Conversions between NumPy and torch, and device/dtype resolution.

Every estimator accepts NumPy arrays or torch tensors; NumPy in gives NumPy out,
a tensor in gives a tensor out on the same device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["resolve_device", "resolve_dtype", "to_tensor", "like_input", "is_tensor"]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    np.float32: torch.float32,
    np.float64: torch.float64,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``"auto"``/``None``/a name into a :class:`torch.device`.

    ``"auto"`` (and ``None``) picks CUDA when it is available, the CPU otherwise.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    return resolved


def resolve_dtype(dtype: Any) -> torch.dtype:
    """Map ``"float32"``/``"float64"`` (or the NumPy/torch types) to a torch dtype."""
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.") from None


def is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def to_tensor(value: Any, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Convert an array-like to a tensor on ``device`` with ``dtype`` (no copy when possible)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=dtype)
    array = np.asarray(value)
    if not array.flags.writeable:
        # torch cannot wrap read-only memory (e.g. a memmap) without a warning.
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


def like_input(result: torch.Tensor, reference: Any) -> Any:
    """Return ``result`` as the same kind of object as ``reference``.

    A tensor reference gives a tensor on the reference's device; anything else gives
    a NumPy array.
    """
    if isinstance(reference, torch.Tensor):
        return result.detach().to(reference.device)
    return result.detach().cpu().numpy()
