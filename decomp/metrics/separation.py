"""Separation quality in torch: SI-SDR(i) and bss_eval's SDR/SIR/SAR, batched and GPU-able."""

from __future__ import annotations

import itertools
import math
from numbers import Integral
from typing import Any

import torch

from decomp._validation import StrictInterval, check_params
from decomp.metrics._common import (
    as_float64,
    check_finite,
    check_same_shape,
    like_input,
    shape_of,
)

__all__ = ["si_sdr", "si_sdr_improvement", "bss_eval"]

SI_SDR_EPS = torch.finfo(torch.float64).eps
"""Added to the energies in SI-SDR so that a silent reference or a perfect estimate give a finite
number instead of NaN/inf. It is float64's machine epsilon (about 2.2e-16), negligible next to
the energy of any audible signal, so that scale invariance holds to rounding for all but near-
silent signals (a larger constant such as 1e-8 would visibly bias quiet signals).
"""

MAX_PERMUTATION_SOURCES = 8
"""Beyond this many sources the exhaustive permutation search (n! candidates) is refused."""


def _signal(value: Any, name: str, min_ndim: int, layout: str) -> torch.Tensor:
    signal = as_float64(value, name)
    if signal.ndim < min_ndim:
        raise ValueError(
            f"{name} must have shape {layout}; got an array of shape {shape_of(signal)}."
        )
    if signal.shape[-1] == 0:
        raise ValueError(f"{name} is empty: got an array of shape {shape_of(signal)}.")
    check_finite(signal, name)
    return signal


def _si_sdr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool) -> torch.Tensor:
    # estimate, reference: (..., n_samples) float64 -> (...)
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
    # eps keeps a silent reference from dividing by zero (scale 0, so the whole estimate
    # counts as noise) and caps a perfect estimate at a large finite value.
    scale = (estimate * reference).sum(dim=-1, keepdim=True) / (
        (reference**2).sum(dim=-1, keepdim=True) + SI_SDR_EPS
    )
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10(
        ((target**2).sum(dim=-1) + SI_SDR_EPS) / ((noise**2).sum(dim=-1) + SI_SDR_EPS)
    )


def si_sdr(estimate: Any, reference: Any, zero_mean: bool = True) -> Any:
    """Scale-invariant signal-to-distortion ratio (SI-SDR), in dB, over the last axis.

    With ``s = reference`` and ``ŝ = estimate`` (both mean-removed when ``zero_mean``),
    ``target = (<ŝ, s> / ||s||²) s`` and ``SI-SDR = 10 log10(||target||² / ||ŝ - target||²)``
    (Le Roux et al., 2019). Scaling the estimate by any non-zero factor leaves it
    unchanged. Computed in float64; on tensors it is differentiable, so it can serve as
    a training loss.

    A constant ``eps`` (float64's machine epsilon, about 2.2e-16) is added to ``||s||²``
    and to both energies of the ratio. SI-SDR is undefined for a silent reference
    (0/0); with the constant, a silent reference gives a very negative value (about
    ``10 log10(eps / ||ŝ||²)``: the whole estimate counts as distortion), a silent
    estimate too, two silent signals 0 dB, and a perfect estimate a large finite value
    (about ``10 log10(||ŝ||² / eps)``, e.g. 156.5 dB at unit energy) rather than ``inf``.
    For any audible signal the constant changes the result by less than 1e-9 dB.

    Parameters
    ----------
    estimate : ndarray or Tensor of shape (..., n_samples)
        Estimated signals; leading axes (items, sources) are batch axes.
    reference : ndarray or Tensor of the same shape
        Reference signals.
    zero_mean : bool, default=True
        Remove each signal's mean first (the usual definition).

    Returns
    -------
    si_sdr : float, ndarray or Tensor of shape (...)
        SI-SDR in dB. NumPy in gives float64 NumPy (a ``float`` for 1-d input); a tensor
        in gives a tensor on the same device, in the estimate's floating dtype.

    Raises
    ------
    TypeError
        If an argument is not array-like or ``zero_mean`` is not a bool.
    ValueError
        If the shapes differ, an input is empty or holds NaN/inf.

    References
    ----------
    J. Le Roux, S. Wisdom, H. Erdogan and J. R. Hershey, "SDR - half-baked or well
    done?", ICASSP 2019.

    Examples
    --------
    >>> import numpy as np
    >>> reference = np.array([1.0, -1.0, 1.0, -1.0])
    >>> noise = np.array([0.5, 0.5, -0.5, -0.5])  # orthogonal to the reference
    >>> round(si_sdr(reference + noise, reference), 4)  # 10 log10(4 / 1)
    6.0206
    """
    check_params({"zero_mean": ["boolean"]}, {"zero_mean": zero_mean}, "si_sdr")
    zero_mean = bool(zero_mean)
    estimate_t = _signal(estimate, "estimate", 1, "(..., n_samples)")
    reference_t = _signal(reference, "reference", 1, "(..., n_samples)").to(estimate_t.device)
    check_same_shape(estimate_t, "estimate", reference_t, "reference")
    return like_input(_si_sdr(estimate_t, reference_t, zero_mean), estimate)


