"""From component activations to per-source activations.

The DDS papers compare methods on activations that are first rescaled by the norm of
their dictionary row (so a component's activation measures the energy it explains,
whatever the scale of its row) and then summed over the components of each source.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["source_membership", "sum_by_source"]


def source_membership(
    component_sources: np.ndarray, sources: np.ndarray
) -> np.ndarray:
    """One-hot matrix mapping components to sources.

    Parameters
    ----------
    component_sources : ndarray of shape (n_components,)
        The source label of each dictionary row.
    sources : ndarray of shape (n_sources,)
        The distinct labels, in output order.

    Returns
    -------
    ndarray of shape (n_components, n_sources)
        ``membership[k, s] = 1`` when component ``k`` belongs to source ``s``.
    """
    component_sources = np.asarray(component_sources)
    membership = (component_sources[:, None] == np.asarray(sources)[None, :]).astype(np.float32)
    return membership


def sum_by_source(
    activations: torch.Tensor, dictionary: torch.Tensor, membership: torch.Tensor
) -> torch.Tensor:
    """Rescale activations by their dictionary row's norm and sum them per source.

    Parameters
    ----------
    activations : Tensor of shape (n_items, n_frames, n_components)
    dictionary : Tensor of shape (n_components, n_bins) or (n_items, n_components, n_bins)
    membership : Tensor of shape (n_components, n_sources)

    Returns
    -------
    Tensor of shape (n_items, n_frames, n_sources)
    """
    norms = torch.linalg.vector_norm(dictionary, dim=-1)  # (…, n_components)
    return (activations * norms.unsqueeze(-2)) @ membership.to(activations.dtype)
