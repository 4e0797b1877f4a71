"""Permutation-invariant training losses for the amortized separators, in torch.

A separator that outputs an unordered set of parts (AudioSlots' slots, a multi-head
U-Net's heads) is scored against its reference sources under the best assignment of
estimates to sources. The steps are small functions that can be used alone: a pairwise
loss matrix (:func:`pairwise_mse`, :func:`pairwise_l1`, :func:`pairwise_neg_si_sdr`),
the assignment search (exhaustive or Hungarian) inside
:func:`permutation_invariant_loss`, and :func:`apply_permutation` to put the estimates
in the sources' order. :class:`PITLoss` wraps them as a module for training loops.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from decomp._validation import check_finite
from decomp.metrics import si_sdr

__all__ = [
    "PITLoss",
    "apply_permutation",
    "pairwise_l1",
    "pairwise_mse",
    "pairwise_neg_si_sdr",
    "pairwise_separation_cost",
    "permutation_invariant_loss",
    "separation_cost",
]

PairwiseLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MAX_AUTO_EXACT_PERMUTATIONS = 720
"""``method="auto"`` searches exhaustively up to this many assignments (6 sources in 6
slots), and uses the Hungarian method beyond."""

MAX_EXACT_PERMUTATIONS = 40320
"""``method="exact"`` is refused beyond this many assignments (8 sources in 8 slots): the
search holds a (batch, n_assignments, n_targets) tensor."""

METHODS = ("auto", "exact", "hungarian")
UNMATCHED = ("ignore", "silence")
REDUCTIONS = ("mean", "sum", "none")

_ESTIMATES_LAYOUT = "(batch, n_estimates, *dims) with at least one trailing axis"
_TARGETS_LAYOUT = "(batch, n_targets, *dims) with at least one trailing axis"


# --- input checks ------------------------------------------------------------------------
def _check_tensor(value: Any, name: str, layout: str, min_ndim: int) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch tensor; got {type(value).__name__}. "
            "Convert it with torch.as_tensor."
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {value.dtype}.")
    if value.ndim < min_ndim:
        raise ValueError(
            f"{name} must have shape {layout}; got a tensor of shape {tuple(value.shape)}."
        )
    if value.numel() == 0:
        raise ValueError(f"{name} is empty: got a tensor of shape {tuple(value.shape)}.")


def _check_pair(estimates: Any, targets: Any, *, need_enough_estimates: bool) -> None:
    """Check ``estimates`` (batch, n_estimates, *dims) against ``targets`` (batch, n_targets,
    *dims): tensors, same batch, device and trailing shape, finite values."""
    _check_tensor(estimates, "estimates", _ESTIMATES_LAYOUT, 3)
    _check_tensor(targets, "targets", _TARGETS_LAYOUT, 3)
    if targets.device != estimates.device:
        raise ValueError(
            f"targets is on device {targets.device} but estimates is on {estimates.device}; "
            "they must be on the same device."
        )
    if targets.shape[0] != estimates.shape[0]:
        raise ValueError(
            f"targets has a batch of {targets.shape[0]} items but estimates has "
            f"{estimates.shape[0]}; they must match (axis 0)."
        )
    if targets.shape[2:] != estimates.shape[2:]:
        raise ValueError(
            f"targets has trailing dimensions {tuple(targets.shape[2:])} but estimates has "
            f"{tuple(estimates.shape[2:])}; every estimate must have its target's shape."
        )
    n_estimates, n_targets = estimates.shape[1], targets.shape[1]
    if need_enough_estimates and n_estimates < n_targets:
        raise ValueError(
            f"estimates holds {n_estimates} estimates (axis 1) but targets holds {n_targets} "
            "targets; a permutation-invariant loss needs n_estimates >= n_targets."
        )
    check_finite(estimates, "estimates")
    check_finite(targets, "targets")


def _choice_message(owner: str, parameter: str, options: tuple[str, ...]) -> str:
    allowed = "{" + ", ".join(repr(option) for option in sorted(options)) + "}"
    return f"The '{parameter}' parameter of {owner} must be a str among {allowed}"


def _check_choice(value: Any, parameter: str, options: tuple[str, ...], owner: str) -> str:
    message = _choice_message(owner, parameter, options)
    if not isinstance(value, str):
        raise TypeError(f"{message}. Got {value!r} instead.")
    if value not in options:
        raise ValueError(f"{message}. Got {value!r} instead.")
    return value


def _resolve_pairwise(pairwise: Any, owner: str) -> PairwiseLoss:
    if isinstance(pairwise, str):
        if pairwise not in PAIRWISE_LOSSES:
            message = _choice_message(owner, "pairwise", tuple(PAIRWISE_LOSSES))
            raise ValueError(f"{message} or a callable. Got {pairwise!r} instead.")
        return PAIRWISE_LOSSES[pairwise]
    if callable(pairwise):
        return pairwise
    message = _choice_message(owner, "pairwise", tuple(PAIRWISE_LOSSES))
    raise TypeError(f"{message} or a callable. Got {pairwise!r} instead.")


def _check_options(
    pairwise: Any, method: Any, unmatched: Any, reduction: Any, owner: str
) -> PairwiseLoss:
    """Check the options once; return the pairwise loss function."""
    function = _resolve_pairwise(pairwise, owner)
    _check_choice(method, "method", METHODS, owner)
    _check_choice(unmatched, "unmatched", UNMATCHED, owner)
    _check_choice(reduction, "reduction", REDUCTIONS, owner)
    if unmatched == "silence" and isinstance(pairwise, str) and pairwise == "neg_si_sdr":
        raise ValueError(
            f"unmatched='silence' cannot be used with pairwise='neg_si_sdr' in {owner}: "
            "SI-SDR is scale-invariant and undefined against a silent target, so it cannot "
            "teach a slot silence. Use pairwise='mse' or 'l1', or a callable that combines "
            "SI-SDR with an energy term."
        )
    return function


# --- pairwise losses ---------------------------------------------------------------------
def _pairwise_mse(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # (batch, n_estimates, 1, *dims) - (batch, 1, n_targets, *dims), mean over dims
    difference = estimates.unsqueeze(2) - targets.unsqueeze(1)
    return (difference**2).flatten(start_dim=3).mean(dim=-1)


def _pairwise_l1(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    difference = estimates.unsqueeze(2) - targets.unsqueeze(1)
    return difference.abs().flatten(start_dim=3).mean(dim=-1)


def _pairwise_neg_si_sdr(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    batch, n_estimates = estimates.shape[:2]
    n_targets = targets.shape[1]
    # si_sdr wants equal shapes: expand both to (batch, n_estimates, n_targets, n_samples).
    shape = (batch, n_estimates, n_targets, -1)
    flat_estimates = estimates.flatten(start_dim=2).unsqueeze(2).expand(shape)
    flat_targets = targets.flatten(start_dim=2).unsqueeze(1).expand(shape)
    return -si_sdr(flat_estimates, flat_targets)


def pairwise_mse(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean squared error between every estimate and every target.

    Parameters
    ----------
    estimates : Tensor of shape (batch, n_estimates, *dims)
        Estimated parts (e.g. spectrograms ``(n_frames, n_bins)``); floating point, finite.
    targets : Tensor of shape (batch, n_targets, *dims)
        Reference parts, on the same device and with the same trailing shape.

    Returns
    -------
    losses : Tensor of shape (batch, n_estimates, n_targets)
        ``losses[b, i, j]`` is the mean over ``dims`` of ``(estimates[b, i] -
        targets[b, j]) ** 2``. Differentiable with respect to both inputs.

    Raises
    ------
    TypeError
        If an input is not a floating-point torch tensor.
    ValueError
        If an input has fewer than 3 axes or is empty, the batch sizes, devices or
        trailing shapes differ, or an input holds NaN/inf.

    Examples
    --------
    >>> import torch
    >>> estimates = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])  # (1, 2, 2)
    >>> targets = torch.tensor([[[1.0, 1.0]]])  # (1, 1, 2)
    >>> pairwise_mse(estimates, targets)
    tensor([[[1.],
             [0.]]])
    """
    _check_pair(estimates, targets, need_enough_estimates=False)
    return _pairwise_mse(estimates, targets)


