"""β-divergences between non-negative arrays, safe at zero.

The β-divergence family (Févotte & Idier, 2011) contains the three losses used
throughout decomp: β = 2 is half the squared Euclidean distance, β = 1 the
generalised Kullback–Leibler divergence and β = 0 the Itakura–Saito divergence.
"""

from __future__ import annotations

import torch

__all__ = ["beta_divergence", "beta_loss_to_float", "BETA_LOSSES"]

BETA_LOSSES = {"frobenius": 2.0, "euclidean": 2.0, "kullback-leibler": 1.0, "kl": 1.0,
               "itakura-saito": 0.0, "is": 0.0}
"""β-loss names accepted by :func:`beta_loss_to_float` and their β values."""


def beta_loss_to_float(beta_loss: str | float) -> float:
    """Translate a β-loss name (``"frobenius"``, ``"kullback-leibler"``, ``"itakura-saito"``,
    or the short ``"euclidean"``, ``"kl"``, ``"is"``) or a number into the float β."""
    if isinstance(beta_loss, str):
        try:
            return BETA_LOSSES[beta_loss.lower()]
        except KeyError:
            raise ValueError(
                f"beta_loss must be one of {sorted(BETA_LOSSES)} or a float; got {beta_loss!r}."
            ) from None
    return float(beta_loss)


def _tiny(dtype: torch.dtype) -> float:
    # The smallest step that keeps log() and divisions finite without shifting values
    # of ordinary magnitude; float32 needs a larger guard than float64.
    return 1e-12 if dtype == torch.float64 else 1e-8


def beta_divergence(
    X: torch.Tensor,
    approximation: torch.Tensor,
    beta: float,
    *,
    item_dims: int = 2,
) -> torch.Tensor:
    """β-divergence ``D_β(X | approximation)`` summed over the last ``item_dims`` axes.

    Parameters
    ----------
    X : Tensor of shape (..., n_frames, n_bins)
        Non-negative target.
    approximation : Tensor broadcastable to ``X``
        Non-negative model output, e.g. ``H @ W``.
    beta : float
        2 (Euclidean, ``0.5 * Σ (x - y)²``), 1 (generalised KL,
        ``Σ x log(x / y) - x + y``), 0 (Itakura–Saito, ``Σ x / y - log(x / y) - 1``) or
        any other real value (the general formula).
    item_dims : int
        How many trailing axes make one item; the result keeps the leading axes.

    Returns
    -------
    Tensor of shape (...,)
        One divergence per item, zero exactly where ``X == approximation``.

    Notes
    -----
    Zeros are handled without NaN: for KL, ``0 log 0 = 0`` and a zero model output is
    floored at a tiny value inside the logarithm only; for IS and the general formula
    (which are undefined at zero) both arguments are shifted by that tiny value, which
    keeps the divergence zero at equality.
    """
    dims = tuple(range(-item_dims, 0))
    tiny = _tiny(approximation.dtype)
    if beta == 2:
        return 0.5 * (X - approximation).square().sum(dim=dims)
    if beta == 1:
        # Only exact zeros are floored: log() of any positive float, even subnormal, is
        # finite, and two logs (not the log of a ratio) cannot underflow.
        floored = torch.where(approximation > 0, approximation, tiny)
        elementwise = torch.xlogy(X, X) - torch.xlogy(X, floored) - X + approximation
        return elementwise.sum(dim=dims)
    X_safe = X + tiny
    approximation_safe = approximation + tiny
    if beta == 0:
        ratio = X_safe / approximation_safe
        return (ratio - torch.log(ratio) - 1).sum(dim=dims)
    elementwise = (
        X_safe.pow(beta)
        + (beta - 1) * approximation_safe.pow(beta)
        - beta * X_safe * approximation_safe.pow(beta - 1)
    ) / (beta * (beta - 1))
    return elementwise.sum(dim=dims)