def si_sdr_improvement(
    estimate: Any, reference: Any, mixture: Any, zero_mean: bool = True
) -> Any:
    """SI-SDR improvement (SI-SDRi): ``si_sdr(estimate, reference) - si_sdr(mixture, reference)``.

    Parameters
    ----------
    estimate : ndarray or Tensor of shape (..., n_samples)
        Estimated signals, e.g. ``(n_sources, n_samples)`` or
        ``(n_items, n_sources, n_samples)``.
    reference : ndarray or Tensor of the same shape
        Reference signals.
    mixture : ndarray or Tensor broadcastable to the reference's shape
        The mixture the estimate was separated from, e.g. ``(n_samples,)`` for one item
        or ``(n_items, 1, n_samples)`` for a batch of items.
    zero_mean : bool, default=True
        Passed to :func:`si_sdr`.

    Returns
    -------
    improvement : float, ndarray or Tensor of shape (...)
        The gain in dB, in the same kind of object as ``estimate``.

    Raises
    ------
    TypeError
        If an argument is not array-like or ``zero_mean`` is not a bool.
    ValueError
        As :func:`si_sdr`, or if ``mixture`` does not broadcast to the reference's shape.

    Examples
    --------
    >>> import numpy as np
    >>> reference = np.array([1.0, -1.0, 1.0, -1.0])
    >>> noise = np.array([0.5, 0.5, -0.5, -0.5])  # orthogonal to the reference
    >>> # 10 log10(4 / 0.25) - 10 log10(4 / 1) = 20 log10(2)
    >>> round(si_sdr_improvement(reference + 0.5 * noise, reference, reference + noise), 4)
    6.0206
    """
    check_params({"zero_mean": ["boolean"]}, {"zero_mean": zero_mean}, "si_sdr_improvement")
    zero_mean = bool(zero_mean)
    estimate_t = _signal(estimate, "estimate", 1, "(..., n_samples)")
    device = estimate_t.device
    reference_t = _signal(reference, "reference", 1, "(..., n_samples)").to(device)
    mixture_t = _signal(mixture, "mixture", 1, "(..., n_samples)").to(device)
    check_same_shape(estimate_t, "estimate", reference_t, "reference")
    try:
        broadcast = torch.broadcast_shapes(mixture_t.shape, reference_t.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != reference_t.shape:
        raise ValueError(
            f"mixture has shape {shape_of(mixture_t)}, which does not broadcast to the "
            f"reference's shape {shape_of(reference_t)}."
        )
    mixture_t = mixture_t.expand_as(reference_t)
    improvement = _si_sdr(estimate_t, reference_t, zero_mean) - _si_sdr(
        mixture_t, reference_t, zero_mean
    )
    return like_input(improvement, estimate)


def _safe_db(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # As bss_eval: no distortion of a kind means +inf dB for that ratio, not a warning.
    ratio = 10 * torch.log10(numerator / denominator.clamp_min(torch.finfo(torch.float64).tiny))
    return torch.where(denominator == 0, torch.full_like(ratio, math.inf), ratio)


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    # Gram matrices are symmetric positive (semi-)definite, so Cholesky suffices. It also
    # avoids the batched LU of torch 2.13's CPU build, which fails with "oneMKL ERROR:
    # Parameter 6 was incorrect on entry to DLASWP" and never returns once
    # torch.set_num_threads has been called in the process.
    factor, info = torch.linalg.cholesky_ex(gram)
    if bool((info != 0).any()):
        # A singular Gram matrix (e.g. linearly dependent references): like bss_eval,
        # fall back to the minimum-norm least-squares solution.
        return torch.linalg.pinv(gram, hermitian=True) @ rhs
    return torch.cholesky_solve(rhs, factor)


def _bss_eval(
    estimates: torch.Tensor, references: torch.Tensor, filter_length: int, all_pairs: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bss_eval_sources v3 criteria.

    estimates, references: (..., n_sources, n_samples) float64. Returns sdr, sir, sar of
    shape (..., n_estimates, n_references) when ``all_pairs`` (estimate k scored
    against reference j), else (..., n_sources) for the pairs (j, j).
    """
    n_sources, n_samples = references.shape[-2:]
    length = filter_length
    n_out = n_samples + length - 1
    n_fft = 2 ** math.ceil(math.log2(n_out))
    device = references.device
    ref_f = torch.fft.rfft(references, n=n_fft)  # (..., n_sources, n_freqs)
    est_f = torch.fft.rfft(estimates, n=n_fft)
    # Zero padding to n_fft >= n_samples + length - 1 makes these circular
    # correlations equal to the linear ones for every lag below length.
    # ref_corr[..., i, j, lag] = sum_t r_i[t + lag] r_j[t]
    ref_corr = torch.fft.irfft(ref_f.unsqueeze(-2) * ref_f.conj().unsqueeze(-3), n=n_fft)
    delays = torch.arange(length, device=device)
    # gram[(i, a), (j, b)] = <r_i delayed by a, r_j delayed by b> = ref_corr[i, j, b - a]
    lags = (delays.unsqueeze(0) - delays.unsqueeze(1)) % n_fft  # (length, length)
    blocks = ref_corr[..., lags]  # (..., i, j, a, b)
    gram = blocks.transpose(-3, -2).reshape(
        *blocks.shape[:-4], n_sources * length, n_sources * length
    )
    # est_corr[..., k, i, lag] = sum_t r_i[t + lag] e_k[t]; delay a is lag -a.
    est_corr = torch.fft.irfft(ref_f.unsqueeze(-3) * est_f.conj().unsqueeze(-2), n=n_fft)
    inner = est_corr[..., (-delays) % n_fft]  # (..., k, i, a) = <r_i delayed by a, e_k>

    # Projection of every estimate on all delayed references (target + interference).
    rhs = inner.reshape(*inner.shape[:-2], n_sources * length).transpose(-1, -2)
    filters = _solve(gram, rhs).transpose(-1, -2).reshape(inner.shape)  # (..., k, i, a)
    filters_f = torch.fft.rfft(filters, n=n_fft)
    project_all = torch.fft.irfft((filters_f * ref_f.unsqueeze(-3)).sum(dim=-2), n=n_fft)
    project_all = project_all[..., :n_out]  # (..., k, n_out)

    # Projection on the delayed copies of one reference only (target).
    diagonal = torch.diagonal(blocks, dim1=-4, dim2=-3).movedim(-1, -3)  # (..., j, a, b)
    if all_pairs:
        target_filters = _solve(diagonal.unsqueeze(-4), inner.unsqueeze(-1)).squeeze(-1)
        target_f = torch.fft.rfft(target_filters, n=n_fft) * ref_f.unsqueeze(-3)
        project_target = torch.fft.irfft(target_f, n=n_fft)[..., :n_out]  # (..., k, j, n_out)
        project_all = project_all.unsqueeze(-2)
        padded = torch.nn.functional.pad(estimates, (0, length - 1)).unsqueeze(-2)
    else:
        inner_diagonal = torch.diagonal(inner, dim1=-3, dim2=-2).movedim(-1, -2)  # (..., j, a)
        target_filters = _solve(diagonal, inner_diagonal.unsqueeze(-1)).squeeze(-1)
        target_f = torch.fft.rfft(target_filters, n=n_fft) * ref_f
        project_target = torch.fft.irfft(target_f, n=n_fft)[..., :n_out]  # (..., j, n_out)
        padded = torch.nn.functional.pad(estimates, (0, length - 1))

    def energy(signal: torch.Tensor) -> torch.Tensor:
        return (signal**2).sum(dim=-1)

    target_energy = energy(project_target)
    sdr = _safe_db(target_energy, energy(padded - project_target))
    sir = _safe_db(target_energy, energy(project_all - project_target))
    sar = _safe_db(energy(project_all), energy(padded - project_all))
    return sdr, sir, sar.expand_as(sdr)


def _best_permutation(
    sdr: torch.Tensor, sir: torch.Tensor, sar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick, per item, the assignment of estimates to references with the best mean SIR.

    sdr, sir, sar: (..., n_estimates, n_references). Returns the three criteria of shape
    (..., n_sources) and ``permutation`` (..., n_sources), estimate ``permutation[j]``
    matching reference ``j``; ties go to the first permutation in itertools order, as in
    mir_eval.
    """
    n_sources = sir.shape[-1]
    device = sir.device
    candidates = torch.tensor(
        list(itertools.permutations(range(n_sources))), device=device, dtype=torch.long
    )  # (n_permutations, n_sources)
    columns = torch.arange(n_sources, device=device)
    mean_sir = sir[..., candidates, columns].mean(dim=-1)  # (..., n_permutations)
    permutation = candidates[mean_sir.argmax(dim=-1)]  # (..., n_sources)
    index = permutation.unsqueeze(-2)

    def pick(values: torch.Tensor) -> torch.Tensor:
        return torch.gather(values, -2, index).squeeze(-2)

    return pick(sdr), pick(sir), pick(sar), permutation


def bss_eval(
    estimates: Any,
    references: Any,
    filter_length: int = 512,
    compute_permutation: bool = False,
) -> tuple[Any, Any, Any] | tuple[Any, Any, Any, Any]:
    """Source-to-distortion, -interference and -artifact ratios (bss_eval_sources v3).

    Each estimate is split as in Vincent et al. (2006): its least-squares projection on
    delayed copies (0 to ``filter_length - 1`` samples) of its own reference is the
    target; the projection on delayed copies of all references, minus the target, is
    the interference; the rest is artifacts. Then ``SDR = 10 log10(||target||² /
    ||interference + artifacts||²)``, ``SIR = 10 log10(||target||² / ||interference||²)``
    and ``SAR = 10 log10(||target + interference||² / ||artifacts||²)``. The normal
    equations are built from the references' auto- and cross-correlations, computed
    with FFTs, and solved with :func:`torch.linalg.solve` in float64, batched over all
    leading axes; there is no regularisation (an exactly singular system falls back to
    the minimum-norm solution, as in mir_eval). This reproduces
    ``mir_eval.separation.bss_eval_sources`` (deprecated) to within rounding.

    Parameters
    ----------
    estimates : ndarray or Tensor of shape (..., n_sources, n_samples)
        Estimated source signals. Note the order: estimates first, unlike mir_eval.
    references : ndarray or Tensor of the same shape
        Reference source signals; none may be silent.
    filter_length : int, default=512
        Number of taps of the distortion filter allowed on each reference (samples).
    compute_permutation : bool, default=False
        If False, estimate ``j`` is scored against reference ``j``. If True, every
        assignment of estimates to references is tried and the one with the highest mean
        SIR is kept, as in mir_eval (at most 8 sources: the search tries n! candidates).

    Returns
    -------
    sdr, sir, sar : ndarray or Tensor of shape (..., n_sources)
        The ratios in dB, ordered by reference; ``+inf`` where a distortion term is
        exactly zero. NumPy in gives float64 NumPy, a tensor in gives a tensor on the
        same device in the estimates' floating dtype.
    permutation : ndarray or Tensor of shape (..., n_sources), int64
        Only when ``compute_permutation`` is True: estimate ``permutation[j]`` is the one
        matched to reference ``j``.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If the shapes differ or have fewer than 2 axes, the signals are shorter than
        ``filter_length``, an input holds NaN/inf, a reference or an estimate is silent
        (all zeros: the decomposition is then undefined, as in mir_eval), or there are
        too many sources for the permutation search.

    References
    ----------
    E. Vincent, R. Gribonval and C. Févotte, "Performance measurement in blind audio
    source separation", IEEE Trans. on Audio, Speech and Language Processing,
    14(4):1462-1469, 2006.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> references = rng.standard_normal((2, 2000))
    >>> estimates = references + 0.1 * references[::-1]  # 20 dB of cross-talk
    >>> sdr, sir, sar = bss_eval(estimates, references, filter_length=32)
    >>> np.round(sir)
    array([20., 20.])
    """
    check_params({"filter_length": [StrictInterval(Integral, 1, None, closed="left")],
                  "compute_permutation": ["boolean"]},
                 {"filter_length": filter_length, "compute_permutation": compute_permutation},
                 "bss_eval")
    filter_length, compute_permutation = int(filter_length), bool(compute_permutation)
    layout = "(..., n_sources, n_samples)"
    estimates_t = _signal(estimates, "estimates", 2, layout).detach()
    references_t = _signal(references, "references", 2, layout).detach()
    references_t = references_t.to(estimates_t.device)
    check_same_shape(references_t, "references", estimates_t, "estimates")
    n_sources, n_samples = references_t.shape[-2:]
    if n_sources == 0:
        raise ValueError(f"references is empty: got an array of shape {shape_of(references_t)}.")
    if n_samples < filter_length:
        raise ValueError(
            f"The signals have {n_samples} samples, fewer than filter_length="
            f"{filter_length}; pass longer signals or a shorter filter."
        )
    if compute_permutation and n_sources > MAX_PERMUTATION_SOURCES:
        raise ValueError(
            f"compute_permutation=True tries all n! assignments and is limited to "
            f"{MAX_PERMUTATION_SOURCES} sources; got {n_sources}."
        )
    for name, signals in (("references", references_t), ("estimates", estimates_t)):
        silent = (signals == 0).all(dim=-1)
        if bool(silent.any()):
            where = tuple(int(i) for i in silent.nonzero()[0])
            raise ValueError(
                f"{name} holds a silent (all-zero) source at index {where}; bss_eval is "
                "undefined for silent sources."
            )

    if compute_permutation:
        pairs = _bss_eval(estimates_t, references_t, filter_length, all_pairs=True)
        sdr, sir, sar, permutation = _best_permutation(*pairs)
        if isinstance(estimates, torch.Tensor):
            permutation = permutation.to(estimates.device)
        else:
            permutation = permutation.cpu().numpy()
        return (
            like_input(sdr, estimates),
            like_input(sir, estimates),
            like_input(sar, estimates),
            permutation,
        )
    sdr, sir, sar = _bss_eval(estimates_t, references_t, filter_length, all_pairs=False)
    return like_input(sdr, estimates), like_input(sir, estimates), like_input(sar, estimates)