def pairwise_l1(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean absolute error between every estimate and every target.

    Parameters
    ----------
    estimates : Tensor of shape (batch, n_estimates, *dims)
        Estimated parts; floating point, finite.
    targets : Tensor of shape (batch, n_targets, *dims)
        Reference parts, on the same device and with the same trailing shape.

    Returns
    -------
    losses : Tensor of shape (batch, n_estimates, n_targets)
        ``losses[b, i, j]`` is the mean over ``dims`` of ``|estimates[b, i] -
        targets[b, j]|``. Differentiable with respect to both inputs.

    Raises
    ------
    TypeError
        If an input is not a floating-point torch tensor.
    ValueError
        If an input has fewer than 3 axes or is empty, the batch sizes, devices or
        trailing shapes differ, or an input holds NaN/inf.

    Examples
    --------
    >>> import torch
    >>> estimates = torch.tensor([[[0.0, 0.0], [1.0, 3.0]]])  # (1, 2, 2)
    >>> targets = torch.tensor([[[1.0, 1.0]]])  # (1, 1, 2)
    >>> pairwise_l1(estimates, targets)
    tensor([[[1.],
             [1.]]])
    """
    _check_pair(estimates, targets, need_enough_estimates=False)
    return _pairwise_l1(estimates, targets)


def pairwise_neg_si_sdr(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise negative SI-SDR (dB) between every estimate and every target.

    Each estimate and target is flattened over ``dims`` into one signal and scored by
    :func:`decomp.metrics.si_sdr` (zero-mean, computed in float64, returned in the
    estimates' dtype). The (batch, n_estimates, n_targets, n_samples) pairs are
    materialised, so memory grows with all four.

    Parameters
    ----------
    estimates : Tensor of shape (batch, n_estimates, *dims)
        Estimated parts, e.g. waveforms ``(n_samples,)``; floating point, finite.
    targets : Tensor of shape (batch, n_targets, *dims)
        Reference parts, on the same device and with the same trailing shape.

    Returns
    -------
    losses : Tensor of shape (batch, n_estimates, n_targets)
        ``losses[b, i, j] = -si_sdr(estimates[b, i].flatten(), targets[b, j].flatten())``.
        Differentiable with respect to both inputs.

    Raises
    ------
    TypeError
        If an input is not a floating-point torch tensor.
    ValueError
        If an input has fewer than 3 axes or is empty, the batch sizes, devices or
        trailing shapes differ, or an input holds NaN/inf.

    Examples
    --------
    >>> import torch
    >>> reference = torch.tensor([1.0, -1.0, 1.0, -1.0])
    >>> noise = torch.tensor([0.5, 0.5, -0.5, -0.5])  # orthogonal to the reference
    >>> estimates = torch.stack([reference + noise, noise]).unsqueeze(0)  # (1, 2, 4)
    >>> losses = pairwise_neg_si_sdr(estimates, reference.reshape(1, 1, 4))
    >>> round(float(losses[0, 0, 0]), 4)  # -10 log10(4 / 1)
    -6.0206
    """
    _check_pair(estimates, targets, need_enough_estimates=False)
    return _pairwise_neg_si_sdr(estimates, targets)


def pairwise_separation_cost(estimates: torch.Tensor, targets: torch.Tensor,
                             mixtures: torch.Tensor, *,
                             silence_floor_db: float = -30.0) -> torch.Tensor:
    """Pairwise waveform cost that also scores estimates against silent targets.

    Against a target with any non-zero sample the cost is the negative SI-SDR (dB), as
    in :func:`pairwise_neg_si_sdr`. SI-SDR is undefined against silence, so against an
    all-zero target (an absent source, a padded slot) the cost is the estimate's level
    relative to the mixture, ``10 log10(||ŝ||² / ||x||² + 10^(floor / 10))`` (dB, soft
    floored at ``silence_floor_db``, as the thresholded SNR of Wisdom et al., 2020), so
    an estimate learns silence for an absent source and the two kinds of cost share
    one scale. Used by the waveform loss of :class:`decomp.estimators.amortized.MHUNet`
    with :func:`permutation_invariant_loss` (``pairwise=`` a ``functools.partial`` of
    this with the mixtures bound).

    Parameters
    ----------
    estimates : Tensor of shape (batch, n_estimates, n_samples)
    targets : Tensor of shape (batch, n_targets, n_samples)
        All-zero rows are silent targets.
    mixtures : Tensor of shape (batch, n_samples)
        The mixtures the estimates were separated from (the silence cost's reference).
    silence_floor_db : float, default=-30.0
        The silence cost's soft floor: below it an estimate is silent enough.

    Returns
    -------
    costs : Tensor of shape (batch, n_estimates, n_targets)
        Differentiable with respect to the estimates.

    Examples
    --------
    >>> import torch
    >>> mixture = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    >>> targets = torch.stack([mixture[0], torch.zeros(4)]).unsqueeze(0)  # (1, 2, 4)
    >>> costs = pairwise_separation_cost(0.5 * targets, targets, mixture)
    >>> costs[0, 1, 1].round(decimals=2)  # a silent estimate for the silent target
    tensor(-30.)
    """
    pairs = torch.broadcast_tensors(estimates[:, :, None], targets[:, None])
    return separation_cost(*pairs, mixtures[:, None, None], silence_floor_db=silence_floor_db)


def separation_cost(estimates: torch.Tensor, targets: torch.Tensor, mixtures: torch.Tensor,
                    *, silence_floor_db: float = -30.0) -> torch.Tensor:
    """The cost of :func:`pairwise_separation_cost` for matched pairs, elementwise.

    Parameters
    ----------
    estimates, targets : Tensor of shape (..., n_samples)
        Matched estimates and targets (all-zero targets are silent).
    mixtures : Tensor broadcastable to that shape
        The mixture of each pair (e.g. ``(batch, 1, n_samples)`` for ``(batch, n_sources,
        n_samples)`` pairs).
    silence_floor_db : float, default=-30.0

    Returns
    -------
    costs : Tensor of shape (...)
        Negative SI-SDR (dB) against present targets, the soft-floored level relative to
        the mixture against silent ones.
    """
    present = targets.abs().amax(dim=-1, keepdim=True) > 0  # (..., 1)
    mixtures = mixtures.expand_as(targets)
    # A silent target is swapped for the mixture in the SI-SDR branch only, so that its
    # (unused) value and gradient stay finite.
    neg_si_sdr = -si_sdr(estimates, torch.where(present, targets, mixtures))
    mixture_energy = mixtures.square().sum(dim=-1).clamp_min(torch.finfo(mixtures.dtype).tiny)
    silence = 10.0 * torch.log10(estimates.square().sum(dim=-1) / mixture_energy
                                 + 10.0 ** (silence_floor_db / 10.0))
    return torch.where(present[..., 0], neg_si_sdr.to(silence.dtype), silence)


PAIRWISE_LOSSES: dict[str, PairwiseLoss] = {
    "l1": _pairwise_l1,
    "mse": _pairwise_mse,
    "neg_si_sdr": _pairwise_neg_si_sdr,
}


def _pairwise_matrix(
    function: PairwiseLoss, estimates: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Call ``function`` and check that it gave a finite (batch, n_estimates, n_targets)."""
    losses = function(estimates, targets)
    expected = (estimates.shape[0], estimates.shape[1], targets.shape[1])
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != expected:
        got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"pairwise must return a tensor of shape (batch, n_estimates, n_targets) = "
            f"{expected}; {function!r} returned {got}."
        )
    finite = torch.isfinite(losses.detach())
    if not bool(finite.all()):
        raise ValueError(
            f"The pairwise losses from {function!r} contain NaN or infinity "
            f"({int((~finite).sum())} entries); the assignment is undefined."
        )
    return losses


# --- assignment search -------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _candidates(n_estimates: int, n_targets: int) -> torch.Tensor:
    """All injective assignments of targets to estimates, in itertools order.

    Returns a (n_assignments, n_targets) long tensor: row ``p`` gives the estimate
    index of each target. Cached on the CPU; callers move it to their device.
    """
    return torch.tensor(
        list(itertools.permutations(range(n_estimates), n_targets)), dtype=torch.long
    )


def _search_exact(costs: torch.Tensor) -> torch.Tensor:
    """Best assignment by exhaustive search, all items and candidates in one gather.

    costs: (batch, n_estimates, n_targets), detached. Returns (batch, n_targets) long;
    ties go to the first candidate in itertools order (the identity when it is optimal).
    """
    n_estimates, n_targets = costs.shape[1:]
    candidates = _candidates(n_estimates, n_targets).to(costs.device)  # (P, n_targets)
    columns = torch.arange(n_targets, device=costs.device)
    totals = costs[:, candidates, columns].sum(dim=-1)  # (batch, P)
    return candidates[totals.argmin(dim=-1)]  # (batch, n_targets)


def _search_hungarian(costs: torch.Tensor) -> torch.Tensor:
    """Best assignment by scipy's ``linear_sum_assignment``, one item at a time.

    costs: (batch, n_estimates, n_targets), detached. Returns (batch, n_targets) long.
    scipy has no batched solver; each call is O(n³) on a small matrix.
    """
    matrices = costs.to(device="cpu", dtype=torch.float64).numpy()
    permutation = np.empty((costs.shape[0], costs.shape[2]), dtype=np.int64)
    for item, matrix in enumerate(matrices):
        rows, columns = linear_sum_assignment(matrix)  # every column (target) is assigned
        permutation[item, columns] = rows
    return torch.from_numpy(permutation).to(costs.device)


def _resolve_method(method: str, n_estimates: int, n_targets: int) -> str:
    n_assignments = math.perm(n_estimates, n_targets)
    if method == "auto":
        return "exact" if n_assignments <= MAX_AUTO_EXACT_PERMUTATIONS else "hungarian"
    if method == "exact" and n_assignments > MAX_EXACT_PERMUTATIONS:
        raise ValueError(
            f"method='exact' tries all {n_assignments} assignments of {n_targets} targets to "
            f"{n_estimates} estimates and is limited to {MAX_EXACT_PERMUTATIONS}; use "
            "method='hungarian' (same optimum, polynomial time)."
        )
    return method


def _permutation_invariant_loss(
    estimates: torch.Tensor,
    targets: torch.Tensor,
    function: PairwiseLoss,
    method: str,
    unmatched: str,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The computation behind :func:`permutation_invariant_loss`, on checked inputs."""
    costs = _pairwise_matrix(function, estimates, targets)  # (batch, n_estimates, n_targets)
    batch, n_estimates, n_targets = costs.shape
    silence = None
    selection = costs.detach()
    if unmatched == "silence" and n_estimates > n_targets:
        zeros = targets.new_zeros((batch, 1, *targets.shape[2:]))
        silence = _pairwise_matrix(function, estimates, zeros).squeeze(-1)  # (batch, n_est)
        # Every slot pays either its target's loss or its silence loss, so the best
        # assignment minimises sum_j (cost[perm_j, j] - silence[perm_j]) + sum_i silence[i].
        selection = selection - silence.detach().unsqueeze(-1)

    exact = _resolve_method(method, n_estimates, n_targets) == "exact"
    with torch.no_grad():
        permutation = (_search_exact if exact else _search_hungarian)(selection)

    # The gradient flows through the matched entries of the differentiable matrix only.
    matched = costs.gather(1, permutation.unsqueeze(1)).squeeze(1)  # (batch, n_targets)
    if silence is None:
        per_item = matched.mean(dim=-1)
    else:
        is_unmatched = torch.ones_like(silence, dtype=torch.bool).scatter(1, permutation, False)
        unmatched_loss = torch.where(is_unmatched, silence, torch.zeros_like(silence))
        per_item = (matched.sum(dim=-1) + unmatched_loss.sum(dim=-1)) / n_estimates

    if reduction == "mean":
        return per_item.mean(), permutation
    if reduction == "sum":
        return per_item.sum(), permutation
    return per_item, permutation


# --- public API --------------------------------------------------------------------------
def permutation_invariant_loss(
    estimates: torch.Tensor,
    targets: torch.Tensor,
    *,
    pairwise: str | PairwiseLoss = "mse",
    method: str = "auto",
    unmatched: str = "ignore",
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss under the best assignment of estimates to targets (permutation-invariant training).

    The pairwise loss matrix is computed once; the assignment that minimises the summed
    matched losses is searched on its detached values, and the loss is then gathered from
    the differentiable matrix, so the gradient flows through the matched pairs only.
    With more estimates than targets (AudioSlots' slots), each target gets a distinct
    estimate and the other estimates are unmatched.

    Parameters
    ----------
    estimates : Tensor of shape (batch, n_estimates, *dims)
        Estimated parts, floating point and finite; ``n_estimates >= n_targets``.
    targets : Tensor of shape (batch, n_targets, *dims)
        Reference parts, on the same device and with the same trailing shape.
    pairwise : {"mse", "l1", "neg_si_sdr"} or callable, default="mse"
        The loss of every estimate against every target: :func:`pairwise_mse`,
        :func:`pairwise_l1`, :func:`pairwise_neg_si_sdr`, or a function
        ``f(estimates, targets) -> Tensor of shape (batch, n_estimates, n_targets)``.
    method : {"auto", "exact", "hungarian"}, default="auto"
        ``"exact"`` scores all ``n_estimates! / (n_estimates - n_targets)!`` assignments
        in one tensor operation (on the inputs' device; at most 40320). ``"hungarian"``
        runs :func:`scipy.optimize.linear_sum_assignment` on the CPU for each item.
        ``"auto"`` is exact up to 720 assignments (6 targets in 6 estimates), else
        Hungarian. Both find the optimum; on ties they may pick different assignments
        of equal loss.
    unmatched : {"ignore", "silence"}, default="ignore"
        ``"ignore"``: unmatched estimates are left out; an item's loss is the mean of its
        ``n_targets`` matched losses. ``"silence"``: every unmatched estimate is scored
        against an all-zero target (so unused slots learn silence), the assignment
        minimises the total, and an item's loss is the mean over all ``n_estimates``
        slots. Not available with ``pairwise="neg_si_sdr"`` (SI-SDR is undefined
        against silence).
    reduction : {"mean", "sum", "none"}, default="mean"
        How the per-item losses are combined over the batch.

    Returns
    -------
    loss : Tensor of shape () or (batch,)
        The matched loss, reduced over the batch (``reduction="none"`` gives one value
        per item). Differentiable.
    permutation : Tensor of shape (batch, n_targets), int64
        ``permutation[b, j]`` is the index of the estimate matched to target ``j``;
        :func:`apply_permutation` puts the estimates in the targets' order.

    Raises
    ------
    TypeError
        If an input is not a floating-point torch tensor, or an option has the wrong type.
    ValueError
        If an input has fewer than 3 axes or is empty, the batch sizes, devices or
        trailing shapes differ, ``n_estimates < n_targets``, an input or the pairwise
        matrix holds NaN/inf, a callable ``pairwise`` returns the wrong shape, an option
        is unknown, or ``method="exact"`` has too many assignments to try.

    See Also
    --------
    PITLoss : the same as a :class:`torch.nn.Module`.

    References
    ----------
    D. Yu, M. Kolbæk, Z.-H. Tan and J. Jensen, "Permutation invariant training of deep
    models for speaker-independent multi-talker speech separation", ICASSP 2017.

    Examples
    --------
    >>> import torch
    >>> targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    >>> estimates = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]])  # (1, 3, 2)
    >>> loss, permutation = permutation_invariant_loss(estimates, targets)
    >>> float(loss), permutation
    (0.0, tensor([[2, 0]]))
    >>> apply_permutation(estimates, permutation)
    tensor([[[1., 0.],
             [0., 1.]]])
    """
    function = _check_options(pairwise, method, unmatched, reduction, "permutation_invariant_loss")
    _check_pair(estimates, targets, need_enough_estimates=True)
    return _permutation_invariant_loss(estimates, targets, function, method, unmatched, reduction)


def apply_permutation(estimates: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Reorder estimates to the targets' order given by a permutation-invariant loss.

    Parameters
    ----------
    estimates : Tensor of shape (batch, n_estimates, *dims)
        The estimates the permutation was found for.
    permutation : Tensor of shape (batch, n_targets), integer
        ``permutation[b, j]`` is the estimate matched to target ``j``: distinct indices
        in ``[0, n_estimates)`` in each row.

    Returns
    -------
    reordered : Tensor of shape (batch, n_targets, *dims)
        ``reordered[b, j] = estimates[b, permutation[b, j]]``; unmatched estimates are
        dropped. Differentiable with respect to ``estimates``.

    Raises
    ------
    TypeError
        If ``estimates`` is not a tensor or ``permutation`` is not an integer tensor.
    ValueError
        If the shapes or batch sizes disagree, or ``permutation`` has an index out of
        range or repeated within an item.

    Examples
    --------
    >>> import torch
    >>> estimates = torch.tensor([[[1.0], [2.0], [3.0]]])  # (1, 3, 1)
    >>> apply_permutation(estimates, torch.tensor([[2, 0]]))
    tensor([[[3.],
             [1.]]])
    """
    if not isinstance(estimates, torch.Tensor):
        raise TypeError(f"estimates must be a torch tensor; got {type(estimates).__name__}.")
    if estimates.ndim < 2:
        raise ValueError(
            "estimates must have shape (batch, n_estimates, *dims); got a tensor of shape "
            f"{tuple(estimates.shape)}."
        )
    if not isinstance(permutation, torch.Tensor):
        raise TypeError(
            f"permutation must be an integer torch tensor; got {type(permutation).__name__}."
        )
    if (
        permutation.is_floating_point()
        or permutation.is_complex()
        or (permutation.dtype == torch.bool)
    ):
        raise TypeError(
            f"permutation must be an integer torch tensor; got dtype {permutation.dtype}."
        )
    batch, n_estimates = estimates.shape[:2]
    if permutation.ndim != 2 or permutation.shape[0] != batch:
        raise ValueError(
            f"permutation must have shape (batch, n_targets) with batch={batch} as in "
            f"estimates; got a tensor of shape {tuple(permutation.shape)}."
        )
    if permutation.shape[1] > n_estimates:
        raise ValueError(
            f"permutation assigns {permutation.shape[1]} targets but estimates holds only "
            f"{n_estimates} estimates (axis 1)."
        )
    permutation = permutation.to(device=estimates.device, dtype=torch.long)
    if permutation.numel() and bool(((permutation < 0) | (permutation >= n_estimates)).any()):
        raise ValueError(
            f"permutation must hold estimate indices in [0, {n_estimates}); got values from "
            f"{int(permutation.min())} to {int(permutation.max())}."
        )
    if permutation.shape[1] > 1 and bool((permutation.sort(dim=1).values.diff(dim=1) == 0).any()):
        raise ValueError(
            "permutation repeats an estimate index within an item; each target must be "
            "matched to a distinct estimate."
        )
    items = torch.arange(batch, device=estimates.device).unsqueeze(1)  # (batch, 1)
    return estimates[items, permutation]


class PITLoss(torch.nn.Module):
    """Permutation-invariant loss as a module, for training loops.

    Stores the options of :func:`permutation_invariant_loss` (checked here, at
    construction) and applies it in :meth:`forward`. A callable ``pairwise`` that is a
    :class:`torch.nn.Module` is registered as a submodule, so its parameters move and
    train with this one.

    Parameters
    ----------
    pairwise : {"mse", "l1", "neg_si_sdr"} or callable, default="mse"
        The pairwise loss, as in :func:`permutation_invariant_loss`.
    method : {"auto", "exact", "hungarian"}, default="auto"
        The assignment search.
    unmatched : {"ignore", "silence"}, default="ignore"
        What unmatched estimates contribute.
    reduction : {"mean", "sum", "none"}, default="mean"
        How the per-item losses are combined over the batch.

    Raises
    ------
    TypeError, ValueError
        If an option is unknown or has the wrong type.

    Examples
    --------
    >>> import torch
    >>> criterion = PITLoss("mse", unmatched="silence")
    >>> targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> estimates = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]])
    >>> loss, permutation = criterion(estimates, targets, return_permutation=True)
    >>> float(loss), permutation
    (0.0, tensor([[2, 0]]))
    """

    def __init__(
        self,
        pairwise: str | PairwiseLoss = "mse",
        *,
        method: str = "auto",
        unmatched: str = "ignore",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(pairwise, method, unmatched, reduction, "PITLoss")
        self.pairwise = pairwise
        self.method = method
        self.unmatched = unmatched
        self.reduction = reduction

    def forward(
        self,
        estimates: torch.Tensor,
        targets: torch.Tensor,
        *,
        return_permutation: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Compute the loss of ``estimates`` (batch, n_estimates, *dims) against ``targets``
        (batch, n_targets, *dims).

        Returns the loss (shape ``()`` or ``(batch,)``), and with ``return_permutation``
        also the (batch, n_targets) permutation.
        """
        function = _check_options(
            self.pairwise, self.method, self.unmatched, self.reduction, "PITLoss"
        )
        _check_pair(estimates, targets, need_enough_estimates=True)
        loss, permutation = _permutation_invariant_loss(
            estimates, targets, function, self.method, self.unmatched, self.reduction
        )
        return (loss, permutation) if return_permutation else loss

    def extra_repr(self) -> str:
        pairwise = (
            self.pairwise
            if isinstance(self.pairwise, str)
            else getattr(self.pairwise, "__name__", type(self.pairwise).__name__)
        )
        return (
            f"pairwise={pairwise!r}, method={self.method!r}, unmatched={self.unmatched!r}, "
            f"reduction={self.reduction!r}"
        )
