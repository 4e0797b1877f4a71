"""β-divergences between non-negative arrays, safe at zero.

The β-divergence family (Févotte & Idier, 2011) contains the three losses used
throughout decomp: β = 2 is half the squared Euclidean distance, β = 1 the
generalised Kullback–Leibler divergence and β = 0 the Itakura–Saito divergence.
"""

from __future__ import annotations

import torch

__all__ = ["beta_divergence", "beta_loss_to_float", "kl_target_terms", "BETA_LOSSES"]

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


def _item_sum(values: torch.Tensor, item_dims: int) -> torch.Tensor:
    """Sum over the last ``item_dims`` axes, accumulating across rows in float64.

    The last axis is summed in the input's dtype (no float64 copy of the whole array);
    the row sums are then accumulated in float64, where cancellation would hurt.
    """
    row_sums = values.sum(dim=-1)
    if item_dims == 1:
        return row_sums.to(torch.float64)
    return row_sums.sum(dim=tuple(range(-(item_dims - 1), 0)), dtype=torch.float64)


def kl_target_terms(X: torch.Tensor, *, item_dims: int = 2) -> torch.Tensor:
    """``Σ x log x - x`` per item: the part of the KL divergence that depends on ``X`` only.

    An objective that evaluates the KL divergence of a fixed ``X`` many times computes
    this once and passes it to :func:`beta_divergence`, which then takes one logarithm
    per entry instead of two.
    """
    # Accumulated in float64: the divergence is a small difference of large sums.
    return _item_sum(torch.xlogy(X, X) - X, item_dims)


def beta_divergence(
    X: torch.Tensor,
    approximation: torch.Tensor,
    beta: float,
    *,
    item_dims: int = 2,
    target_terms: torch.Tensor | None = None,
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
    target_terms : Tensor of shape (...,), optional
        For β = 1 only: :func:`kl_target_terms` of ``X``, when already computed.

    Returns
    -------
    Tensor of shape (...,)
        One divergence per item, zero exactly where ``X == approximation``.

    Notes
    -----
    Zeros are handled without NaN: for KL, ``0 log 0 = 0`` and the model output is
    floored at the smallest normal float inside the logarithm only (log of anything
    smaller is no more meaningful), and the sums over an item are accumulated in
    float64, because the divergence is a small difference of large sums; for IS and the
    general formula
    (which are undefined at zero) both arguments are shifted by that tiny value, which
    keeps the divergence zero at equality.
    """
    dims = tuple(range(-item_dims, 0))
    tiny = _tiny(approximation.dtype)
    if beta == 2:
        return 0.5 * (X - approximation).square().sum(dim=dims)
    if beta == 1:
        if target_terms is None:
            target_terms = kl_target_terms(X, item_dims=item_dims)
        floored = approximation.clamp_min(torch.finfo(approximation.dtype).tiny)
        cross = _item_sum(torch.xlogy(X, floored), item_dims)
        # approximation may broadcast against X: count it once per entry of X.
        total = _item_sum(approximation.expand_as(X), item_dims)
        return (target_terms - cross + total).to(approximation.dtype)
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
