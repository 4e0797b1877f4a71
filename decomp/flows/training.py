"""Training flow dictionaries: :func:`fit_flow`.

Every :class:`~decomp.flows.DictionaryFlow` trains the same way: Adam on mini-batches of
labelled frames and a stratified train/validation split, run by the library's one
training loop (:func:`decomp._training.train`: model selection on the validation
criterion, early stopping, time budget, progress bar, and a checkpoint with the random
states that lets a long run resume exactly where it stopped). What is minimised is the
flow's business (``training_losses``; an adversary, if the flow has one, gets its own
optimiser and ``adversary_loss``), so the per-source RealNVP and the conditional Glow
share this loop.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from decomp._training import train
from decomp._validation import StrictInterval, check_finite, check_params
from decomp.flows.base import DictionaryFlow

__all__ = ["FlowTrainingResult", "fit_flow", "stratified_split"]

_CHECKPOINT_FORMAT = "decomp-flow-checkpoint"


@dataclass
class FlowTrainingResult:
    """What :func:`fit_flow` returns (the flow itself is trained in place).

    Attributes
    ----------
    train_loss : ndarray of shape (n_epochs,)
        Mean of ``training_losses(...)["loss"]`` over each epoch's batches.
    validation_loss : ndarray of shape (n_epochs,)
        Mean validation criterion (``validation_loss``, nats per row) after each epoch.
    best_epoch : int
        Epoch (1-based) whose weights were kept; 0 when the untrained flow was best.
    best_validation_loss : float
    n_epochs : int
        Epochs run, counting those of earlier runs resumed from a checkpoint.
    stopped_early : bool
        Whether training stopped because the validation loss stopped improving.
    seconds : float
        Wall-clock time of this call.
    n_train, n_validation : int
        Frames in each part of the split.
    """

    train_loss: np.ndarray
    validation_loss: np.ndarray
    best_epoch: int
    best_validation_loss: float
    n_epochs: int
    stopped_early: bool
    seconds: float
    n_train: int
    n_validation: int
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def stratified_split(
    labels: np.ndarray, validation_fraction: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices so that every label keeps its share in both parts.

    Each label with at least two rows puts ``round(validation_fraction * count)`` of them
    (at least one) in validation; a label with one row stays in training.

    Returns
    -------
    train_index, validation_index : ndarray of int
        Sorted row indices.
    """
    rng = np.random.default_rng(random_state)
    train, validation = [], []
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        rng.shuffle(index)
        n_validation = 0
        if validation_fraction > 0 and index.size >= 2:
            n_validation = min(index.size - 1,
                               max(1, round(validation_fraction * index.size)))
        validation.append(index[:n_validation])
        train.append(index[n_validation:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def _check_data(flow: DictionaryFlow, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != flow.n_features:
        raise ValueError(
            f"X must have shape (n_frames, n_features={flow.n_features}); got {X.shape}."
        )
    if X.dtype.kind not in "fiu":
        raise ValueError(f"X must be numeric; got dtype {X.dtype}.")
    check_finite(X, "X")
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), one label per frame; "
                         f"got {y.shape}.")
    if y.dtype.kind not in "iu":
        raise ValueError(f"y must hold integer source indices; got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= flow.n_sources):
        raise ValueError(f"y must hold source indices in [0, n_sources={flow.n_sources}); "
                         f"got values in [{y.min()}, {y.max()}].")
    if X.shape[0] < 2:
        raise ValueError(f"fit_flow needs at least 2 frames; got {X.shape[0]}.")
    return X, y.astype(np.int64)


_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_POSITIVE_FLOAT = StrictInterval(Real, 0, None, closed="neither")  # finite, > 0
_FIT_FLOW_CONSTRAINTS: dict[str, list] = {
    "flow": [DictionaryFlow],
    "validation_fraction": [StrictInterval(Real, 0, 1, closed="left")],
    "batch_size": [_POSITIVE_INT],
    "learning_rate": [_POSITIVE_FLOAT],
    "adversary_learning_rate": [_POSITIVE_FLOAT, None],
    "max_epochs": [StrictInterval(Integral, 0, None, closed="left")],
    "patience": [_POSITIVE_INT],
    "max_grad_norm": [_POSITIVE_FLOAT, None],
    "random_state": [StrictInterval(Integral, 0, None, closed="left")],
    "checkpoint": [str, os.PathLike, None],
    "max_seconds": [_POSITIVE_FLOAT, None],
    "progress": ["boolean"],
    "desc": [str],
}


def _mean_validation_loss(
    flow: DictionaryFlow, X: torch.Tensor, y: torch.Tensor, batch_size: int
) -> float:
    if X.shape[0] == 0:
        return float("nan")
    total = 0.0
    with torch.no_grad():
        for start in range(0, X.shape[0], batch_size):
            losses = flow.validation_loss(X[start:start + batch_size],
                                          y[start:start + batch_size])
            total += float(losses.double().sum())
    return total / X.shape[0]


def _flow_parameters(flow: DictionaryFlow) -> list[torch.nn.Parameter]:
    getter = getattr(flow, "flow_parameters", None)
    parameters = list(getter()) if getter is not None else list(flow.parameters())
    return [parameter for parameter in parameters if parameter.requires_grad]


def fit_flow(
    flow: DictionaryFlow,
    X: Any,
    y: Any,
    *,
    validation_fraction: float = 0.2,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    adversary_learning_rate: float | None = None,
    max_epochs: int = 100,
    patience: int = 10,
    max_grad_norm: float | None = 10.0,
    random_state: int = 0,
    checkpoint: str | os.PathLike | None = None,
    max_seconds: float | None = None,
    progress: bool = False,
    desc: str = "training flow",
) -> FlowTrainingResult:
    """Train ``flow`` on labelled frames by maximum likelihood (or its own objective).

    Parameters
    ----------
    flow : DictionaryFlow
        Trained in place, on its current device and dtype. At the end it holds the
        weights of the epoch with the lowest validation loss and is in eval mode.
    X : array-like of shape (n_frames, n_features)
        Training frames (e.g. log-magnitude spectra of isolated notes).
    y : array-like of int, shape (n_frames,)
        Source index of each frame, in [0, flow.n_sources).
    validation_fraction : float, default=0.2
        Share of each source's frames held out for model selection (the DDS papers'
        80/20 split). 0 trains on everything and selects on the training loss.
    batch_size : int, default=512
    learning_rate : float, default=1e-3
        Adam step size of the flow.
    adversary_learning_rate : float, optional
        Adam step size of the flow's adversary, if it has one (default: ``learning_rate``).
    max_epochs : int, default=100
    patience : int, default=10
        Stop after this many epochs without a lower validation loss.
    max_grad_norm : float or None, default=10.0
        Clip the flow's gradient norm (None: no clipping).
    random_state : int, default=0
        Seeds the split and the batch order (epoch ``e`` shuffles with seed
        ``(random_state, e)``, so a resumed run sees the same batches).
    checkpoint : path, optional
        File written after every epoch (atomically), with the weights, optimisers, best
        weights, history and random states. If it exists when training starts, training
        resumes from it exactly (its settings must match; ``max_epochs``, ``patience``
        and ``max_seconds`` may change).
    max_seconds : float, optional
        Stop (keeping the best weights) once this much time has passed.
    progress : bool, default=False
        Show a progress bar over epochs with the current losses.
    desc : str
        Progress bar label.

    Returns
    -------
    FlowTrainingResult

    Raises
    ------
    ValueError
        For badly shaped, non-finite or out-of-range data or settings, or a checkpoint
        written for other data or another flow.
    NonFiniteLossError
        If every batch of an epoch gives a non-finite loss (the learning rate is too
        high or the data badly scaled).
    """
    check_params(_FIT_FLOW_CONSTRAINTS, {
        "flow": flow, "validation_fraction": validation_fraction, "batch_size": batch_size,
        "learning_rate": learning_rate, "adversary_learning_rate": adversary_learning_rate,
        "max_epochs": max_epochs, "patience": patience, "max_grad_norm": max_grad_norm,
        "random_state": random_state, "checkpoint": checkpoint, "max_seconds": max_seconds,
        "progress": progress, "desc": desc,
    }, "fit_flow")
    X_np, y_np = _check_data(flow, X, y)
    batch_size, max_epochs, patience = int(batch_size), int(max_epochs), int(patience)
    random_state = int(random_state)

    started = time.perf_counter()
    parameter = next(flow.parameters())
    device, dtype = parameter.device, parameter.dtype
    train_index, validation_index = stratified_split(y_np, validation_fraction, random_state)
    X_all = torch.as_tensor(X_np, dtype=dtype, device=device)
    y_all = torch.as_tensor(y_np, device=device)
    X_train, y_train = X_all[train_index], y_all[train_index]
    X_validation, y_validation = X_all[validation_index], y_all[validation_index]
    if X_validation.shape[0] == 0:  # select on the training loss
        X_validation, y_validation = X_train, y_train

    flow_optimizer = torch.optim.Adam(_flow_parameters(flow), lr=learning_rate)
    adversary = flow.adversary
    adversary_optimizer = (
        torch.optim.Adam(adversary.parameters(), lr=adversary_learning_rate or learning_rate)
        if adversary is not None else None
    )
    fingerprint = {
        "config": repr(sorted(flow.config().items())),
        "n_frames": int(X_np.shape[0]),
        "data_sum": float(np.float64(X_np.sum(dtype=np.float64))),
        "labels_sum": int(y_np.sum()),
        "validation_fraction": float(validation_fraction),
        "random_state": int(random_state),
        "batch_size": int(batch_size),
    }

    def initialize() -> None:
        flow.train()
        with torch.no_grad():
            first = torch.as_tensor(
                np.random.default_rng(random_state).permutation(X_train.shape[0])[:4096],
                device=device)
            flow.initialize_from_data(X_train[first], y_train[first])

    def adversary_step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        adversary_optimizer.zero_grad(set_to_none=True)
        flow.adversary_loss(*batch).backward()
        adversary_optimizer.step()

    n_train = X_train.shape[0]

    def epoch_batches(epoch: int) -> Any:
        """(X, y) mini-batches of the training rows, shuffled with seed (random_state, epoch)."""
        order = torch.as_tensor(np.random.default_rng([random_state, epoch]).permutation(n_train),
                                device=device)
        for start in range(0, n_train, batch_size):
            batch = order[start:start + batch_size]
            if batch.numel() < 2 and n_train >= 2:
                continue  # a lone row gives a degenerate batch statistic
            yield X_train[batch], y_train[batch]

    result = train(
        flow, lambda batch: flow.training_losses(*batch),
        lambda: _mean_validation_loss(flow, X_validation, y_validation, 4 * batch_size),
        epoch_batches, flow_optimizer,
        max_epochs=max_epochs, patience=patience, max_seconds=max_seconds, started=started,
        parameters=_flow_parameters(flow), max_grad_norm=max_grad_norm,
        after_step=adversary_step if adversary_optimizer is not None else None,
        stateful=({"adversary_optimizer": adversary_optimizer}
                  if adversary_optimizer is not None else None),
        on_start=initialize, checkpoint=checkpoint, checkpoint_format=_CHECKPOINT_FORMAT,
        fingerprint=fingerprint, what="flow-training",
        non_finite_hint=(f"lower the learning rate (now {learning_rate}) or check the data's "
                         "scale."),
        progress=progress, desc=desc,
    )
    history = dict(result.history)
    return FlowTrainingResult(
        train_loss=history.pop("train_loss"),
        validation_loss=history.pop("validation_loss"),
        best_epoch=result.best_epoch,
        best_validation_loss=result.best_validation_loss,
        n_epochs=result.n_epochs,
        stopped_early=result.stopped_early,
        seconds=time.perf_counter() - started,
        n_train=int(train_index.size),
        n_validation=int(validation_index.size),
        extra={key.removeprefix("train_"): value for key, value in history.items()},
    )

