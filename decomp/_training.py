"""The one training loop: :func:`train`, with its epoch of steps and its checkpoints.

:func:`decomp.flows.fit_flow` and the amortized separators' ``fit`` hand :func:`train`
their model, a loss per batch, a validation function and the batches of each epoch; the
loop owns the gradient steps, the best weights, patience, the time budget, the progress
bar, the per-epoch checkpoint (random states included) and the exact resumption. A
checkpoint holds only tensors, numbers, strings, lists and dicts, so it is read with
``weights_only=True``.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from decomp._files import atomic_write
from decomp.exceptions import NonFiniteLossError

__all__ = ["TrainingResult", "cosine_decay", "load_checkpoint", "run_epoch", "save_checkpoint",
           "train"]


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


@dataclass
class TrainingResult:
    """What :func:`train` returns (the model itself holds the best weights).

    Attributes
    ----------
    history : dict of str to ndarray of shape (n_epochs,)
        ``"train_loss"`` (mean of ``losses_of(batch)["loss"]`` over each epoch's steps),
        ``"validation_loss"`` (``validate()`` after each epoch) and ``"train_<name>"`` for
        every other entry ``losses_of`` returns; epochs of resumed runs included.
    initial_validation_loss : float
        ``validate()`` of the weights training started from (epoch 0).
    best_epoch : int
        Epoch (1-based) whose weights were kept; 0 when the starting weights were best.
    best_validation_loss : float
    n_epochs : int
        Epochs run, counting those of earlier runs resumed from a checkpoint.
    stopped_early : bool
        Whether training stopped because the validation loss stopped improving.
    resumed_epoch : int
        The epoch a checkpoint resumed from (0: a fresh start).
    seconds : float
        Wall-clock time of this call.
    earlier_seconds : float
        The time the resumed checkpoint recorded for the runs before this one, each
        counted from its ``started`` to its last checkpoint (0 for a fresh start). A
        caller's own training time is this plus the time since its ``started``.
    """

    history: dict[str, np.ndarray]
    initial_validation_loss: float
    best_epoch: int
    best_validation_loss: float
    n_epochs: int
    stopped_early: bool
    resumed_epoch: int
    seconds: float
    earlier_seconds: float


#: What :func:`train` writes into a checkpoint besides the format and the fingerprint
#: (and ``"training_seconds"``, which checkpoints written before decomp recorded it lack).
_CHECKPOINT_KEYS = frozenset({
    "epoch", "model", "optimizer", "stateful", "best_model", "best_loss", "best_epoch",
    "since_best", "initial_validation_loss", "history", "rng"})


def cosine_decay(max_epochs: int, decay_epochs: int,
                 final_factor: float = 0.01) -> Callable[[int], float]:
    """A learning-rate factor that holds 1, then falls along a half cosine.

    The factor is 1 up to epoch ``max_epochs - decay_epochs`` and reaches
    ``final_factor`` at epoch ``max_epochs`` (SGDR's cosine annealing without restarts,
    started late so that a run at a constant rate can be resumed into its decay).

    Parameters
    ----------
    max_epochs : int
        The run's last epoch.
    decay_epochs : int
        Epochs over which the factor falls (0: it stays 1).
    final_factor : float
        The factor at ``max_epochs``.

    Returns
    -------
    callable
        ``epoch -> factor`` for :func:`train`'s ``learning_rate_factor``.
    """
    start = max_epochs - decay_epochs

    def factor(epoch: int) -> float:
        if decay_epochs <= 0 or epoch <= start:
            return 1.0
        progress = min(1.0, (epoch - start) / decay_epochs)
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _rng_states(generators: Sequence[np.random.Generator]) -> dict[str, Any]:
    """Every random state a training run may draw from, for its checkpoint."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()),  # (version, tuple of ints, gauss): list for the file
        "numpy": [generator.bit_generator.state for generator in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any], generators: Sequence[np.random.Generator]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if len(states["numpy"]) != len(generators):
        raise ValueError(f"the checkpoint holds {len(states['numpy'])} NumPy generator "
                         f"states; this run has {len(generators)} generators.")
    for generator, state in zip(generators, states["numpy"], strict=True):
        generator.bit_generator.state = state
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def train(
    model: torch.nn.Module,
    losses_of: Callable[[Any], dict[str, torch.Tensor]],
    validate: Callable[[], float],
    epoch_batches: Callable[[int], Iterable[Any]],
    optimizer: torch.optim.Optimizer,
    *,
    max_epochs: int,
    patience: int,
    max_seconds: float | None = None,
    started: float | None = None,
    parameters: Sequence[torch.nn.Parameter] | None = None,
    max_grad_norm: float | None = None,
    after_step: Callable[[Any], None] | None = None,
    stateful: dict[str, Any] | None = None,
    generators: Sequence[np.random.Generator] = (),
    on_start: Callable[[], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_format: str = "decomp-training-checkpoint",
    fingerprint: dict[str, Any] | None = None,
    what: str = "training",
    non_finite_hint: str = "lower the learning rate or check the data's scale.",
    progress: bool = False,
    desc: str = "training",
    learning_rate_factor: Callable[[int], float] | None = None,
) -> TrainingResult:
    """The one training loop: epochs of steps, model selection, early stop, checkpoints.

    The caller hands it its parts (like asteroid's ``System``): the model, what one batch
    costs, how the model is validated and which batches make an epoch. The loop owns the
    rest: the gradient steps (:func:`run_epoch`), the copy of the weights with the lowest
    validation loss (restored at the end), patience, the time budget, a progress bar, a
    checkpoint written atomically after every epoch (weights, optimisers, best weights,
    counters, history, the training time so far and every random state: torch's, CUDA's,
    Python's ``random`` and the NumPy generators in ``generators``) and the exact
    resumption from it.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place; put in train mode for each epoch and in eval mode before
        ``validate``. At the end it holds the best weights and is in eval mode.
    losses_of : callable
        ``batch -> {"loss": Tensor, ...}``: ``"loss"`` is minimised, the other entries
        are averaged per epoch and logged as ``"train_<name>"``.
    validate : callable
        ``() -> float``, the validation loss of the current weights (lower is better;
        NaN/inf never counts as an improvement).
    epoch_batches : callable
        ``epoch -> iterable of batches`` for epoch ``epoch`` (1-based). For an exact
        resumption it must depend only on ``epoch`` and the run's settings (e.g. a
        generator seeded with ``(random_state, epoch)``) or on ``generators``.
    optimizer : torch.optim.Optimizer
        Steps on ``"loss"``.
    max_epochs : int
        Total epochs, counting those of a resumed run (so a resumed run may be longer).
    patience : int
        Stop after this many epochs without a lower validation loss.
    max_seconds : float, optional
        Start no epoch once this many seconds have passed since ``started``.
    started : float, optional
        ``time.perf_counter()`` when the caller's work began (default: now).
    parameters : sequence of Parameter, optional
        Whose gradient norm is clipped (default: the model's trainable parameters).
    max_grad_norm : float or None
        Gradient clipping threshold (None: none).
    after_step : callable, optional
        Called with the batch after each step (e.g. an adversary's own update).
    stateful : dict of str to object with ``state_dict``/``load_state_dict``, optional
        More state the checkpoint saves and restores (e.g. an adversary's optimiser).
    generators : sequence of numpy.random.Generator
        Generators the caller draws from across epochs; their states are checkpointed.
    on_start : callable, optional
        Called once before the initial validation when training does not resume (e.g. a
        data-dependent initialisation).
    checkpoint : path, optional
        Written after every epoch; if it exists when training starts, training resumes
        from it (:func:`load_checkpoint` checks ``checkpoint_format`` and
        ``fingerprint``).
    checkpoint_format, fingerprint, what
        The file's format tag, the settings and data summary a resumption must match,
        and what kind of training it is (for messages).
    non_finite_hint : str
        Advice appended to the error when every batch of an epoch is non-finite.
    progress : bool
        Show a progress bar over epochs.
    desc : str
        The bar's label.
    learning_rate_factor : callable, optional
        ``epoch -> factor`` (1-based epoch): each parameter group's learning rate for the
        epoch is its rate when ``train`` was called times the factor (e.g.
        :func:`cosine_decay`). A function of the epoch alone, so a resumed run follows
        the same schedule. None: the rates stay as they are.

    Returns
    -------
    TrainingResult

    Raises
    ------
    NonFiniteLossError
        If every batch of an epoch gives a non-finite loss (the best weights are
        restored first).
    ValueError
        If the checkpoint cannot be read or belongs to another run.
    """
    started = time.perf_counter() if started is None else started
    began = time.perf_counter()
    stateful = dict(stateful or {})
    fingerprint = dict(fingerprint or {})
    parameters = (list(parameters) if parameters is not None
                  else [parameter for parameter in model.parameters() if parameter.requires_grad])
    history: dict[str, list[float]] = {"train_loss": [], "validation_loss": []}
    # Read before a checkpoint's optimiser state (whose rates are scheduled) replaces them.
    base_rates = [group["lr"] for group in optimizer.param_groups]
    epoch = best_epoch = since_best = resumed_epoch = 0
    earlier_seconds = 0.0  # training time of the runs a checkpoint resumes
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = load_checkpoint(path, checkpoint_format, fingerprint, what=what)
        missing = sorted(_CHECKPOINT_KEYS - set(state))
        if missing:
            raise ValueError(f"checkpoint {str(path)!r} was written by an older decomp "
                             f"(it lacks {missing}); delete it to start afresh.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for name, value in stateful.items():
            value.load_state_dict(state["stateful"][name])
        best_state, best_loss = state["best_model"], state["best_loss"]
        epoch, best_epoch, since_best = state["epoch"], state["best_epoch"], state["since_best"]
        initial_loss, history = state["initial_validation_loss"], state["history"]
        _set_rng_states(state["rng"], generators)
        resumed_epoch = epoch
        if "training_seconds" in state:
            earlier_seconds = float(state["training_seconds"])
        else:
            warnings.warn(f"checkpoint {str(path)!r} does not record how long its earlier runs "
                          "trained (an older decomp wrote it); the training time reported "
                          "counts from this resumption.", RuntimeWarning, stacklevel=2)
    else:
        if on_start is not None:
            on_start()
        model.eval()
        initial_loss = best_loss = float(validate())
        best_state = copy.deepcopy(model.state_dict())
    # Patience is read afresh, so a resumed run may be given more of it.
    stopped_early = since_best >= patience

    bar = tqdm(total=max_epochs, initial=min(epoch, max_epochs), desc=desc, unit="epoch",
               leave=False, disable=not progress)
    with bar:
        while epoch < max_epochs and not stopped_early:
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                break
            epoch += 1
            if learning_rate_factor is not None:
                factor = float(learning_rate_factor(epoch))
                for group, rate in zip(optimizer.param_groups, base_rates, strict=True):
                    group["lr"] = rate * factor
            model.train()
            means, n_finite = run_epoch(epoch_batches(epoch), losses_of, optimizer,
                                        parameters, max_grad_norm, after_step)
            if n_finite == 0:
                model.load_state_dict(best_state)
                model.eval()
                raise NonFiniteLossError(
                    f"every batch of epoch {epoch} gave a non-finite training loss; "
                    f"{non_finite_hint}")
            model.eval()
            for key, value in means.items():
                history.setdefault("train_loss" if key == "loss" else f"train_{key}",
                                   []).append(value)
            loss = float(validate())
            history["validation_loss"].append(loss)
            if math.isfinite(loss) and (not math.isfinite(best_loss) or loss < best_loss):
                best_loss, best_epoch, since_best = loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                stopped_early = since_best >= patience
            bar.update(1)
            bar.set_postfix(train=f"{history['train_loss'][-1]:.4g}", val=f"{loss:.4g}",
                            best=best_epoch)
            if path is not None:
                save_checkpoint(path, {
                    "format": checkpoint_format, "fingerprint": fingerprint, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "stateful": {name: value.state_dict() for name, value in stateful.items()},
                    "best_model": best_state, "best_loss": best_loss,
                    "best_epoch": best_epoch, "since_best": since_best,
                    "initial_validation_loss": initial_loss, "history": history,
                    "rng": _rng_states(generators),
                    "training_seconds": earlier_seconds + time.perf_counter() - started,
                })
    model.load_state_dict(best_state)
    model.eval()
    return TrainingResult(
        history={key: np.asarray(value, dtype=float) for key, value in history.items()},
        initial_validation_loss=float(initial_loss),
        best_epoch=int(best_epoch),
        best_validation_loss=float(best_loss),
        n_epochs=int(epoch),
        stopped_early=bool(stopped_early),
        resumed_epoch=int(resumed_epoch),
        seconds=time.perf_counter() - began,
        earlier_seconds=earlier_seconds,
    )
