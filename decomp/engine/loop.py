"""The batched alternating inference loop shared by every iterative estimator.

:func:`minimize` updates named parameter blocks in turn (e.g. dictionary, then
activations) for a whole batch of items at once. Each item keeps its own step size,
plateau counter and stopping state, so one slow item never holds the others back
from stopping, and a non-finite loss in one item is reported (or repaired) for that
item alone. Multiplicative updates are the same loop with a closed-form step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from decomp.engine.objectives import Objective
from decomp.engine.optim import BatchedAdam
from decomp.exceptions import NonFiniteLossError

__all__ = ["Block", "InferenceResult", "minimize"]

Solver = Literal["mu", "adam"]


@dataclass
class Block:
    """One named parameter block.

    Parameters
    ----------
    name : str
        Key under which the objective finds the block.
    value : Tensor
        Initial value; shape (n_items, ...) when ``per_item``, any shape otherwise.
    trainable : bool
        False keeps the block fixed (e.g. the dictionary in ``transform``).
    per_item : bool
        Whether the leading axis indexes the items of the batch. A shared block (False)
        is updated from all items together and stops only when every item has stopped.
    nonnegative : bool
        Project onto ``value >= 0`` after every gradient step.
    parameterization : {"identity", "softplus"}
        ``"softplus"`` keeps the block positive by optimising ``θ`` with
        ``value = softplus(θ)`` (Adam only); the objective and the result see ``value``.
    learning_rate : float or Tensor of shape (n_items,), optional
        Initial Adam step size (absolute, in the block's units); required for Adam.
    """

    name: str
    value: torch.Tensor
    trainable: bool = True
    per_item: bool = True
    nonnegative: bool = False
    learning_rate: float | torch.Tensor | None = None
    parameterization: Literal["identity", "softplus"] = "identity"


@dataclass
class InferenceResult:
    """What :func:`minimize` returns.

    Attributes
    ----------
    blocks : dict of str to Tensor
        Final values of every block (fixed ones included).
    loss : Tensor of shape (n_items,)
        Final objective per item.
    n_iter : ndarray of shape (n_items,)
        Iterations each item ran before it stopped.
    converged : ndarray of shape (n_items,)
        Whether each item met the stopping rule before ``max_iter``.
    history : ndarray of shape (n_checks, n_items)
        Objective per item at each check, the first at iteration 0.
    history_iterations : ndarray of shape (n_checks,)
        Iteration number of each row of ``history``.
    learning_rates : dict of str to Tensor
        Final Adam step size of each trained block, per item (empty for ``"mu"``).
    """

    blocks: dict[str, torch.Tensor]
    loss: torch.Tensor
    n_iter: np.ndarray
    converged: np.ndarray
    history: np.ndarray
    history_iterations: np.ndarray
    learning_rates: dict[str, torch.Tensor] = field(default_factory=dict)


def _per_item_view(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    return mask.reshape(mask.shape + (1,) * (ndim - 1))


def minimize(
    objective: Objective,
    blocks: Sequence[Block],
    *,
    schedule: Sequence[str] | None = None,
    solver: Solver | Mapping[str, Solver] = "mu",
    max_iter: int = 200,
    tol: float = 1e-4,
    check_every: int = 10,
    patience: int = 20,
    lr_factor: float = 0.5,
    max_lr_reductions: int = 4,
    on_non_finite: Literal["raise", "recover"] = "raise",
    progress: bool = False,
    desc: str = "decomposing",
    callback: Callable[[int, Mapping[str, torch.Tensor], torch.Tensor], None] | None = None,
) -> InferenceResult:
    """Minimise ``objective`` over the trainable blocks by alternating updates.

    Parameters
    ----------
    objective : Objective
        Gives one loss per item; with ``solver="mu"`` it must offer multiplicative
        updates for every trainable block.
    blocks : sequence of Block
        All blocks the objective reads; trainable ones are updated.
    schedule : sequence of str, optional
        Order in which trainable blocks are updated within one iteration (default: the
        order of ``blocks``). One iteration updates each listed block once.
    solver : {"mu", "adam"} or dict of str to {"mu", "adam"}
        Multiplicative updates (the NMF fast path) or projected Adam steps on autograd
        gradients; a dict chooses per trainable block (e.g. Adam on latent codes and
        multiplicative updates on activations). With any Adam block the stopping rule
        is Adam's (plateaus and step-size reductions).
    max_iter : int
        Largest number of iterations for any item.
    tol : float
        Stopping tolerance. With ``"mu"`` an item stops when its loss decreased by less
        than ``tol`` times its initial loss since the previous check (scikit-learn's
        rule). With ``"adam"`` an item whose loss has not improved on its best by more
        than ``tol`` times its initial loss for ``patience`` iterations has its step
        size multiplied by ``lr_factor``; after ``max_lr_reductions`` reductions it stops.
    check_every : int
        Iterations between evaluations of the loss (stopping, plateau, history).
    patience : int
        Iterations without improvement before a step-size reduction (Adam).
    lr_factor : float
        Factor applied to an item's step size on a plateau (Adam).
    max_lr_reductions : int
        Reductions after which an item stops (Adam).
    on_non_finite : {"raise", "recover"}
        What to do when an item's loss becomes NaN/inf: raise
        :class:`~decomp.exceptions.NonFiniteLossError` naming the iteration and the
        items, or (Adam only) restore the item's last finite state and halve its step.
    progress : bool
        Show a tqdm progress bar.
    desc : str
        Progress bar label.
    callback : callable, optional
        Called as ``callback(iteration, blocks, loss)`` at every check.

    Returns
    -------
    InferenceResult

    Raises
    ------
    ValueError
        For an inconsistent configuration (unknown block in ``schedule``, Adam without a
        learning rate, ``"mu"`` on a block without a closed form).
    NonFiniteLossError
        If the loss becomes non-finite and cannot be recovered.
    """
    solvers = {name: solver for name in (block.name for block in blocks)} \
        if isinstance(solver, str) else dict(solver)
    for name, choice in solvers.items():
        if choice not in ("mu", "adam"):
            raise ValueError(f"solver must be 'mu' or 'adam'; got {choice!r} for {name!r}.")
    if on_non_finite not in ("raise", "recover"):
        raise ValueError(f"on_non_finite must be 'raise' or 'recover'; got {on_non_finite!r}.")
    if max_iter < 0 or check_every < 1 or patience < 1:
        raise ValueError(
            "max_iter must be >= 0 and check_every, patience >= 1; got "
            f"max_iter={max_iter}, check_every={check_every}, patience={patience}."
        )
    by_name = {block.name: block for block in blocks}
    trainable = [block.name for block in blocks if block.trainable]
    order = list(schedule) if schedule is not None else trainable
    for name in order:
        if name not in by_name or not by_name[name].trainable:
            raise ValueError(
                f"schedule names {name!r}, which is not a trainable block; trainable blocks "
                f"are {trainable}."
            )
        if name not in solvers:
            raise ValueError(f"solver names no method for trainable block {name!r}.")
    uses_adam = any(solvers[name] == "adam" for name in order)
    for block in blocks:
        if block.parameterization not in ("identity", "softplus"):
            raise ValueError(
                f"parameterization of block {block.name!r} must be 'identity' or 'softplus'; "
                f"got {block.parameterization!r}."
            )
        if (block.parameterization == "softplus" and block.trainable
                and solvers.get(block.name) == "mu"):
            raise ValueError(
                f"block {block.name!r} uses parameterization='softplus', which needs "
                "solver='adam'."
            )
    # Softplus blocks are stored as θ; `_visible` turns them back into values.
    values: dict[str, torch.Tensor] = {
        block.name: (_inverse_softplus(block.value) if block.parameterization == "softplus"
                     else block.value.detach().clone())
        for block in blocks
    }
    n_items = objective.n_items
    reference = next(iter(values.values()))
    device = reference.device

    optimizers: dict[str, BatchedAdam] = {}
    for name in order:
        if solvers[name] == "mu":
            if not objective.supports_multiplicative(name):
                raise ValueError(
                    f"solver='mu' needs a multiplicative update for block {name!r}, which "
                    f"{type(objective).__name__} does not offer; use solver='adam'."
                )
        else:
            block = by_name[name]
            if block.learning_rate is None:
                raise ValueError(f"solver='adam' needs a learning_rate for block {name!r}.")
            rate = torch.as_tensor(block.learning_rate, dtype=values[name].dtype, device=device)
            if block.per_item and rate.ndim == 0:
                rate = rate.expand(n_items).clone()
            optimizers[name] = BatchedAdam(values[name], rate.clone(), per_item=block.per_item)

    has_shared_trainable = any(not by_name[name].per_item for name in order)
    active = torch.ones(n_items, dtype=torch.bool, device=device)
    converged = np.zeros(n_items, dtype=bool)
    reductions = torch.zeros(n_items, dtype=torch.long, device=device)

    def visible(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: (torch.nn.functional.softplus(value)
                       if by_name[name].parameterization == "softplus" else value)
                for name, value in raw.items()}

    with torch.no_grad():
        loss = objective.loss(visible(values))
    _check_finite(loss, 0, on_non_finite="raise")
    initial_loss = loss.abs().clamp_min(torch.finfo(loss.dtype).tiny)
    previous_loss = loss.clone()
    best_loss = loss.clone()
    since_best = torch.zeros(n_items, dtype=torch.long, device=device)
    history = [loss.detach().cpu().numpy()]
    history_iterations = [0]
    snapshot = _snapshot(values, by_name) if on_non_finite == "recover" else None
    if callback is not None:
        callback(0, visible(values), loss)

    bar = tqdm(total=max_iter, desc=desc, disable=not progress, leave=False, unit="it")
    # Stays on the device: counting iterations must not synchronise a GPU every step.
    iterations_run = torch.zeros(n_items, dtype=torch.long, device=device)
    any_active, all_active = True, True
    with bar, _flushing_denormals():
        iteration = 0
        while iteration < max_iter and any_active:
            iteration += 1
            for name in order:
                block = by_name[name]
                if solvers[name] == "mu":
                    new_value = objective.multiplicative_update(name, values)
                    if block.per_item and not all_active:
                        keep = _per_item_view(active, new_value.ndim)
                        new_value = torch.where(keep, new_value, values[name])
                    values[name] = new_value
                else:
                    _adam_step(objective, values, visible, name, optimizers[name], active,
                               block)
            iterations_run += active
            bar.update(1)
            if iteration % check_every and iteration != max_iter:
                continue

            with torch.no_grad():
                loss = objective.loss(visible(values))
            finite = torch.isfinite(loss)
            if not bool(finite.all()):
                if on_non_finite == "raise" or not uses_adam or snapshot is None:
                    _check_finite(loss, iteration, on_non_finite="raise")
                _restore(values, snapshot, by_name, ~finite, optimizers)
                with torch.no_grad():
                    loss = objective.loss(visible(values))
            elif snapshot is not None:
                snapshot = _snapshot(values, by_name)

            if not uses_adam:
                improvement = (previous_loss - loss) / initial_loss
                newly_done = active & (improvement < tol)
            else:
                improved = loss < best_loss - tol * initial_loss
                best_loss = torch.where(improved, loss, best_loss)
                since_best = torch.where(improved, torch.zeros_like(since_best),
                                         since_best + check_every)
                plateau = active & (since_best >= patience)
                if bool(plateau.any()):
                    for optimizer in optimizers.values():
                        if optimizer.per_item:
                            optimizer.learning_rate[plateau] *= lr_factor
                    reductions = reductions + plateau.long()
                    since_best = torch.where(plateau, torch.zeros_like(since_best), since_best)
                newly_done = active & (reductions >= max_lr_reductions)
            if has_shared_trainable:
                # A shared block couples the items: they stop together.
                newly_done = newly_done.all().expand(n_items) & active
            converged[newly_done.cpu().numpy()] = True
            active = active & ~newly_done
            previous_loss = loss
            history.append(loss.detach().cpu().numpy())
            history_iterations.append(iteration)
            if callback is not None:
                callback(iteration, visible(values), loss)
            any_active, all_active = bool(active.any()), bool(active.all())
            bar.set_postfix(loss=f"{float(loss.mean()):.4g}", active=int(active.sum()))

    return InferenceResult(
        blocks=visible(values),
        loss=loss.detach(),
        n_iter=iterations_run.cpu().numpy(),
        converged=converged,
        history=np.stack(history),
        history_iterations=np.asarray(history_iterations),
        learning_rates={name: opt.learning_rate for name, opt in optimizers.items()},
    )


@contextlib.contextmanager
def _flushing_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero on the CPU while the loop runs.

    Multiplicative updates drive small activations towards zero; once they are
    subnormal every product with them takes a slow microcode path (measured here: a KL
    iteration on a piano spectrogram went from 5.5 to 4.2 ms). torch offers no getter
    for this mode, so it is switched off again afterwards, torch's default.
    """
    enabled = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if enabled:
            torch.set_flush_denormal(False)


def _inverse_softplus(value: torch.Tensor) -> torch.Tensor:
    """θ with softplus(θ) = value; values at or below zero are moved just above it."""
    positive = value.detach().clamp_min(torch.finfo(value.dtype).eps)
    # log(expm1(v)) loses precision for large v, where softplus is the identity anyway.
    return torch.where(positive > 20, positive, torch.log(torch.expm1(positive)))


def _adam_step(
    objective: Objective,
    values: dict[str, torch.Tensor],
    visible: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]],
    name: str,
    optimizer: BatchedAdam,
    active: torch.Tensor,
    block: Block,
) -> None:
    # The leaf shares storage with the stored block, so the in-place step below updates it.
    leaf = values[name].detach().requires_grad_(True)
    with torch.enable_grad():
        shown = visible({**values, name: leaf})
        loss = objective.loss(shown).sum()
        (gradient,) = torch.autograd.grad(loss, leaf)
    with torch.no_grad():
        optimizer.step(gradient, active if block.per_item else None)
        if block.nonnegative:
            values[name].clamp_(min=0)


