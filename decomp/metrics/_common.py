"""Input conversion and checks shared by the metric modules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from decomp._validation import check_array_like, check_finite

__all__ = [
    "as_float64",
    "check_finite",
    "check_ndim",
    "check_same_shape",
    "like_input",
    "shape_of",
]


def shape_of(value: Any) -> tuple[int, ...]:
    return tuple(value.shape)


def as_float64(value: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """Convert an array-like to a float64 tensor, refusing complex and non-numeric input.

    A tensor stays on its device unless ``device`` is given; autograd history is kept so
    that differentiable metrics stay differentiable.
    """
    value = check_array_like(value, name)
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must hold real numbers; got dtype {value.dtype}.")
        return value.to(device=value.device if device is None else device, dtype=torch.float64)
    if value.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {value.dtype}.")
    # A contiguous copy only when needed: torch refuses negative strides (a[::-1]).
    return torch.as_tensor(np.asarray(value, dtype=np.float64, order="C"), device=device)


def check_ndim(value: torch.Tensor, name: str, ndims: tuple[int, ...], layout: str) -> None:
    """Refuse a tensor whose rank is not in ``ndims``; ``layout`` spells out the axes."""
    if value.ndim not in ndims:
        raise ValueError(
            f"{name} must have shape {layout}; got an array of shape {shape_of(value)}."
        )
    if any(size == 0 for size in value.shape):
        raise ValueError(f"{name} is empty: got an array of shape {shape_of(value)}.")


def check_same_shape(first: Any, first_name: str, second: Any, second_name: str) -> None:
    if shape_of(first) != shape_of(second):
        raise ValueError(
            f"{second_name} has shape {shape_of(second)} but {first_name} has shape "
            f"{shape_of(first)}; they must match."
        )


def like_input(result: torch.Tensor, reference: Any) -> Any:
    """Return ``result`` as the kind of object ``reference`` is.

    A tensor reference gives a tensor on its device, in its floating dtype (float64 when
    the reference is not floating-point). Anything else gives float64 NumPy, and a 0-d
    result becomes a Python ``float``.
    """
    if isinstance(reference, torch.Tensor):
        dtype = reference.dtype if reference.is_floating_point() else torch.float64
        return result.to(device=reference.device, dtype=dtype)
    array = result.detach().cpu().numpy()
    if array.ndim == 0:
        return float(array)
    return array
