"""Objectives minimised by the engine: divergence of ``X`` from ``H @ W`` plus penalties.

An objective sees the parameter blocks as a mapping of names to tensors, returns one
loss per item, and may offer closed-form multiplicative updates for some blocks (the
fast path used by NMF). Subclasses change how blocks map to activations and dictionary
(DDS computes the dictionary from latent codes through a flow) or add penalty terms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from decomp.engine.divergences import _tiny, beta_divergence, kl_target_terms

__all__ = ["Objective", "BetaNMFObjective", "Penalty"]

Penalty = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
"""A penalty maps the blocks to one non-negative value per item, shape (n_items,)."""


class Objective:
    """Interface of everything the engine minimises.

    Subclasses implement :meth:`loss`; :meth:`multiplicative_update` is optional.
    """

    n_items: int

    def loss(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One loss value per item, shape (n_items,)."""
        raise NotImplementedError

    def supports_multiplicative(self, name: str) -> bool:
        """Whether :meth:`multiplicative_update` has a closed form for block ``name``."""
        return False

    def multiplicative_update(
        self, name: str, blocks: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The new value of block ``name`` after one multiplicative update."""
        raise NotImplementedError(
            f"{type(self).__name__} has no multiplicative update for block {name!r}."
        )


class BetaNMFObjective(Objective):
    """``D_β(X | H @ W) + elastic-net(H, W) + Σ penalties`` for a batch of spectrograms.

    Parameters
    ----------
    X : Tensor of shape (n_items, n_frames, n_bins)
        Non-negative targets.
    beta : float
        β of the divergence (2 Euclidean, 1 KL, 0 Itakura–Saito).
    l1 : dict of str to float, optional
        L1 weight per block name (``{"H": 0.1}``); applied as ``l1 * Σ |block|``.
    l2 : dict of str to float, optional
        L2 weight per block name; applied as ``0.5 * l2 * Σ block²``.
    penalties : sequence of callables, optional
        Extra terms, each mapping the blocks to a (n_items,) tensor (e.g. a flow's NLL).

    Notes
    -----
    Blocks are ``"H"`` (activations, shape (n_items, n_frames, n_components)) and
    ``"W"`` (dictionary, shape (n_components, n_bins) when shared by all items or
    (n_items, n_components, n_bins)). The multiplicative updates are the
    majorisation–minimisation updates of Févotte & Idier (2011) with the exponent
    that guarantees descent for β < 1 and β > 2; buffers for ``H @ W`` are reused so
    the hot loop allocates little.
    """

    def __init__(
        self,
        X: torch.Tensor,
        beta: float,
        *,
        l1: Mapping[str, float] | None = None,
        l2: Mapping[str, float] | None = None,
        penalties: Sequence[Penalty] = (),
    ) -> None:
        if X.ndim != 3:
            raise ValueError(f"X must be (n_items, n_frames, n_bins); got shape {tuple(X.shape)}.")
        self.X = X
        self.beta = float(beta)
        self.l1 = dict(l1 or {})
        self.l2 = dict(l2 or {})
        self.penalties = list(penalties)
        self.n_items = X.shape[0]
        self._tiny = _tiny(X.dtype)
        self._approximation_buffer: torch.Tensor | None = None
        # X never changes, so its share of the KL divergence is computed once.
        self._kl_target_terms = kl_target_terms(X) if self.beta == 1 else None

    # --- the model -------------------------------------------------------------------
    def activations(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Activations ``H`` of shape (n_items, n_frames, n_components)."""
        return blocks["H"]

    def dictionary(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Dictionary ``W`` of shape (n_components, n_bins) or (n_items, n_components, n_bins)."""
        return blocks["W"]

    def reconstruction(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``H @ W``, shape (n_items, n_frames, n_bins)."""
        return self.activations(blocks) @ self.dictionary(blocks)

    # --- the loss ----------------------------------------------------------------------
    def regularization(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Elastic-net terms over the blocks named in ``l1``/``l2``, shape (n_items,)."""
        total = torch.zeros(self.n_items, dtype=self.X.dtype, device=self.X.device)
        for name in set(self.l1) | set(self.l2):
            block = blocks[name]
            # A shared block (no item axis) is charged to every item once.
            dims = tuple(range(1, block.ndim)) if block.ndim == 3 else tuple(range(block.ndim))
            if self.l1.get(name):
                total = total + self.l1[name] * block.abs().sum(dim=dims)
            if self.l2.get(name):
                total = total + 0.5 * self.l2[name] * block.square().sum(dim=dims)
        return total

    def loss(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Divergence plus regularisation plus penalties, shape (n_items,)."""
        loss = beta_divergence(self.X, self.reconstruction(blocks), self.beta,
                               target_terms=self._kl_target_terms)
        loss = loss + self.regularization(blocks)
        for penalty in self.penalties:
            loss = loss + penalty(blocks)
        return loss

    # --- the multiplicative fast path ----------------------------------------------------
    def supports_multiplicative(self, name: str) -> bool:
        """True for ``"H"`` and ``"W"`` unless penalties or a subclass change the model."""
        return (
            name in ("H", "W")
            and not self.penalties
            and type(self).activations is BetaNMFObjective.activations
            and type(self).dictionary is BetaNMFObjective.dictionary
        )

    def _approximation(self, H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        shape = (self.n_items, H.shape[-2], W.shape[-1])
        buffer = self._approximation_buffer
        if buffer is None or buffer.shape != shape or buffer.dtype != H.dtype:
            buffer = self._approximation_buffer = torch.empty(
                shape, dtype=H.dtype, device=H.device
            )
        torch.matmul(H, W, out=buffer)
        # Floored so that X / (H @ W) stays finite where a row of H or W is all zero.
        return buffer.clamp_(min=self._tiny)

    def _euclidean_activation_update(self, H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``H ← H ⊙ X Wᵀ / (H W Wᵀ)`` through the Gram matrix, never forming ``H @ W``.

        ``X Wᵀ`` and ``W Wᵀ`` are cached while ``W`` is unchanged (a fixed dictionary), so
        each update then costs (n_frames × n_components²) instead of
        (2 × n_frames × n_components × n_bins); used when n_components < 2 × n_bins.
        """
        # Identity plus version counter: the cache holds W itself, so a new dictionary can
        # never be mistaken for it, and an in-place change bumps the version.
        if getattr(self, "_gram_source", None) is not W or self._gram_version != W._version:
            self._gram_source, self._gram_version = W, W._version
            self._projected = self.X @ W.transpose(-1, -2)  # (n_items, n_frames, n_components)
            self._gram = W @ W.transpose(-1, -2)  # (…, n_components, n_components)
        denominator = H @ self._gram
        l1, l2 = self.l1.get("H", 0.0), self.l2.get("H", 0.0)
        if l1:
            denominator.add_(l1)
        if l2:
            denominator.add_(H, alpha=l2)
        return self._apply_ratio(H, self._projected / denominator.clamp_(min=self._tiny))

    def _euclidean_dictionary_update(self, H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``W ← W ⊙ Hᵀ X / (Hᵀ H W)`` through the Gram matrix of the activations."""
        numerator = H.transpose(-1, -2) @ self.X  # (n_items, n_components, n_bins)
        gram = H.transpose(-1, -2) @ H  # (n_items, n_components, n_components)
        scale = 1.0
        if W.ndim == 2:
            # A dictionary shared by all items collects every item's statistics.
            numerator, gram = numerator.sum(dim=0), gram.sum(dim=0)
            scale = float(self.n_items)
        denominator = gram @ W
        l1, l2 = self.l1.get("W", 0.0), self.l2.get("W", 0.0)
        if l1:
            denominator.add_(l1 * scale)
        if l2:
            denominator.add_(W, alpha=l2 * scale)
        return self._apply_ratio(W, numerator.div_(denominator.clamp_(min=self._tiny)))

    def _apply_ratio(self, value: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """``value * ratio`` (``ratio`` is overwritten), floored at ``eps x mean(value)``.

        A multiplicative update can never move an exact zero, and the loop flushes
        subnormal results to zero; the floor, one machine epsilon below the block's mean,
        keeps every entry able to grow back within a few dozen updates while staying far
        below anything a sparsity measure or threshold would count.
        """
        gamma = self._gamma()
        if gamma != 1.0:
            ratio.pow_(gamma)
        ratio.mul_(value)
        # A 0-d tensor, so the floor never synchronises a GPU.
        floor = value.mean() * torch.finfo(value.dtype).eps
        return torch.maximum(ratio, floor, out=ratio)

    def _gamma(self) -> float:
        # Exponent of the MM update that guarantees a monotone decrease (Févotte & Idier).
        if self.beta < 1:
            return 1.0 / (2.0 - self.beta)
        if self.beta > 2:
            return 1.0 / (self.beta - 1.0)
        return 1.0

    def _numerator_denominator_factors(
        self, approximation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``X * approx**(β-2)`` (in the buffer) and ``approx**(β-1)`` (None when it is 1)."""
        beta = self.beta
        if beta == 2:
            return self.X, approximation
        if beta == 1:
            return torch.div(self.X, approximation, out=approximation), None
        denominator_factor = approximation.pow(beta - 1)
        numerator_factor = approximation.pow_(beta - 2).mul_(self.X)
        return numerator_factor, denominator_factor

    def multiplicative_update(
        self, name: str, blocks: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """One majorisation–minimisation step of block ``"H"`` or ``"W"``.

        Returns the new value; the inputs are not modified.
        """
        if not self.supports_multiplicative(name):
            return super().multiplicative_update(name, blocks)
        H, W = blocks["H"], blocks["W"]
        # The Gram forms cost n_components² per frame (or bin) where the plain form costs
        # 2 x n_components x n_bins (or frames).
        if self.beta == 2 and name == "H" and W.shape[-2] < 2 * W.shape[-1]:
            return self._euclidean_activation_update(H, W)
        if self.beta == 2 and name == "W" and H.shape[-1] < 2 * H.shape[-2]:
            return self._euclidean_dictionary_update(H, W)
        approximation = self._approximation(H, W)
        numerator_factor, denominator_factor = self._numerator_denominator_factors(approximation)
        shared_dictionary = W.ndim == 2
        if name == "H":
            # (n_items, n_frames, n_bins) @ (…, n_bins, n_components)
            numerator = numerator_factor @ W.transpose(-1, -2)
            if denominator_factor is None:
                # KL: X/(HW) @ Wᵀ over 1 @ Wᵀ, the row sums of W, broadcast over frames.
                denominator = W.sum(dim=-1).unsqueeze(-2)
            else:
                denominator = denominator_factor @ W.transpose(-1, -2)
            value = H
            scale = 1.0
        else:
            if shared_dictionary:
                # A dictionary shared by all items collects every item's statistics: one
                # product over all frames of all items, (n_components, n_items·n_frames) @
                # (n_items·n_frames, n_bins), instead of a batched product and a sum.
                H = H.reshape(-1, H.shape[-1])
                numerator_factor = numerator_factor.reshape(-1, numerator_factor.shape[-1])
                if denominator_factor is not None:
                    denominator_factor = denominator_factor.reshape(
                        -1, denominator_factor.shape[-1])
            numerator = H.transpose(-1, -2) @ numerator_factor
            if denominator_factor is None:
                denominator = H.sum(dim=-2).unsqueeze(-1)
            else:
                denominator = H.transpose(-1, -2) @ denominator_factor
            value = W
            # The loss charges a shared block's penalty to each item (see regularization).
            scale = float(self.n_items) if shared_dictionary else 1.0
        l1 = self.l1.get(name, 0.0)
        l2 = self.l2.get(name, 0.0)
        if l1:
            denominator = denominator + l1 * scale
        if l2:
            denominator = denominator + (l2 * scale) * value
        # Floored so that a zero denominator (an unused component) cannot divide by zero.
        return self._apply_ratio(value, numerator.div_(denominator.clamp(min=self._tiny)))
