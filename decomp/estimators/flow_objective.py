"""The DDS objective: reconstruction from a flow dictionary plus its weighted likelihood.

``loss = ||X - H @ relu(f(Z))||_F + λ · Σ_k c_k · NLL(w_k) / n_bins``

with ``c_k`` component ``k``'s share of the item's total activation. It is an
:class:`~decomp.engine.BetaNMFObjective` whose dictionary is computed from the latent
block ``"Z"`` through a flow, so the engine's loop, step-size schedule and stopping
apply unchanged (with the Adam solver).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from decomp.engine import BetaNMFObjective
from decomp.engine.divergences import beta_divergence
from decomp.flows import DictionaryFlow

__all__ = ["FlowDictionaryObjective"]


class FlowDictionaryObjective(BetaNMFObjective):
    """Divergence from a flow-generated dictionary plus the DDS likelihood penalty.

    Parameters
    ----------
    X : Tensor of shape (n_items, n_frames, n_bins)
    flow : DictionaryFlow
        Frozen flow (its parameters should not require gradients).
    labels : Tensor of shape (n_entries,)
        Source index of each dictionary entry.
    per_frame : bool
        DDS-1: ``Z`` is (n_items, n_frames, n_sources, n_latent), one code per source
        per frame, and frame ``t`` is ``Σ_s H[t, s] · W[t, s]``. Otherwise (DDS-2/3)
        ``Z`` is (n_items, n_components, n_latent) and the dictionary is shared by every
        frame of an item: ``H @ W``.
    likelihood_weight : float
        λ, multiplying the share-weighted negative log-likelihood in nats per bin.
    beta : float, default=2
        β of the divergence.
    code_index : Tensor of shape (n_entries,), optional
        Which code (row of ``Z`` along its second-to-last axis) each entry is generated
        from, for codes shared by several entries (DDS-3's ``shared_codes``: entry ``k``
        of every source from code ``k``). By default entry ``e`` has code ``e``.
    frobenius_norm : bool, default=True
        With β=2, use the Frobenius norm ``||X - HW||`` (not half its square), as the
        DDS authors' implementation does.
    autocast_dtype : torch.dtype, optional
        Run the flow pass (forward, and so its backward) under :func:`torch.autocast`
        with this dtype (bfloat16 for ``flow_precision``); its outputs are cast back to
        ``X``'s dtype. None: the flow runs in ``X``'s dtype.

    Notes
    -----
    One flow pass serves every use of the same codes. The dictionary and its NLL are
    cached while ``Z``'s storage is unchanged (same data, same version). Once a latent
    step has asked for gradients, the activation step's pass after it is run with
    autograd on a private copy of the codes, and the next latent step, at the same codes,
    reuses that graph (:class:`_ReusedPass`) instead of running the flow again: one flow
    pass per iteration instead of two, with the same values and gradients.
    The shares ``c_k`` are detached: they weigh how much each entry's likelihood
    matters to the code step, but the activation step does not feel the penalty. With
    gradients through the shares, the activation step moves mass to whichever entries
    have the lowest NLL — entries of low-entropy sources, whatever the input — which we
    measured to collapse the decomposition (piano chords, log-CQT, DDS-2, λ=100: PSA
    0.03, ε-sparsity 0.98).
    """

    def __init__(
        self,
        X: torch.Tensor,
        *,
        flow: DictionaryFlow,
        labels: torch.Tensor,
        per_frame: bool,
        likelihood_weight: float,
        beta: float = 2.0,
        frobenius_norm: bool = True,
        code_index: torch.Tensor | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(X, beta)
        self.autocast_dtype = autocast_dtype
        self.flow = flow
        self.labels = labels
        self.code_index = code_index
        self.per_frame = per_frame
        self.likelihood_weight = float(likelihood_weight)
        self.frobenius_norm = frobenius_norm and self.beta == 2
        # (data pointer, version, shape, strides) of the codes of the cached pass.
        self._cached_key: tuple | None = None
        self._cached_latent: torch.Tensor | None = None
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None
        # (leaf, W, nll) of the cached pass run with autograd on a copy of the codes.
        self._graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._latent_gradients = False

    # --- the flow pass -------------------------------------------------------------------
    def dictionary_and_nll(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``relu(f(Z))`` and the NLL per bin of each entry.

        Returns
        -------
        W : Tensor of shape Z.shape[:-2] + (n_entries, n_bins)
        nll : Tensor of shape Z.shape[:-2] + (n_entries,)
        """
        key = (Z.data_ptr(), Z._version, tuple(Z.shape), Z.stride())
        if Z.requires_grad:
            self._latent_gradients = True
            if self._cached_key == key and self._graph is not None:
                graph, self._graph = self._graph, None  # used once
                return _ReusedPass.apply(Z, graph)
            return self._flow_pass(Z)
        if self._cached_key != key:
            self._graph = None
            if self._latent_gradients and torch.is_grad_enabled():
                # A latent step at these codes follows: keep the graph for it.
                leaf = Z.detach().requires_grad_(True)
                self._graph = (leaf, *self._flow_pass(leaf))
                W, nll = self._graph[1].detach(), self._graph[2].detach()
            else:
                W, nll = self._flow_pass(Z)
            # Holding the codes keeps their storage, so no other tensor takes its address.
            self._cached_key, self._cached_latent, self._cached = key, Z.detach(), (W, nll)
        return self._cached

    def _flow_pass(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.code_index is not None:
            Z = Z.index_select(-2, self.code_index)
        n_entries = self.labels.shape[0]
        rows = Z.reshape(-1, Z.shape[-1])
        labels = self.labels.repeat(rows.shape[0] // n_entries)
        if self.autocast_dtype is None:
            W, log_prob = self.flow.sample_and_log_prob(rows, labels)
        else:
            with torch.autocast(rows.device.type, dtype=self.autocast_dtype):
                W, log_prob = self.flow.sample_and_log_prob(rows, labels)
            W, log_prob = W.to(rows.dtype), log_prob.to(rows.dtype)
        W = torch.relu(W).reshape(*Z.shape[:-1], W.shape[-1])
        nll = (-log_prob / W.shape[-1]).reshape(Z.shape[:-1])
        return W, nll

    def dictionary(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``relu(f(Z))``: (n_items, n_components, n_bins), or per frame for DDS-1."""
        return self.dictionary_and_nll(blocks["Z"])[0]

    def reconstruction(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The approximation of ``X``, shape (n_items, n_frames, n_bins)."""
        H = self.activations(blocks)
        W = self.dictionary(blocks)
        if self.per_frame:
            return (H.unsqueeze(-2) @ W).squeeze(-2)
        return H @ W

    # --- the loss ------------------------------------------------------------------------
    def terms(self, blocks: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction error and weighted likelihood penalty (before λ), each (n_items,)."""
        H = self.activations(blocks)
        W, nll = self.dictionary_and_nll(blocks["Z"])
        approximation = (H.unsqueeze(-2) @ W).squeeze(-2) if self.per_frame else H @ W
        error = beta_divergence(self.X, approximation, self.beta,
                                target_terms=self._kl_target_terms)
        if self.frobenius_norm:
            error = torch.sqrt(2 * error.clamp_min(0))
        if self.per_frame:
            mass, nll = H.flatten(1), nll.flatten(1)  # entries are (frame, source) pairs
        else:
            mass = H.sum(dim=-2)  # (n_items, n_components)
        mass = mass.detach()
        share = mass / mass.sum(dim=-1, keepdim=True).clamp_min(self._tiny)
        return error, (share * nll).sum(dim=-1)

    def loss(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``error + λ · penalty``, shape (n_items,)."""
        error, penalty = self.terms(blocks)
        return error + self.likelihood_weight * penalty

    # --- multiplicative activation updates ----------------------------------------------
    def supports_multiplicative(self, name: str) -> bool:
        """Activations only: with the dictionary fixed, the H step is an NMF step.

        The shares are detached, so the penalty does not depend on ``H`` in the step, and
        the Frobenius norm and half its square share their minimiser in ``H``.
        """
        return name == "H"

    def multiplicative_update(
        self, name: str, blocks: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """One majorisation–minimisation step of ``H`` against the current ``relu(f(Z))``."""
        if name != "H":
            return super().multiplicative_update(name, blocks)
        H, W = blocks["H"], self.dictionary(blocks)
        if not self.per_frame:
            return super().multiplicative_update("H", {"H": H, "W": W})
        # Per-frame dictionaries: each frame has its own (n_sources, n_bins) dictionary,
        # so the products run over bins frame by frame, (…, S, F) @ (…, F, 1).
        approximation = (H.unsqueeze(-2) @ W).squeeze(-2).clamp_min(self._tiny)
        numerator_factor, denominator_factor = self._numerator_denominator_factors(
            approximation)
        numerator = (W @ numerator_factor.unsqueeze(-1)).squeeze(-1)
        if denominator_factor is None:
            denominator = W.sum(dim=-1)
        else:
            denominator = (W @ denominator_factor.unsqueeze(-1)).squeeze(-1)
        return self._apply_ratio(H, numerator.div_(denominator.clamp_min(self._tiny)))


class _ReusedPass(torch.autograd.Function):
    """A flow pass computed earlier on another leaf holding the same codes, joined to ``Z``.

    ``forward(Z, (leaf, W, nll))`` returns the cached ``W`` and ``nll``; the backward
    pass differentiates that earlier graph with respect to its leaf, which is the
    gradient with respect to ``Z`` since both hold the same values.
    """

    @staticmethod
    def forward(ctx: Any, latent: torch.Tensor, graph: tuple) -> tuple[torch.Tensor, ...]:
        ctx.graph = graph
        _, W, nll = graph
        return W.detach().clone(), nll.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_W: torch.Tensor | None,
                 grad_nll: torch.Tensor | None) -> tuple[torch.Tensor | None, None]:
        leaf, W, nll = ctx.graph
        del ctx.graph
        pairs = [(output, grad) for output, grad in ((W, grad_W), (nll, grad_nll))
                 if grad is not None and output.requires_grad]
        if not pairs:
            return None, None
        outputs, grads = zip(*pairs, strict=True)
        (gradient,) = torch.autograd.grad(outputs, leaf, grads)
        return gradient, None
