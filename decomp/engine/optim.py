"""A batched Adam whose step size and freezing are set per item.

``torch.optim.Adam`` has one learning rate per parameter group; the engine needs
one per item of a batch (each item reduces its step size on its own plateau and
stops on its own), so the update is written out here on stacked tensors.
"""

from __future__ import annotations

import torch

__all__ = ["BatchedAdam"]


class BatchedAdam:
    """Adam over one block whose leading axis (if ``per_item``) indexes items.

    Parameters
    ----------
    value : Tensor of shape (n_items, ...) or (...) for a block shared by all items
        The block; updated in place by :meth:`step`.
    learning_rate : Tensor of shape (n_items,) or scalar Tensor
        Step size per item (a scalar for a shared block).
    betas, eps : Adam's constants.
    """

    def __init__(
        self,
        value: torch.Tensor,
        learning_rate: torch.Tensor,
        *,
        per_item: bool,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.value = value
        self.learning_rate = learning_rate
        self.per_item = per_item
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.first_moment = torch.zeros_like(value)
        self.second_moment = torch.zeros_like(value)
        self.n_steps = 0

    def _per_item(self, values: torch.Tensor) -> torch.Tensor:
        """Reshape a (n_items,) tensor to broadcast against the block."""
        if not self.per_item:
            return values
        return values.reshape(values.shape + (1,) * (self.value.ndim - 1))

    def step(self, gradient: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Apply one Adam step; items where ``active`` is False keep their value and state."""
        self.n_steps += 1
        beta1, beta2 = self.beta1, self.beta2
        if active is not None and self.per_item and not bool(active.all()):
            mask = self._per_item(active).to(gradient.dtype)
            # Frozen items see a zero step and keep their moments unchanged.
            self.first_moment.mul_(1 - mask * (1 - beta1)).add_(mask * (1 - beta1) * gradient)
            self.second_moment.mul_(1 - mask * (1 - beta2)).add_(
                mask * (1 - beta2) * gradient.square()
            )
            step_size = self._per_item(self.learning_rate) * mask
        else:
            self.first_moment.mul_(beta1).add_(gradient, alpha=1 - beta1)
            self.second_moment.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
            step_size = self._per_item(self.learning_rate)
        bias_correction1 = 1 - beta1**self.n_steps
        bias_correction2 = 1 - beta2**self.n_steps
        denominator = (self.second_moment / bias_correction2).sqrt_().add_(self.eps)
        self.value.sub_(step_size * (self.first_moment / bias_correction1) / denominator)
