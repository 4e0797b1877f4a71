"""The interface every flow dictionary offers: ``sample``, ``log_prob`` and ``inverse``.

A dictionary flow maps latent codes ``z`` (one row per dictionary entry) to spectral
frames ``W`` through a bijection chosen per row by an integer source label. The base
distribution is a standard normal in ``z``, so

    log p(w | s) = log N(f_s^{-1}(w); 0, I) + log |det J_{f_s^{-1}}(w)|.

Public methods check shapes and labels, then call private ones that compute; log-dets
travel with the outputs (``forward_and_log_det``), as in nflows and zuko.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from decomp.exceptions import DecompError

__all__ = ["ConditionedDictionary", "DictionaryFlow", "InverseNotAvailable"]


class InverseNotAvailable(DecompError, NotImplementedError):
    """A flow cannot evaluate its inverse map, so ``inverse`` and ``log_prob`` are absent."""


class DictionaryFlow(torch.nn.Module):
    """Abstract per-source flow dictionary: ``W = f_labels(z)`` row by row.

    Subclasses set ``n_sources`` and ``n_features`` and implement
    :meth:`_forward_and_log_det` and, if invertible, :meth:`_inverse_and_log_det`.
    Inputs reaching those private methods are already checked: ``z``/``w`` is a floating
    tensor of shape (n, n_features) with the flow's dtype, ``labels`` a long tensor of
    shape (n,) on the same device with values in [0, n_sources).

    Calling the module with labels, ``flow(labels)``, conditions it once and returns a
    :class:`ConditionedDictionary` whose methods need no more context.
    """

    n_sources: int
    n_features: int

    # ----------------------------------------------------------------- to implement
    def _forward_and_log_det(
        self, z: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _inverse_and_log_det(
        self, w: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise InverseNotAvailable(f"{type(self).__name__} has no inverse map.")

    # ------------------------------------------------------------------- public API
    def forward(self, labels: Any) -> ConditionedDictionary:
        """Condition on ``labels`` once; see :class:`ConditionedDictionary`."""
        return ConditionedDictionary(self, self._check_labels(labels, None, "labels"))

    def forward_and_log_det(
        self, z: torch.Tensor, labels: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map latent codes to frames and return ``log |det J_f(z)|`` per row.

        Parameters
        ----------
        z : Tensor of shape (n, n_features)
            Latent codes, with the flow's dtype.
        labels : Tensor or array-like of int, shape (n,)
            Source of each row, in [0, n_sources).

        Returns
        -------
        w : Tensor of shape (n, n_features)
        log_det : Tensor of shape (n,)

        Raises
        ------
        ValueError
            If ``z`` or ``labels`` have the wrong shape, dtype or range.
        """
        z = self._check_rows(z, "z")
        labels = self._check_labels(labels, z, "labels")
        return self._forward_and_log_det(z, labels)

    def inverse_and_log_det(
        self, w: torch.Tensor, labels: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map frames to latent codes and return ``log |det J_{f^{-1}}(w)|`` per row.

        Parameters
        ----------
        w : Tensor of shape (n, n_features)
        labels : Tensor or array-like of int, shape (n,)

        Returns
        -------
        z : Tensor of shape (n, n_features)
        log_det : Tensor of shape (n,)

        Raises
        ------
        ValueError
            If ``w`` or ``labels`` have the wrong shape, dtype or range.
        InverseNotAvailable
            If the flow has no inverse.
        """
        w = self._check_rows(w, "W")
        labels = self._check_labels(labels, w, "labels")
        return self._inverse_and_log_det(w, labels)

    def sample(self, z: torch.Tensor, labels: Any) -> torch.Tensor:
        """Dictionary rows ``W = f_labels(z)``, shape (n, n_features); differentiable in z."""
        return self.forward_and_log_det(z, labels)[0]

    def inverse(self, W: torch.Tensor, labels: Any) -> torch.Tensor:
        """Latent codes ``z = f_labels^{-1}(W)``, shape (n, n_features)."""
        return self.inverse_and_log_det(W, labels)[0]

    def log_prob(self, W: torch.Tensor, labels: Any) -> torch.Tensor:
        """Log-density of each row of ``W`` under its source's flow, shape (n,)."""
        z, log_det = self.inverse_and_log_det(W, labels)
        return standard_normal_log_prob(z) + log_det

    # ------------------------------------------------------------------- validation
    def _parameter_dtype(self) -> torch.dtype | None:
        for tensor in self.parameters():
            return tensor.dtype
        return None

    def _check_rows(self, x: Any, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must have shape (n, n_features={self.n_features}); "
                f"got {tuple(x.shape)}."
            )
        dtype = self._parameter_dtype()
        if not x.is_floating_point() or (dtype is not None and x.dtype != dtype):
            raise ValueError(
                f"{name} must have the flow's dtype {dtype}; got {x.dtype}. "
                "Convert the flow (flow.double()) or the input."
            )
        return x

    def _check_labels(
        self, labels: Any, rows: torch.Tensor | None, name: str
    ) -> torch.Tensor:
        device = rows.device if rows is not None else _module_device(self)
        if isinstance(labels, torch.Tensor):
            tensor = labels
        else:
            try:
                tensor = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(
                    f"{name} must be a 1-d array of ints in [0, {self.n_sources}); "
                    f"could not convert {type(labels).__name__}: {error}"
                ) from None
        if tensor.numel() == 0 and not isinstance(labels, torch.Tensor):
            tensor = tensor.long()  # torch.as_tensor([]) is float; an empty list is fine
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise ValueError(
                f"{name} must hold ints in [0, {self.n_sources}); got dtype {tensor.dtype}."
            )
        if tensor.ndim != 1:
            raise ValueError(f"{name} must have shape (n,); got {tuple(tensor.shape)}.")
        if rows is not None and tensor.shape[0] != rows.shape[0]:
            raise ValueError(
                f"{name} must have one entry per row: shape ({rows.shape[0]},); "
                f"got {tuple(tensor.shape)}."
            )
        if tensor.numel() > 0:
            low, high = int(tensor.min()), int(tensor.max())
            if low < 0 or high >= self.n_sources:
                bad = low if low < 0 else high
                raise ValueError(
                    f"{name} must hold ints in [0, n_sources={self.n_sources}); got {bad}."
                )
        return tensor.to(device=device, dtype=torch.long)


class ConditionedDictionary:
    """A :class:`DictionaryFlow` with its labels fixed: ``flow(labels)``.

    Its methods take only ``z`` or ``W`` (shape (n, n_features), n = len(labels)).
    """

    def __init__(self, flow: DictionaryFlow, labels: torch.Tensor) -> None:
        self.flow = flow
        self.labels = labels

    def forward_and_log_det(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`DictionaryFlow.forward_and_log_det`."""
        return self.flow.forward_and_log_det(z, self.labels)

    def inverse_and_log_det(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`DictionaryFlow.inverse_and_log_det`."""
        return self.flow.inverse_and_log_det(W, self.labels)

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """See :meth:`DictionaryFlow.sample`."""
        return self.flow.sample(z, self.labels)

    def inverse(self, W: torch.Tensor) -> torch.Tensor:
        """See :meth:`DictionaryFlow.inverse`."""
        return self.flow.inverse(W, self.labels)

    def log_prob(self, W: torch.Tensor) -> torch.Tensor:
        """See :meth:`DictionaryFlow.log_prob`."""
        return self.flow.log_prob(W, self.labels)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last axis: shape (n, d) -> (n,)."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
