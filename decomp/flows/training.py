"""Training flow dictionaries: :func:`fit_flow`.

One loop trains every :class:`~decomp.flows.DictionaryFlow`: Adam on mini-batches of
labelled frames, a stratified train/validation split, model selection on the validation
criterion, early stopping, a progress bar and a checkpoint that lets a long run resume
where it stopped. What is minimised is the flow's business (``training_losses``; an
adversary, if the flow has one, gets its own optimiser and ``adversary_loss``), so the
per-source RealNVP and the conditional Glow share this loop.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from decomp._training import load_checkpoint, run_epoch, save_checkpoint
from decomp._validation import check_finite
from decomp.exceptions import NonFiniteLossError
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


def _check_positive(value: Any, name: str, *, integer: bool = False,
                    allow_zero: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "an int" if integer else "a number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {what} {bound}; got {value!r}.")


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
        File written after every epoch (atomically). If it exists when training
        starts, training resumes from it; its settings must match.
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
    if not isinstance(flow, DictionaryFlow):
        raise TypeError(f"flow must be a DictionaryFlow; got {type(flow).__name__}.")
    X_np, y_np = _check_data(flow, X, y)
    if not (isinstance(validation_fraction, (int, float)) and 0 <= validation_fraction < 1):
        raise ValueError(f"validation_fraction must be in [0, 1); got {validation_fraction!r}.")
    _check_positive(batch_size, "batch_size", integer=True)
    _check_positive(learning_rate, "learning_rate")
    _check_positive(max_epochs, "max_epochs", integer=True, allow_zero=True)
    _check_positive(patience, "patience", integer=True)
    if adversary_learning_rate is not None:
        _check_positive(adversary_learning_rate, "adversary_learning_rate")
    if max_grad_norm is not None:
        _check_positive(max_grad_norm, "max_grad_norm")

    started = time.perf_counter()
    parameter = next(flow.parameters())
    device, dtype = parameter.device, parameter.dtype
    train_index, validation_index = stratified_split(y_np, validation_fraction, random_state)
    X_all = torch.as_tensor(X_np, dtype=dtype, device=device)
    y_all = torch.as_tensor(y_np, device=device)
    X_train, y_train = X_all[train_index], y_all[train_index]
    X_validation, y_validation = X_all[validation_index], y_all[validation_index]
    select_on_train = X_validation.shape[0] == 0
    if select_on_train:
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

    train_losses: list[float] = []
    validation_losses: list[float] = []
    extras: dict[str, list[float]] = {}
    best_epoch, since_best, epoch = 0, 0, 0
    stopped_early = False
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    if checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, _CHECKPOINT_FORMAT, fingerprint,
                                what="flow-training")
        flow.load_state_dict(state["flow"])
        flow_optimizer.load_state_dict(state["flow_optimizer"])
        if adversary_optimizer is not None:
            adversary_optimizer.load_state_dict(state["adversary_optimizer"])
        best_state = state["best_flow"]
        best_epoch, since_best, epoch = state["best_epoch"], state["since_best"], state["epoch"]
        best_loss = state["best_loss"]
        train_losses, validation_losses = state["train_loss"], state["validation_loss"]
        extras = state["extra"]
        stopped_early = state["stopped_early"]
    else:
        flow.train()
        with torch.no_grad():
            first = torch.as_tensor(
                np.random.default_rng(random_state).permutation(X_train.shape[0])[:4096],
                device=device)
            flow.initialize_from_data(X_train[first], y_train[first])
        flow.eval()
        best_loss = _mean_validation_loss(flow, X_validation, y_validation, 4 * batch_size)
        best_state = copy.deepcopy(flow.state_dict())

    def adversary_step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        adversary_optimizer.zero_grad(set_to_none=True)
        flow.adversary_loss(*batch).backward()
        adversary_optimizer.step()

    n_train = X_train.shape[0]

    def batches(order: torch.Tensor) -> Any:
        """(X, y) mini-batches of the training rows in ``order``."""
        for start in range(0, n_train, batch_size):
            batch = order[start:start + batch_size]
            if batch.numel() < 2 and n_train >= 2:
                continue  # a lone row gives a degenerate batch statistic
            yield X_train[batch], y_train[batch]

    bar = tqdm(total=max_epochs, initial=min(epoch, max_epochs), desc=desc,
               disable=not progress, unit="epoch", leave=False)
    with bar:
        while epoch < max_epochs and not stopped_early:
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                break
            epoch += 1
            flow.train()
            order = torch.as_tensor(
                np.random.default_rng([random_state, epoch]).permutation(n_train),
                device=device)

            means, n_finite = run_epoch(
                batches(order), lambda batch: flow.training_losses(*batch), flow_optimizer,
                _flow_parameters(flow), max_grad_norm,
                adversary_step if adversary_optimizer is not None else None)
            if n_finite == 0:
                flow.load_state_dict(best_state)
                raise NonFiniteLossError(
                    f"every batch of epoch {epoch} gave a non-finite training loss; lower "
                    f"the learning rate (now {learning_rate}) or check the data's scale."
                )
            flow.eval()
            train_losses.append(means.pop("loss"))
            for key, value in means.items():
                extras.setdefault(key, []).append(value)
            validation = _mean_validation_loss(flow, X_validation, y_validation, 4 * batch_size)
            validation_losses.append(validation)
            if math.isfinite(validation) and (not math.isfinite(best_loss)
                                              or validation < best_loss):
                best_loss, best_epoch, since_best = validation, epoch, 0
                best_state = copy.deepcopy(flow.state_dict())
            else:
                since_best += 1
                stopped_early = since_best >= patience
            bar.update(1)
            bar.set_postfix(train=f"{train_losses[-1]:.4g}", val=f"{validation:.4g}",
                            best=best_epoch)
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, {
                    "format": _CHECKPOINT_FORMAT,
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "flow": flow.state_dict(),
                    "flow_optimizer": flow_optimizer.state_dict(),
                    "adversary_optimizer": (adversary_optimizer.state_dict()
                                            if adversary_optimizer is not None else None),
                    "best_flow": best_state,
                    "best_epoch": best_epoch,
                    "best_loss": best_loss,
                    "since_best": since_best,
                    "train_loss": train_losses,
                    "validation_loss": validation_losses,
                    "extra": extras,
                    "stopped_early": stopped_early,
                })

    flow.load_state_dict(best_state)
    flow.eval()
    return FlowTrainingResult(
        train_loss=np.asarray(train_losses, dtype=float),
        validation_loss=np.asarray(validation_losses, dtype=float),
        best_epoch=int(best_epoch),
        best_validation_loss=float(best_loss),
        n_epochs=int(epoch),
        stopped_early=bool(stopped_early),
        seconds=time.perf_counter() - started,
        n_train=int(train_index.size),
        n_validation=int(validation_index.size),
        extra={key: np.asarray(value, dtype=float) for key, value in extras.items()},
    )

