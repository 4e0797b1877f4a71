"""Starting points for NMF dictionaries and activations.

Multiplicative updates never move an entry away from exactly zero, so every
initialiser here returns strictly positive values where the data has energy.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["initialize_nmf", "initialize_activations"]


def initialize_nmf(
    X: torch.Tensor,
    n_components: int,
    *,
    method: Literal["random", "nndsvda"] = "nndsvda",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial activations and dictionary for ``X ≈ H @ W``.

    Parameters
    ----------
    X : Tensor of shape (n_frames, n_bins)
        Non-negative data.
    n_components : int
        Number of dictionary rows.
    method : {"random", "nndsvda"}
        ``"random"``: half-normal entries scaled by ``sqrt(mean(X) / n_components)``
        (scikit-learn's rule). ``"nndsvda"``: non-negative double SVD (Boutsidis &
        Gallopoulos, 2008) with zeros replaced by the mean of ``X``, so multiplicative
        updates can still move them.
    generator : torch.Generator, optional
        Source of randomness (``"random"`` only).

    Returns
    -------
    H : Tensor of shape (n_frames, n_components)
    W : Tensor of shape (n_components, n_bins)
    """
    n_frames, n_bins = X.shape
    mean = X.mean()
    if method == "random":
        scale = torch.sqrt(mean / n_components)
        H = scale * torch.randn(n_frames, n_components, generator=generator, dtype=X.dtype)
        W = scale * torch.randn(n_components, n_bins, generator=generator, dtype=X.dtype)
        H, W = H.to(X.device).abs_(), W.to(X.device).abs_()
        # Half-normal draws can be exactly zero only with probability 0, but a zero-mean
        # X gives scale 0: fall back to a tiny constant so updates can start.
        tiny = torch.finfo(X.dtype).eps
        return H.clamp_(min=tiny), W.clamp_(min=tiny)
    if method != "nndsvda":
        raise ValueError(f"init must be 'random' or 'nndsvda'; got {method!r}.")
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    rank = min(n_components, S.shape[0])
    H = torch.zeros(n_frames, n_components, dtype=X.dtype, device=X.device)
    W = torch.zeros(n_components, n_bins, dtype=X.dtype, device=X.device)
    # The leading singular pair of a non-negative matrix can be taken non-negative.
    H[:, 0] = torch.sqrt(S[0]) * U[:, 0].abs()
    W[0] = torch.sqrt(S[0]) * Vh[0].abs()
    for k in range(1, rank):
        u, v = U[:, k], Vh[k]
        u_pos, u_neg = u.clamp(min=0), (-u).clamp(min=0)
        v_pos, v_neg = v.clamp(min=0), (-v).clamp(min=0)
        positive_norm = torch.linalg.norm(u_pos) * torch.linalg.norm(v_pos)
        negative_norm = torch.linalg.norm(u_neg) * torch.linalg.norm(v_neg)
        if positive_norm >= negative_norm:
            u_part, v_part, norm = u_pos, v_pos, positive_norm
        else:
            u_part, v_part, norm = u_neg, v_neg, negative_norm
        if norm <= 0:
            continue
        factor = torch.sqrt(S[k] * norm)
        H[:, k] = factor * u_part / torch.linalg.norm(u_part)
        W[k] = factor * v_part / torch.linalg.norm(v_part)
    floor = mean if mean > 0 else torch.finfo(X.dtype).eps
    H[H <= 0] = floor
    W[W <= 0] = floor
    return H, W


def initialize_activations(
    X: torch.Tensor,
    dictionary: torch.Tensor,
    *,
    method: Literal["constant", "random"] = "constant",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Activations that start a decomposition of ``X`` against a fixed ``dictionary``.

    Parameters
    ----------
    X : Tensor of shape (n_items, n_frames, n_bins)
    dictionary : Tensor of shape (n_components, n_bins) or (n_items, n_components, n_bins)
    method : {"constant", "random"}
        ``"constant"``: all activations of a frame equal, chosen so that the frame's
        mean in ``H @ W`` equals its mean in ``X`` (the DDS papers start NMF from a
        constant). Each frame's start depends on that frame alone, so cutting a
        recording into chunks does not change where any frame starts.
        ``"random"``: uniform in [0, 1) times that level, as the DDS papers do for
        their flow dictionaries.

    Returns
    -------
    Tensor of shape (n_items, n_frames, n_components)
    """
    n_items, n_frames, _ = X.shape
    n_components = dictionary.shape[-2]
    frame_mean = X.mean(dim=-1, keepdim=True)  # (n_items, n_frames, 1)
    dictionary_mean = dictionary.mean(dim=(-2, -1)).reshape(-1, 1, 1)  # (1 or n_items, 1, 1)
    tiny = torch.finfo(X.dtype).eps
    level = frame_mean / (n_components * dictionary_mean).clamp_min(tiny)
    # A silent frame starts at a tiny positive value: multiplicative updates cannot leave 0.
    level = level.clamp_min(tiny)
    shape = (n_items, n_frames, n_components)
    if method == "constant":
        return level.expand(shape).clone()
    if method == "random":
        draws = torch.rand(shape, generator=generator, dtype=X.dtype).to(X.device)
        return level * draws.clamp_min(tiny)
    raise ValueError(f"method must be 'constant' or 'random'; got {method!r}.")
