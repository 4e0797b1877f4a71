"""Scoring separated waveforms: permutation matching, bss_eval's SDR/SIR/SAR and SI-SDR(i)."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import torch

from decomp._validation import StrictInterval, check_params
from decomp.losses import permutation_invariant_loss
from decomp.metrics import bss_eval, si_sdr, si_sdr_improvement

__all__ = ["SeparationScores", "evaluate_separation"]

_METRICS = ("sdr", "sir", "sar", "si_sdr", "si_sdr_improvement")


@dataclass(frozen=True)
class SeparationScores:
    """Per-source separation scores of a batch of items, in dB.

    Every per-source array has shape (n_items, max_sources) and is ordered like the
    references; slots beyond an item's ``n_sources`` (zero padding) hold NaN.

    Attributes
    ----------
    sdr, sir, sar : ndarray of shape (n_items, max_sources)
        bss_eval's source-to-distortion, -interference and -artifact ratios
        (:func:`decomp.metrics.bss_eval`); ``+inf`` where a distortion term is exactly 0.
    si_sdr : ndarray of shape (n_items, max_sources)
        Scale-invariant SDR of each matched estimate (:func:`decomp.metrics.si_sdr`).
    si_sdr_improvement : ndarray of shape (n_items, max_sources)
        ``si_sdr`` minus the SI-SDR of the mixture against the same reference.
    mixture_si_sdr : ndarray of shape (n_items, max_sources)
        SI-SDR of the unprocessed mixture against each reference.
    permutation : ndarray of shape (n_items, max_sources), int64
        ``permutation[i, j]`` is the estimate matched to reference ``j`` (-1 in padding).
    n_sources : ndarray of shape (n_items,), int64
        Number of real (not padded) references per item.
    sample_rate : int or None
        Sample rate of the signals, kept for reports.
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    si_sdr: np.ndarray
    si_sdr_improvement: np.ndarray
    mixture_si_sdr: np.ndarray
    permutation: np.ndarray
    n_sources: np.ndarray
    sample_rate: int | None = None
    _valid: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = np.arange(self.sdr.shape[1])
        object.__setattr__(self, "_valid", columns[None, :] < self.n_sources[:, None])

    @property
    def n_items(self) -> int:
        """Number of scored items."""
        return int(self.sdr.shape[0])

    def item_means(self) -> dict[str, np.ndarray]:
        """Each metric averaged over the real sources of every item.

        Returns
        -------
        means : dict of str to ndarray of shape (n_items,)
            Keys ``"sdr"``, ``"sir"``, ``"sar"``, ``"si_sdr"``, ``"si_sdr_improvement"``.
        """
        counts = self._valid.sum(axis=1)
        return {
            name: np.where(self._valid, getattr(self, name), 0.0).sum(axis=1) / counts
            for name in _METRICS
        }

    def summary(self) -> dict[str, float]:
        """Each metric averaged over every real source of every item.

        Returns
        -------
        summary : dict of str to float
            Keys ``"sdr"``, ``"sir"``, ``"sar"``, ``"si_sdr"``, ``"si_sdr_improvement"``
            (means in dB; ``inf`` if a source scored ``+inf``), and ``"n_items"`` and
            ``"n_sources"`` (the number of scored sources).
        """
        means: dict[str, float] = {
            name: float(getattr(self, name)[self._valid].mean()) for name in _METRICS
        }
        means["n_items"] = self.n_items
        means["n_sources"] = int(self._valid.sum())
        return means

    def by_label(self, labels: Any) -> dict[str, dict[str, float]]:
        """Each metric averaged over the real sources of each label (e.g. instrument).

        Parameters
        ----------
        labels : array-like of shape (n_items, max_sources)
            The label of every reference, ordered like the references; entries beyond an
            item's ``n_sources`` are ignored.

        Returns
        -------
        by_label : dict of str to dict of str to float
            For each label (sorted by name): the means of ``"sdr"``, ``"sir"``, ``"sar"``,
            ``"si_sdr"`` and ``"si_sdr_improvement"`` over its sources (dB), and
            ``"n_sources"``, how many sources it had.

        Raises
        ------
        ValueError
            If ``labels`` does not have the scores' shape.
        """
        labels = np.asarray(labels)
        if labels.shape != self.sdr.shape:
            raise ValueError(f"labels must have shape {self.sdr.shape} (n_items, max_sources), "
                             f"one per reference; got shape {labels.shape}.")
        valid_labels = labels[self._valid].astype(str)
        valid = {name: getattr(self, name)[self._valid] for name in _METRICS}
        groups: dict[str, dict[str, float]] = {}
        for label in sorted(set(valid_labels)):
            chosen = valid_labels == label
            groups[label] = {name: float(values[chosen].mean())
                             for name, values in valid.items()}
            groups[label]["n_sources"] = int(chosen.sum())
        return groups


