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

from decomp.exceptions import DecompError, ModelFileError
from decomp.persistence import register_value_type

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

    Latent codes have ``n_latent`` dims: ``n_features`` for an unconditional bijection
    per source (RealNVP); fewer for a conditional flow that fixes part of the latent from
    the label (the conditional Glow's semantic dims) and searches only the rest.

    Training (:func:`decomp.flows.fit_flow`) relies on :meth:`training_losses`,
    :meth:`validation_loss` and, for flows trained against an adversary,
    :meth:`adversary_loss` with the module in :attr:`adversary`; subclasses override
    them when maximum likelihood is not the whole objective. Saving relies on
    :meth:`config` (the constructor arguments) through :meth:`to_dict`/:meth:`from_dict`.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every concrete flow can be saved inside a model and restored by decomp.load.
        register_value_type(cls)

    n_sources: int
    n_features: int
    @property
    def adversary(self) -> torch.nn.Module | None:
        """A submodule named ``adversary`` trained by :meth:`adversary_loss`, or None.

        A property over ``_modules`` (not a class attribute), so that a subclass that
        assigns ``self.adversary = module`` registers it and reads it back.
        """
        return self._modules.get("adversary")

    @property
    def n_latent(self) -> int:
        """Dimension of the latent codes ``z`` that :meth:`sample` takes."""
        return self.n_features

    # ----------------------------------------------------------------- to implement
    def _forward_and_log_det(
        self, z: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _inverse_and_log_det(
        self, w: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise InverseNotAvailable(f"{type(self).__name__} has no inverse map.")

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this flow's architecture."""
        raise NotImplementedError

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
        z : Tensor of shape (n, n_latent)
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
        z = self._check_rows(z, "z", self.n_latent)
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
        z : Tensor of shape (n, n_latent)
        log_det : Tensor of shape (n,)

        Raises
        ------
        ValueError
            If ``w`` or ``labels`` have the wrong shape, dtype or range.
        InverseNotAvailable
            If the flow has no inverse.
        """
        w = self._check_rows(w, "W", self.n_features)
        labels = self._check_labels(labels, w, "labels")
        return self._inverse_and_log_det(w, labels)

    def sample(self, z: torch.Tensor, labels: Any) -> torch.Tensor:
        """Dictionary rows ``W = f_labels(z)``, shape (n, n_features); differentiable in z."""
        return self.forward_and_log_det(z, labels)[0]

    def sample_and_log_prob(
        self, z: torch.Tensor, labels: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``W = f_labels(z)`` and their log-density, from the forward pass alone.

        ``log p(W | labels) = log p(z) - log |det J_f(z)|``: no inverse pass is needed,
        which is what DDS's likelihood penalty uses at every step.

        Parameters
        ----------
        z : Tensor of shape (n, n_latent)
        labels : Tensor or array-like of int, shape (n,)

        Returns
        -------
        W : Tensor of shape (n, n_features)
        log_prob : Tensor of shape (n,)
        """
        W, log_det = self.forward_and_log_det(z, labels)
        return W, self.latent_log_prob(z) - log_det

    def inverse(self, W: torch.Tensor, labels: Any) -> torch.Tensor:
        """Latent codes ``z = f_labels^{-1}(W)``, shape (n, n_latent)."""
        return self.inverse_and_log_det(W, labels)[0]

    def log_prob(self, W: torch.Tensor, labels: Any) -> torch.Tensor:
        """Log-density of each row of ``W`` under its source's flow, shape (n,)."""
        z, log_det = self.inverse_and_log_det(W, labels)
        return self.latent_log_prob(z) + log_det

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Base density of latent codes, shape (n, n_latent) -> (n,): a standard normal."""
        return standard_normal_log_prob(z)

    def mode(self, labels: Any) -> torch.Tensor:
        """The base density's mode for each label, shape (n, n_latent): zeros.

        DDS starts its search here ("latent codes at the mode").
        """
        labels = self._check_labels(labels, None, "labels")
        dtype = self._parameter_dtype() or torch.get_default_dtype()
        return torch.zeros(labels.shape[0], self.n_latent, dtype=dtype, device=labels.device)

    # --------------------------------------------------------------------- training
    def initialize_from_data(self, W: torch.Tensor, labels: torch.Tensor) -> None:
        """Data-dependent initialisation from the first training batch (default: none)."""

    def training_losses(self, W: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar losses on a training batch; ``"loss"`` is minimised over the flow.

        Default: maximum likelihood, ``"loss"`` the mean negative log-likelihood per
        dimension (nats/dim, so learning rates carry over between sizes) and ``"nll"``
        the mean per row (nats).
        """
        nll = -self.log_prob(W, labels)
        return {"loss": nll.mean() / self.n_features, "nll": nll.mean()}

    def validation_loss(self, W: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-row criterion for model selection, shape (n,); default the NLL in nats."""
        return -self.log_prob(W, labels)

    def adversary_loss(self, W: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar loss minimised over :attr:`adversary`'s parameters (if there is one)."""
        raise NotImplementedError(f"{type(self).__name__} has no adversary.")

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Architecture and weights, for :func:`decomp.save` (see :meth:`from_dict`)."""
        return {
            "config": self.config(),
            "state": {name: tensor.detach().cpu() for name, tensor in
                      self.state_dict().items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> DictionaryFlow:
        """Rebuild a flow saved by :meth:`to_dict`, in float32.

        Weights stored in another floating dtype (e.g. float16 to keep a shipped model
        small) are cast on loading.

        Raises
        ------
        ModelFileError
            If ``state`` lacks the ``"config"`` or ``"state"`` mapping.
        """
        def is_mapping(part: Any) -> bool:
            return isinstance(part, dict) and all(isinstance(key, str) for key in part)

        if not (isinstance(state, dict) and is_mapping(state.get("config"))
                and is_mapping(state.get("state"))):
            raise ModelFileError(
                f"a stored {cls.__name__} needs a 'config' and a 'state' mapping with text "
                "keys."
            )
        flow = cls(**state["config"])
        flow.load_state_dict(state["state"])
        return flow

    # ------------------------------------------------------------------- validation
    def _parameter_dtype(self) -> torch.dtype | None:
        for tensor in self.parameters():
            return tensor.dtype
        return None

    def _check_rows(self, x: Any, name: str, n_columns: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
        if x.ndim != 2 or x.shape[1] != n_columns:
            what = "n_features" if n_columns == self.n_features else "n_latent"
            raise ValueError(
                f"{name} must have shape (n, {what}={n_columns}); got {tuple(x.shape)}."
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

    Its methods take only ``z`` (shape (n, n_latent)) or ``W`` (shape (n, n_features)),
    with n = len(labels).
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

    def sample_and_log_prob(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`DictionaryFlow.sample_and_log_prob`."""
        return self.flow.sample_and_log_prob(z, self.labels)


def bounded_log_scale(raw: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``bound * tanh(raw / bound)`` and the sigmoid it is computed from.

    As ``2 * bound * sigmoid(2 * raw / bound) - bound``: on this CPU torch's ``tanh``
    took 6x as long as its ``sigmoid`` (177 against 29 us for a DDS-2 search's
    (60, 4, 192) scales), the largest elementwise cost of a search step.

    Parameters
    ----------
    raw : Tensor of any shape
        A coupling net's unbounded log-scale output.
    bound : float
        The largest absolute log-scale, > 0.

    Returns
    -------
    log_scale : Tensor, raw's shape
        Within (-bound, bound).
    gate : Tensor, raw's shape
        ``sigmoid(2 * raw / bound)``: ``d log_scale / d raw = 4 * gate * (1 - gate)``.
    """
    gate = torch.sigmoid(raw * (2.0 / bound))
    return gate * (2.0 * bound) - bound, gate


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last axis: shape (n, d) -> (n,)."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
