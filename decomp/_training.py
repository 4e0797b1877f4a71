"""What every training loop shares: an epoch of gradient steps, and checkpoints.

:func:`decomp.flows.fit_flow` and the amortized separators' ``fit`` each run their own
epochs (data, validation and model selection differ), but the optimisation steps of an
epoch and the checkpoints that let a long run resume are these. A checkpoint holds only
tensors, numbers, strings, lists and dicts, so it is read with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from decomp._files import atomic_write

__all__ = ["load_checkpoint", "run_epoch", "save_checkpoint"]


def run_epoch(
    batches: Iterable[Any],
    losses_of: Callable[[Any], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    parameters: list[torch.nn.Parameter],
    max_grad_norm: float | None,
    after_step: Callable[[Any], None] | None = None,
) -> tuple[dict[str, float], int]:
    """One pass over an epoch: a gradient step on ``losses_of(batch)["loss"]`` per batch.

    A batch whose loss is not finite is skipped (no step), so one bad batch does not
    spoil the weights; the caller decides what to do when every batch was skipped.

    Parameters
    ----------
    batches : iterable
        The epoch's batches, in order (consumed lazily).
    losses_of : callable
        ``batch -> {"loss": Tensor, ...}``; other entries are averaged for logging.
    optimizer : torch.optim.Optimizer
    parameters : list of Parameter
        Whose gradient norm is clipped.
    max_grad_norm : float or None
        Clipping threshold (None: no clipping).
    after_step : callable, optional
        Called with the batch after each step (e.g. an adversary's own update).

    Returns
    -------
    means : dict of str to float
        Each loss entry averaged over the batches that stepped (empty if none did).
    n_finite : int
        Number of batches that stepped.
    """
    sums: dict[str, float] = {}
    n_finite = 0
    for batch in batches:
        losses = losses_of(batch)
        loss = losses["loss"]
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            continue
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step(batch)
        n_finite += 1
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
    return {key: value / n_finite for key, value in sums.items()}, n_finite


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a unique temporary file, then a rename).

    An interrupted save leaves the previous checkpoint; two runs saving the same path
    never collide.
    """
    with atomic_write(path) as file:
        torch.save(state, file)


def load_checkpoint(
    path: Path, checkpoint_format: str, fingerprint: dict[str, Any], *, what: str
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` for the same run.

    Parameters
    ----------
    path : Path
        The checkpoint file.
    checkpoint_format : str
        The ``"format"`` entry the file must carry.
    fingerprint : dict
        Settings and data summary of the current run; the file's must be equal.
    what : str
        What kind of training wrote it, for messages (e.g. ``"flow-training"``).

    Raises
    ------
    ValueError
        If the file cannot be read, is not such a checkpoint, or was written for other
        data or settings (the message names the differing entries).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a torn or foreign file
        raise ValueError(
            f"checkpoint {str(path)!r} could not be read ({type(error).__name__}: {error}); "
            "delete it to start afresh."
        ) from None
    if not isinstance(state, dict) or state.get("format") != checkpoint_format:
        raise ValueError(f"{str(path)!r} is not a decomp {what} checkpoint.")
    if state["fingerprint"] != fingerprint:
        differing = sorted(key for key in set(fingerprint) | set(state["fingerprint"])
                           if state["fingerprint"].get(key) != fingerprint.get(key))
        raise ValueError(
            f"checkpoint {str(path)!r} was written for other data or settings (differs in "
            f"{differing}); delete it or pass another checkpoint path."
        )
    return state