def _as_float64(value: Any, name: str, ndim: int, layout: str) -> torch.Tensor:
    """Array-like -> float64 CPU tensor of rank ``ndim``, finite and non-empty."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array of shape {layout}; got "
                            f"{type(value).__name__}.") from None
        if array.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, shape {layout}; got dtype "
                            f"{array.dtype}.")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, shape {layout}; got {tensor.dtype}.")
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}; got an array of shape "
                         f"{tuple(tensor.shape)}.")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty: got an array of shape {tuple(tensor.shape)}.")
    tensor = tensor.to(torch.float64)
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        where = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(f"{name} holds NaN or infinity (first at index {where}).")
    return tensor


def _check_n_sources(n_sources: Any, n_items: int, max_sources: int) -> np.ndarray:
    if n_sources is None:
        return np.full(n_items, max_sources, dtype=np.int64)
    if isinstance(n_sources, torch.Tensor):
        n_sources = n_sources.detach().cpu().numpy()
    counts = np.asarray(n_sources)
    if counts.shape != (n_items,) or counts.dtype.kind not in "iu":
        raise ValueError(f"n_sources must be an int array of shape ({n_items},), one count per "
                         f"item; got shape {counts.shape} and dtype {counts.dtype}.")
    if counts.min() < 1 or counts.max() > max_sources:
        raise ValueError(f"n_sources must lie in [1, {max_sources}] (the references' source "
                         f"axis); got values from {counts.min()} to {counts.max()}.")
    return counts.astype(np.int64)


def evaluate_separation(
    estimates: Any,
    references: Any,
    mixtures: Any,
    sample_rate: int | None = None,
    *,
    n_sources: Any = None,
    filter_length: int = 512,
) -> SeparationScores:
    """Score separated waveforms against references, after matching them by permutation.

    For each item, the estimates are assigned to that item's real references by the
    permutation that maximises the mean SI-SDR
    (:func:`decomp.losses.permutation_invariant_loss` with ``pairwise="neg_si_sdr"``;
    with more estimates than references the extra ones are left out). The matched
    estimates are then scored with :func:`decomp.metrics.bss_eval` (SDR/SIR/SAR),
    :func:`decomp.metrics.si_sdr` and :func:`decomp.metrics.si_sdr_improvement` over
    the mixture.

    Parameters
    ----------
    estimates : ndarray or Tensor of shape (n_items, n_estimates, n_samples)
        Separated waveforms, in any order; ``n_estimates >= max_sources`` of the item.
    references : ndarray or Tensor of shape (n_items, max_sources, n_samples)
        Reference waveforms, zero-padded on the source axis when items have fewer
        sources (see ``n_sources``).
    mixtures : ndarray or Tensor of shape (n_items, n_samples)
        The mixtures the estimates were separated from.
    sample_rate : int, optional
        Sample rate in Hz; only recorded in the scores.
    n_sources : array-like of int of shape (n_items,), optional
        Number of real references per item (the first ``n_sources[i]`` slots); the
        padded slots are ignored. Default: every slot is a real source.
    filter_length : int, default=512
        Distortion-filter taps allowed by bss_eval; the signals need at least this many
        samples.

    Returns
    -------
    SeparationScores

    Raises
    ------
    TypeError
        If an input is not a real-valued array.
    ValueError
        If a shape is wrong or the shapes disagree, an input holds NaN/inf, ``n_sources``
        is out of range, there are fewer estimates than sources, or a real reference or
        a matched estimate is silent (bss_eval is undefined for it).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> references = rng.standard_normal((1, 2, 1000))
    >>> mixtures = references.sum(axis=1)
    >>> estimates = references[:, ::-1] + 0.01 * rng.standard_normal((1, 2, 1000))
    >>> scores = evaluate_separation(estimates, references, mixtures, filter_length=32)
    >>> scores.permutation
    array([[1, 0]])
    >>> bool(scores.summary()["si_sdr"] > 35)
    True
    """
    estimates_t = _as_float64(estimates, "estimates", 3, "(n_items, n_estimates, n_samples)")
    references_t = _as_float64(references, "references", 3, "(n_items, n_sources, n_samples)")
    mixtures_t = _as_float64(mixtures, "mixtures", 2, "(n_items, n_samples)")
    n_items, max_sources, n_samples = references_t.shape
    if estimates_t.shape[0] != n_items or mixtures_t.shape[0] != n_items:
        raise ValueError(
            f"estimates, references and mixtures must have the same number of items; got "
            f"{estimates_t.shape[0]}, {n_items} and {mixtures_t.shape[0]}."
        )
    if estimates_t.shape[-1] != n_samples or mixtures_t.shape[-1] != n_samples:
        raise ValueError(
            f"estimates, references and mixtures must have the same number of samples; got "
            f"{estimates_t.shape[-1]}, {n_samples} and {mixtures_t.shape[-1]}."
        )
    check_params({"sample_rate": [StrictInterval(Integral, 1, None, closed="left"), None]},
                 {"sample_rate": sample_rate}, "evaluate_separation")
    counts = _check_n_sources(n_sources, n_items, max_sources)
    if estimates_t.shape[1] < counts.max():
        raise ValueError(
            f"estimates has {estimates_t.shape[1]} estimates per item but an item has "
            f"{counts.max()} sources; every source needs an estimate."
        )
    for item in range(n_items):
        silent = (references_t[item, : counts[item]] == 0).all(dim=-1)
        if bool(silent.any()):
            slot = int(silent.nonzero()[0, 0])
            raise ValueError(
                f"references[{item}, {slot}] is silent (all zeros); pass n_sources to mark "
                "zero-padded slots, or leave the silent source out."
            )

    shape = (n_items, max_sources)
    scores = {name: np.full(shape, np.nan) for name in (*_METRICS, "mixture_si_sdr")}
    permutation = np.full(shape, -1, dtype=np.int64)
    # Items with the same number of sources are matched and scored in one batch.
    for count in np.unique(counts):
        items = torch.as_tensor(np.flatnonzero(counts == count))
        group_refs = references_t[items, :count]  # (n_group, count, n_samples)
        group_ests = estimates_t[items]  # (n_group, n_estimates, n_samples)
        _, perm = permutation_invariant_loss(
            group_ests, group_refs, pairwise="neg_si_sdr", reduction="none"
        )  # perm: (n_group, count)
        matched = torch.gather(
            group_ests, 1, perm.unsqueeze(-1).expand(-1, -1, n_samples)
        )  # (n_group, count, n_samples)
        silent = (matched == 0).all(dim=-1)
        if bool(silent.any()):
            item, slot = (int(i) for i in silent.nonzero()[0])
            raise ValueError(
                f"the estimate matched to references[{int(items[item])}, {slot}] is silent "
                "(all zeros); bss_eval is undefined for silent estimates."
            )
        sdr, sir, sar = bss_eval(matched, group_refs, filter_length=filter_length)
        group_mixtures = mixtures_t[items].unsqueeze(1)  # (n_group, 1, n_samples)
        rows = items.numpy()[:, None]
        columns = np.arange(count)[None, :]
        scores["sdr"][rows, columns] = sdr.numpy()
        scores["sir"][rows, columns] = sir.numpy()
        scores["sar"][rows, columns] = sar.numpy()
        scores["si_sdr"][rows, columns] = si_sdr(matched, group_refs).numpy()
        scores["si_sdr_improvement"][rows, columns] = si_sdr_improvement(
            matched, group_refs, group_mixtures
        ).numpy()
        scores["mixture_si_sdr"][rows, columns] = si_sdr(
            group_mixtures.expand_as(group_refs), group_refs
        ).numpy()
        permutation[rows, columns] = perm.numpy()
    return SeparationScores(
        **scores, permutation=permutation, n_sources=counts,
        sample_rate=None if sample_rate is None else int(sample_rate),
    )
