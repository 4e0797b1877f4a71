"""Unordered outputs: matching, merging and refining the slots of a blind separator.

A separator with unordered outputs (AudioSlots, BlockVAE, an MHUNet with
``heads="sources"``) returns its sources in no particular order, may split one source
over two slots, and keeps sources apart better when there are fewer of them. These
functions serve every such model and :class:`~decomp.SeparatorEnsemble`:
:func:`cosine_assignment` matches two sets of outputs (inference windows, chunks,
ensemble members, refinement passes), :func:`merge_groups` / :func:`merge_slots` join
the slots that hold parts of one source, :func:`refine_by_rest` separates all but
one source again, and :func:`count_sounding_outputs` counts the sources a blind
separation found.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import scipy.optimize
import torch

__all__ = ["SOUNDING_SHARE", "cosine_assignment", "count_sounding_outputs", "merge_groups",
           "merge_slots", "refine_by_rest"]

SOUNDING_SHARE = 0.01
"""An output sounds (counts as a source) when it carries at least this share of the energy
of all the outputs of its recording (-20 dB): :func:`count_sounding_outputs`, used by
AudioSlots' blind refinement, SeparatorEnsemble's ``count_weights`` and
benchmarks/separation_table.py's "outputs used"."""


def count_sounding_outputs(energies: np.ndarray) -> np.ndarray:
    """How many outputs sound: energies of shape (..., n_outputs) -> counts of shape (...)
    of the outputs carrying at least :data:`SOUNDING_SHARE` of the energy of all (0 where
    all are silent)."""
    energies = np.asarray(energies, dtype=np.float64)
    total = energies.sum(axis=-1, keepdims=True)
    return (energies >= SOUNDING_SHARE * np.maximum(total, np.finfo(float).tiny)).sum(axis=-1)


def cosine_assignment(inner: torch.Tensor, first_squares: torch.Tensor,
                      second_squares: torch.Tensor) -> np.ndarray:
    """The one-to-one match of two sets of outputs that maximises their summed cosine
    similarity (Hungarian).

    Parameters
    ----------
    inner : Tensor of shape (n_first, n_second)
        Inner products of the outputs' descriptors (flattened spectrograms, possibly
        summed over several stretches of a recording).
    first_squares, second_squares : Tensor of shape (n_first,), (n_second,)
        Their squared norms, summed likewise. A zero norm (a silent output) gives zero
        similarity.

    Returns
    -------
    order : ndarray of shape (n_first,)
        ``order[i]``: the second output matched to the first output ``i``.
    """
    norms = (first_squares.sqrt().clamp_min(1e-12)[:, None]
             * second_squares.sqrt().clamp_min(1e-12)[None, :])
    similarity = (inner / norms).numpy()
    return scipy.optimize.linear_sum_assignment(similarity, maximize=True)[1]


def merge_groups(gram: torch.Tensor, n_groups: int) -> list[list[int]]:
    """Group slots by agglomeration: the two most alike groups merge until ``n_groups`` remain.

    Parameters
    ----------
    gram : Tensor of shape (n_slots, n_slots)
        Inner products of the slots' descriptors (for the separators: masks weighted by
        the square root of the mixture's magnitude, over one window's bins and frames).
    n_groups : int
        Groups to keep, in [1, n_slots].

    Returns
    -------
    groups : list of list of int
        ``n_groups`` groups of slot indices, each sorted, ordered by their first slot.
        Two groups are alike by the cosine of their summed descriptors (read from
        ``gram``), so a slot holding a part of a source joins the slot holding the rest.
    """
    groups = [[slot] for slot in range(gram.shape[0])]
    gram = gram.double()
    while len(groups) > n_groups:
        def cosine(pair: tuple[int, int]) -> float:
            first, second = groups[pair[0]], groups[pair[1]]
            inner = gram[first][:, second].sum()
            norms = gram[first][:, first].sum() * gram[second][:, second].sum()
            return float(inner / norms.clamp_min(1e-30).sqrt())

        first, second = max(itertools.combinations(range(len(groups)), 2), key=cosine)
        groups[first] = sorted(groups[first] + groups.pop(second))
    return groups


def merge_slots(values: torch.Tensor, gram: torch.Tensor, n_sources: int) -> torch.Tensor:
    """One window's outputs ``(n_slots, ...)`` with the slots merged into ``n_sources``.

    Slots are grouped by :func:`merge_groups`; output ``k`` is the sum of group ``k``'s
    slots (masks that sum to one over the slots still do) and the outputs after
    ``n_sources`` are zero, so the shape is kept."""
    if n_sources >= values.shape[0]:
        return values
    merged = torch.zeros_like(values)
    for index, group in enumerate(merge_groups(gram, n_sources)):
        merged[index] = values[group].sum(dim=0)
    return merged


def refine_by_rest(
    mixtures: torch.Tensor,
    sources: torch.Tensor,
    n_passes: int,
    separate_rest: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Refine separated sources by re-separating all but one of them, ``n_passes`` times.

    Each pass takes as its anchor the source, not anchored before, that is loudest in the
    current estimates, subtracts it from the mixture and separates what is left into the
    other ``n_sources - 1`` (``separate_rest``); matched to those sources (Hungarian, by
    the cosine similarity of the waveforms), the rest's estimates and the anchor form
    one partition of the mixture. The current estimates, and the result, are the mean of
    the passes' partitions, so they sum to the mixture whenever the separations sum to
    what they separate. A separator that joins chunks of unordered outputs keeps fewer
    sources apart more consistently (the rest of a trio is a duet); the idea is that of
    one-and-rest separation (Takahashi et al., 2019), applied without retraining.

    Parameters
    ----------
    mixtures : Tensor of shape (n_items, n_samples)
    sources : Tensor of shape (n_items, n_sources, n_samples)
        The first estimates, ``n_sources >= 2``.
    n_passes : int
        At most ``n_sources``; 0 returns ``sources``.
    separate_rest : callable
        ``(n_items, n_samples)`` residuals -> ``(n_items, >= n_sources - 1, n_samples)``
        separated into ``n_sources - 1`` sources (the ``n_sources - 1`` loudest outputs
        are used).

    Returns
    -------
    Tensor of shape (n_items, n_sources, n_samples)
    """
    n_items, n_sources, _ = sources.shape
    rows = torch.arange(n_items)
    current = sources
    totals = torch.zeros_like(sources)
    anchored = torch.zeros(n_items, n_sources, dtype=torch.bool)
    for index in range(n_passes):
        energy = current.square().sum(dim=-1).masked_fill(anchored, -torch.inf)
        anchor = energy.argmax(dim=1)
        partition = torch.empty_like(current)
        partition[rows, anchor] = current[rows, anchor]
        rest = separate_rest(mixtures - current[rows, anchor])
        # The rest's n_sources - 1 loudest outputs (a separator told the count leaves the
        # others silent, wherever they are).
        loudest = rest.square().sum(dim=-1).topk(n_sources - 1, dim=1).indices
        rest = rest.gather(1, loudest[..., None].expand(-1, -1, rest.shape[-1]))
        for item in range(n_items):
            others = [k for k in range(n_sources) if k != int(anchor[item])]
            kept = current[item, others]
            matched = cosine_assignment(rest[item] @ kept.T, rest[item].square().sum(-1),
                                        kept.square().sum(-1))
            for estimate, source in enumerate(matched):
                partition[item, others[source]] = rest[item, estimate]
        totals += partition
        current = totals / (index + 1)
        anchored[rows, anchor] = True
    return current