def _check_finite(loss: torch.Tensor, iteration: int, *, on_non_finite: str) -> None:
    bad = (~torch.isfinite(loss)).nonzero().flatten().tolist()
    if bad:
        where = "at initialisation" if iteration == 0 else f"at iteration {iteration}"
        raise NonFiniteLossError(
            f"The loss became non-finite {where} for item(s) {bad[:10]}"
            f"{' …' if len(bad) > 10 else ''}. Check the input for extreme values, lower "
            "the learning rate, or pass on_non_finite='recover' with the Adam solver."
        )


def _snapshot(values: Mapping[str, torch.Tensor], by_name: Mapping[str, Block]) -> dict:
    return {name: value.clone() for name, value in values.items() if by_name[name].trainable}


def _restore(
    values: dict[str, torch.Tensor],
    snapshot: Mapping[str, torch.Tensor],
    by_name: Mapping[str, Block],
    broken: torch.Tensor,
    optimizers: Mapping[str, BatchedAdam],
) -> None:
    """Put broken items back to their last finite state and halve their step size."""
    for name, saved in snapshot.items():
        if by_name[name].per_item:
            keep = _per_item_view(broken, saved.ndim)
            values[name].copy_(torch.where(keep, saved, values[name]))
        else:
            values[name].copy_(saved)
        optimizer = optimizers.get(name)
        if optimizer is not None:
            optimizer.first_moment.zero_()
            optimizer.second_moment.zero_()
            if optimizer.per_item:
                optimizer.learning_rate[broken] *= 0.5
            else:
                optimizer.learning_rate.mul_(0.5)
