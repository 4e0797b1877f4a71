"""Source attribution metrics on activations: precision of source attribution and sparsity."""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch

from decomp._validation import StrictInterval, check_params
from decomp.metrics._common import (
    as_float64,
    check_finite,
    check_ndim,
    check_same_shape,
    like_input,
)

__all__ = ["precision_of_source_attribution", "psa", "epsilon_sparsity"]

_ACTIVATION_LAYOUT = "(n_frames, n_sources) or (n_items, n_frames, n_sources)"


def precision_of_source_attribution(source_activations: Any, reference_roll: Any) -> Any:
    """Precision of source attribution (PSA): the share of activation mass on active sources.

    ``PSA = sum(source_activations * reference_roll) / sum(source_activations)``, summed
    over frames and sources (per item when there is a batch axis). Apply it to
    activations after the norm rescaling and the per-source summation described in
    the design notes, so that the mass is comparable across sources.

    Parameters
    ----------
    source_activations : ndarray or Tensor of shape (n_frames, n_sources) or \
(n_items, n_frames, n_sources)
        Non-negative activation of each source in each frame (any unit; only ratios
        matter).
    reference_roll : ndarray or Tensor of the same shape, bool or 0/1
        ``True`` (or 1) where the ground truth says the source is active in the frame.

    Returns
    -------
    psa : float or ndarray of shape (n_items,), or Tensor of shape () or (n_items,)
        Values in ``[0, 1]``; NaN for an item whose total activation mass is 0, where
        the ratio is undefined. NumPy in gives a ``float`` (or float64 array), a tensor in
        gives a tensor on the same device.

    Raises
    ------
    TypeError
        If an argument is not array-like.
    ValueError
        If the shapes differ or have the wrong rank, an input is empty or holds
        NaN/inf, ``source_activations`` has a negative entry, or ``reference_roll`` holds
        values other than 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> activations = np.array([[3.0, 1.0], [0.0, 4.0]])
    >>> active = np.array([[True, False], [False, True]])
    >>> precision_of_source_attribution(activations, active)
    0.875
    """
    activations = as_float64(source_activations, "source_activations")
    check_ndim(activations, "source_activations", (2, 3), _ACTIVATION_LAYOUT)
    reference = as_float64(reference_roll, "reference_roll", device=activations.device)
    check_same_shape(activations, "source_activations", reference, "reference_roll")
    check_finite(activations, "source_activations")
    check_finite(reference, "reference_roll")
    minimum = float(activations.min())
    if minimum < 0:
        raise ValueError(
            f"source_activations must be non-negative; got a minimum of {minimum:.3g}."
        )
    if not bool(((reference == 0) | (reference == 1)).all()):
        raise ValueError(
            "reference_roll must be boolean or hold only 0 and 1; got values in "
            f"[{float(reference.min()):.3g}, {float(reference.max()):.3g}]."
        )
    activations = activations.detach()
    on_active = (activations * reference).sum(dim=(-2, -1))
    total = activations.sum(dim=(-2, -1))
    # 0/0 is left to produce NaN on purpose: no mass means no attribution to score.
    with torch.no_grad():
        result = torch.where(total > 0, on_active / total, torch.full_like(total, torch.nan))
    return like_input(result, source_activations)


psa = precision_of_source_attribution


def epsilon_sparsity(activations: Any, epsilon: float = 1e-2) -> Any:
    """Epsilon-sparsity: the fraction of entries that are negligible next to the largest.

    An entry counts as zero when ``|a| <= epsilon * max|a|``, the maximum taken over the
    whole matrix (per item when there is a batch axis). This is the ε-ℓ0 measure of
    Hurley & Rickard (2009), used by the DDS paper; the paper's value of ε is not
    legible in our copy, so ``1e-2`` is our default.

    Parameters
    ----------
    activations : ndarray or Tensor of shape (n_frames, n_components) or \
(n_items, n_frames, n_components)
        Activations (any sign; magnitudes are compared).
    epsilon : float, default=1e-2
        Relative threshold, in ``[0, 1)``. With 0 only exact zeros count.

    Returns
    -------
    sparsity : float or ndarray of shape (n_items,), or Tensor of shape () or (n_items,)
        Values in ``[0, 1]``, non-decreasing in ``epsilon``. An all-zero matrix has
        sparsity 1.0.

    Raises
    ------
    TypeError
        If ``activations`` is not array-like or ``epsilon`` is not a real number.
    ValueError
        If ``activations`` has the wrong rank, is empty or holds NaN/inf, or
        ``epsilon`` is outside ``[0, 1)``.

    References
    ----------
    N. Hurley and S. Rickard, "Comparing measures of sparsity", IEEE Trans. on
    Information Theory, 55(10):4723-4741, 2009.

    Examples
    --------
    >>> import numpy as np
    >>> epsilon_sparsity(np.array([[10.0, 0.05], [0.0, 2.0]]), epsilon=0.01)
    0.5
    """
    check_params({"epsilon": [StrictInterval(Real, 0, 1, closed="left")]}, {"epsilon": epsilon},
                 "epsilon_sparsity")
    epsilon = float(epsilon)
    values = as_float64(activations, "activations")
    check_ndim(values, "activations", (2, 3), _ACTIVATION_LAYOUT.replace("sources", "components"))
    check_finite(values, "activations")
    magnitudes = values.detach().abs()
    largest = magnitudes.amax(dim=(-2, -1), keepdim=True)
    negligible = magnitudes <= epsilon * largest
    result = negligible.to(torch.float64).mean(dim=(-2, -1))
    return like_input(result, activations)
