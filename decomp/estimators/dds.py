"""Differentiable Dictionary Search: NMF whose dictionary rows are outputs of flows.

Three variants (Marták, Kelz & Widmer), one engine:

- :class:`DDS1`: one per-source flow per note, one latent code per source per frame.
- :class:`DDS2`: the same flows, ``n_components_per_source`` codes per source shared by
  every frame of an item (NMF's dictionary sharing).
- :class:`DDS3`: one conditional Glow for all sources; each code's semantic part is fixed
  to its source's one-hot label and only the nuisance part is searched.

``fit(X, y)`` trains the flow(s) on isolated-source frames; ``transform`` decomposes by
alternating Adam steps on the codes ``Z`` and the activations ``H`` of
``||X - H relu(f(Z))||_F + λ Σ_k c_k NLL(w_k)``.
"""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from decomp._backend import (
    MATMUL_PRECISIONS,
    like_input,
    resolve_matmul_precision,
    to_tensor,
)
from decomp._validation import StrictInterval, check_labels
from decomp.engine import (
    BETA_LOSSES,
    BetaNMFObjective,
    Block,
    beta_loss_to_float,
    initialize_activations,
    minimize,
)
from decomp.estimators.base import BaseDecomposer, ComponentFeatureNames
from decomp.estimators.flow_objective import FlowDictionaryObjective
from decomp.estimators.nmf import Decomposition
from decomp.estimators.postprocessing import source_membership, sum_by_source
from decomp.flows import DictionaryFlow, InverseNotAvailable, StackedRealNVP
from decomp.flows.training import fit_flow

__all__ = ["DDS1", "DDS2", "DDS3", "FlowDecomposition"]

#: Each fitted flow's copy on the compute device and dtype of the last search, kept
#: outside the estimator so that ``transform`` leaves its ``__dict__`` alone (as
#: scikit-learn requires); an entry goes with its flow.
_FLOW_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


NOISE_COPIES = 2
"""Noisy copies of the training frames a DDS flow trains on besides them (``flow_noise``)."""

INVERSE_START_MIN_SHARE = 0.5
"""Share of the activation after the adapting updates, relative to an even share, below
which ``inverse_start_iterations`` leaves an entry's code at the mode (its adapted row is
fitted to too little of the input to say much). Chosen on cross-font piano validation
(DDS-2, 384-bin STFT, 10 updates) among 0.01, 0.1, 0.5 and 1: frame F1 0.826, 0.826, 0.827
and 0.820 with 25 search iterations, 0.822, 0.822, 0.824 and 0.821 with 10."""

INVERSE_START_SHRINK = 0.5
"""How far (0: the mode, 1: the flow's inverse) ``inverse_start_iterations`` moves a code
towards the inverse of its adapted row. On cross-font piano validation (DDS-2, 384-bin
STFT, 10 updates, 25 search iterations, minimum share 0.01) 0.5 scored frame F1 0.826 with
PSA 0.603, the full inverse 0.826 with PSA 0.578 (0.820 and 0.594 without the start)."""


def _with_noise_copies(frames: np.ndarray, labels: np.ndarray, noise: float, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` (n, F) and :data:`NOISE_COPIES` copies with Gaussian noise of standard
    deviation ``noise`` added, floored at 0; ``labels`` (n,) repeated alike. ``noise = 0``
    returns the inputs."""
    if noise == 0:
        return frames, labels
    rng = np.random.default_rng(seed)
    copies = [np.maximum(frames + noise * rng.standard_normal(frames.shape).astype(
        frames.dtype), 0) for _ in range(NOISE_COPIES)]
    return np.concatenate([frames, *copies]), np.concatenate([labels] * (NOISE_COPIES + 1))


@dataclass
class FlowDecomposition(Decomposition):
    """A :class:`~decomp.estimators.nmf.Decomposition` with the searched dictionary.

    Attributes
    ----------
    dictionary : ndarray or Tensor
        ``relu(f(Z))`` at the end of the search: (n_items, n_components, n_bins) for
        DDS-2/3, (n_items, n_frames, n_sources, n_bins) for DDS-1 (item axis dropped for
        a single spectrogram).
    latent_codes : ndarray or Tensor
        The codes ``Z`` (same leading shape, last axis ``n_latent``); with DDS-3's
        ``shared_codes``, (n_items, n_components_per_source, n_latent).
    source_activations : ndarray or Tensor of shape ([n_items,] n_frames, n_sources)
        Activations rescaled by the norm of their dictionary row and summed per source.
    """

    dictionary: Any = None
    latent_codes: Any = None
    source_activations: Any = None


class _FlowDecomposer(ComponentFeatureNames, BaseDecomposer):
    """What the three DDS variants share; subclasses choose the flow and the code layout.

    Supervised, as a classifier is: ``fit(X, y)`` needs the source label of every
    training frame (the flows are trained per source), so ``y`` is required and
    ``fit(X)`` fails with one clear line. ``transform`` gives (n_frames, n_components)
    activations, named by ``get_feature_names_out`` (``dds2_0, …``) and wrapped by
    ``set_output``; ``score`` is the negative DDS objective per entry.
    """

    _per_frame = False
    # Variant defaults behind the None parameters. The RealNVP sizes keep the shipped
    # 60-note model to a few MB; λ was chosen on cross-font validation chords (see
    # benchmarks/dds_table.py), where the two flow families' NLLs have different scales.
    _default_flow_steps = 4
    _default_hidden_features = 32
    _default_hidden_layers = 1
    _default_likelihood_weight = 100.0

    _parameter_constraints: dict = {
        **BaseDecomposer._parameter_constraints,
        "likelihood_weight": [StrictInterval(Real, 0, None, closed="left"), None],
        "beta_loss": [StrOptions(set(BETA_LOSSES)),
                      StrictInterval(Real, None, None, closed="neither")],
        "max_iter": [StrictInterval(Integral, 1, None, closed="left")],
        "tol": [StrictInterval(Real, 0, None, closed="left")],
        "activation_solver": [StrOptions({"mu", "adam"})],
        "learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
        "latent_learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
        "warm_start_iterations": [StrictInterval(Integral, 0, None, closed="left")],
        "patience": [StrictInterval(Integral, 1, None, closed="left")],
        "n_flow_steps": [StrictInterval(Integral, 1, None, closed="left"), None],
        "hidden_features": [StrictInterval(Integral, 1, None, closed="left"), None],
        "n_hidden_layers": [StrictInterval(Integral, 1, None, closed="left"), None],
        "flow": [DictionaryFlow, None],
        "max_epochs": [StrictInterval(Integral, 0, None, closed="left")],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
        "flow_learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
        "flow_noise": [StrictInterval(Real, 0, None, closed="left")],
        "validation_fraction": [StrictInterval(Real, 0, 1, closed="left")],
        "early_stopping_epochs": [StrictInterval(Integral, 1, None, closed="left")],
        "checkpoint": [str, os.PathLike, None],
        "max_training_seconds": [StrictInterval(Real, 0, None, closed="neither"), None],
        "flow_precision": [StrOptions(set(MATMUL_PRECISIONS))],
    }

    def __init__(
        self,
        *,
        likelihood_weight: float | None = None,
        beta_loss: str | float = "frobenius",
        max_iter: int = 1000,
        tol: float = 1e-4,
        activation_solver: str = "mu",
        learning_rate: float = 0.05,
        latent_learning_rate: float = 0.002,
        warm_start_iterations: int = 0,
        patience: int = 20,
        n_flow_steps: int | None = None,
        hidden_features: int | None = None,
        n_hidden_layers: int | None = None,
        flow: DictionaryFlow | None = None,
        max_epochs: int = 100,
        batch_size: int = 512,
        flow_learning_rate: float = 1e-3,
        flow_noise: float = 0.0,
        validation_fraction: float = 0.2,
        early_stopping_epochs: int = 10,
        checkpoint: str | os.PathLike | None = None,
        max_training_seconds: float | None = None,
        device: str | torch.device = "auto",
        dtype: str | None = None,
        flow_precision: str = "float32",
        random_state: Any = None,
        progress: bool = False,
    ) -> None:
        self.likelihood_weight = likelihood_weight
        self.beta_loss = beta_loss
        self.max_iter = max_iter
        self.tol = tol
        self.activation_solver = activation_solver
        self.learning_rate = learning_rate
        self.latent_learning_rate = latent_learning_rate
        self.warm_start_iterations = warm_start_iterations
        self.patience = patience
        self.n_flow_steps = n_flow_steps
        self.hidden_features = hidden_features
        self.n_hidden_layers = n_hidden_layers
        self.flow = flow
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.flow_learning_rate = flow_learning_rate
        self.flow_noise = flow_noise
        self.validation_fraction = validation_fraction
        self.early_stopping_epochs = early_stopping_epochs
        self.checkpoint = checkpoint
        self.max_training_seconds = max_training_seconds
        self.device = device
        self.dtype = dtype
        self.flow_precision = flow_precision
        self.random_state = random_state
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    # --- subclass hooks ----------------------------------------------------------------
    def _make_flow(self, n_sources: int, n_bins: int, seed: int) -> DictionaryFlow:
        return StackedRealNVP(
            n_sources, n_bins,
            n_blocks=self.n_flow_steps or self._default_flow_steps,
            hidden_features=self.hidden_features or self._default_hidden_features,
            n_hidden_layers=self.n_hidden_layers or self._default_hidden_layers,
            random_state=seed,
        )

    def _flow_weight_count(self, n_sources: int, n_bins: int) -> int:
        """Weights of the flow :meth:`_make_flow` builds (its dense layers' matrices).

        ``n_sources`` RealNVPs of ``n_flow_steps`` couplings, each an MLP from
        ``n_bins // 2`` inputs through ``n_hidden_layers`` layers of ``hidden_features``
        to ``2 * (n_bins - n_bins // 2)`` outputs; biases are left out (a lower bound).
        """
        return n_sources * self._coupling_weight_count(n_bins)

    def _coupling_weight_count(self, n_bins: int) -> int:
        """Dense-layer weights of all coupling MLPs of one flow."""
        hidden = self.hidden_features or self._default_hidden_features
        n_layers = self.n_hidden_layers or self._default_hidden_layers
        n_steps = self.n_flow_steps or self._default_flow_steps
        n_conditioning = n_bins // 2
        per_step = hidden * (n_conditioning + 2 * (n_bins - n_conditioning)) \
            + (n_layers - 1) * hidden * hidden
        return n_steps * per_step

    def _likelihood_weight(self) -> float:
        if self.likelihood_weight is None:
            return self._default_likelihood_weight
        return float(self.likelihood_weight)

    def _components_per_source(self) -> int:
        return 1

    # --- fitting -----------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> _FlowDecomposer:
        """Train the flow dictionary on isolated-source frames.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins)
            Non-negative training frames of isolated sources (e.g. log-compressed
            magnitude spectra of single notes).
        y : array-like of shape (n_frames,)
            Source label of each frame; the distinct labels become :attr:`sources_`.

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            Before anything is computed: a parameter outside its constraints (the
            message names it, what is allowed and what was got; booleans are not ints),
            a CUDA ``device`` on a machine without it, or bad ``X``/``y``.
        MemoryError
            Before the flow is built, if its weights need more than the free memory of
            ``device``; :meth:`decompose` checks its codes, dictionary and activations
            the same way.
        """
        self._validate_params()
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: "
                "it needs source labels, fit(X, y) with one label per frame of X."
            )
        batch, single = self._batch(X)
        if not single:
            raise ValueError(
                f"{type(self).__name__}.fit takes X of shape (n_frames, n_bins); got "
                f"{tuple(batch.shape)}."
            )
        frames = batch[0]
        if frames.shape[1] < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 bins (its coupling flows split "
                f"them in two); got {frames.shape[1]} feature(s).")
        labels = check_labels(y, frames.shape[0])
        sources, source_index = np.unique(labels, return_inverse=True)
        n_bins = frames.shape[1]
        seed = int(self._generator().initial_seed() % (2**31))
        if self.flow is not None:
            flow = copy.deepcopy(self.flow).float().cpu()
            if flow.n_features != n_bins or flow.n_sources != sources.size:
                raise ValueError(
                    f"the given flow models {flow.n_sources} sources of {flow.n_features} "
                    f"bins, but X has {n_bins} bins and y {sources.size} distinct labels."
                )
            history: dict[str, Any] = {}
        else:
            if frames.shape[0] < 2:
                raise ValueError(
                    f"{type(self).__name__}.fit trains its flows on at least 2 frames; got "
                    f"{frames.shape[0]} sample(s).")
            n_weights = self._flow_weight_count(int(sources.size), n_bins)
            self._check_memory(
                2 * n_weights, 4, method="fit",
                what=(f"the flow's {n_weights:,} weights ({sources.size} source(s) of {n_bins} "
                      f"bins, n_flow_steps={self.n_flow_steps or self._default_flow_steps}, "
                      f"hidden_features={self.hidden_features or self._default_hidden_features}"
                      f", n_hidden_layers={self.n_hidden_layers or self._default_hidden_layers}"
                      "; float32 x 2 copies: weights and gradients)"),
                hint="Lower n_flow_steps, hidden_features or n_hidden_layers.",
            )
            flow = self._make_flow(int(sources.size), n_bins, seed)
            flow = flow.to(self._torch_device())
            training_frames, training_labels = _with_noise_copies(
                frames.float().cpu().numpy(), source_index, self.flow_noise, seed)
            result = fit_flow(
                flow, training_frames, training_labels,
                validation_fraction=self.validation_fraction,
                batch_size=self.batch_size,
                learning_rate=self.flow_learning_rate,
                max_epochs=self.max_epochs,
                patience=self.early_stopping_epochs,
                random_state=seed,
                checkpoint=self.checkpoint,
                max_seconds=self.max_training_seconds,
                progress=self.progress,
                desc=f"{type(self).__name__} flow training",
            )
            history = {
                "train_loss": result.train_loss,
                "validation_loss": result.validation_loss,
                "best_epoch": result.best_epoch,
                "best_validation_loss": result.best_validation_loss,
                "n_epochs": result.n_epochs,
                "seconds": result.seconds,
            }
        return self._set_fitted(flow, sources, history)

    def _set_fitted(self, flow: DictionaryFlow, sources: np.ndarray,
                    history: dict[str, Any]) -> _FlowDecomposer:
        """Store the fitted attributes around a trained flow (frozen, CPU, float32)."""
        n_per_source = self._components_per_source()
        self.flow_ = flow.float().cpu().eval().requires_grad_(False)
        self.training_history_ = history
        self.sources_ = sources
        self.n_features_in_ = flow.n_features
        self.component_sources_ = np.repeat(sources, n_per_source)
        self.n_components_ = int(sources.size * n_per_source)
        return self

    @classmethod
    def from_flow(cls, flow: DictionaryFlow, sources: Any, **params: Any) -> _FlowDecomposer:
        """A fitted estimator around an already trained flow, without any data.

        Parameters
        ----------
        flow : DictionaryFlow
            Trained flow; its ``n_sources`` must equal ``len(sources)``.
        sources : array-like of shape (n_sources,)
            The label of each of the flow's sources, ascending (e.g. MIDI pitches).
        **params
            Estimator parameters.

        Returns
        -------
        estimator
            Ready for ``transform``; e.g. ``DDS1.from_flow(dds2.flow_, dds2.sources_)``
            searches DDS-2's per-note flows frame by frame.
        """
        sources = np.asarray(sources)
        if sources.ndim != 1 or sources.size != flow.n_sources:
            raise ValueError(f"sources must have shape (n_sources={flow.n_sources},); got "
                             f"{sources.shape}.")
        if np.any(np.diff(sources) <= 0):
            raise ValueError("sources must be strictly increasing (the flow's source order).")
        estimator = cls(**params)
        estimator._validate_params()
        return estimator._set_fitted(copy.deepcopy(flow), sources, {})

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit on isolated-source frames, then decompose them (see :meth:`transform`)."""
        return self.fit(X, y).transform(X)

    # --- inference ---------------------------------------------------------------------
    def _device_flow(self, dtype: torch.dtype, device: torch.device) -> DictionaryFlow:
        """The fitted flow on the compute device and dtype, frozen (cached per pair)."""
        key = (str(device), dtype)
        cached = _FLOW_COPIES.get(self.flow_)
        if cached is None or cached[0] != key:
            cached = (key, copy.deepcopy(self.flow_).to(device=device, dtype=dtype)
                      .eval().requires_grad_(False))
            _FLOW_COPIES[self.flow_] = cached
        return cached[1]

    def _fitted_components_per_source(self) -> int:
        # The count fixed at fit (``component_sources_``, ``n_components_``): a later
        # set_params(n_components_per_source=...) takes effect at the next fit, as a
        # scikit-learn parameter does, instead of searching codes the fitted attributes
        # do not describe.
        return self.n_components_ // self.sources_.size

    def _component_labels(self, device: torch.device) -> torch.Tensor:
        n_sources = self.sources_.size
        return torch.arange(n_sources, device=device).repeat_interleave(
            self._fitted_components_per_source())

    def _code_index(self, device: torch.device) -> torch.Tensor | None:
        """The code each dictionary entry is generated from (n_components,), or None for
        one code per entry."""
        return None

    def decompose(
        self,
        X: Any,
        *,
        max_iter: int | None = None,
        callback: Callable[[int, dict[str, torch.Tensor], torch.Tensor], None] | None = None,
    ) -> FlowDecomposition:
        """Search the dictionary and the activations for ``X``, with diagnostics.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            Non-negative spectrogram(s) in the front end the flows were trained on. A
            batch is decomposed in one engine call; each item gets its own codes and
            stops on its own.
        max_iter : int, optional
            Overrides ``max_iter``.
        callback : callable, optional
            ``callback(iteration, state, loss)`` every 10 iterations, where ``state``
            holds ``"H"``, ``"Z"``, ``"W"`` (the dictionary), ``"reconstruction_error"``
            and ``"likelihood_penalty"`` (each (n_items,)), and ``loss`` is (n_items,).

        Returns
        -------
        FlowDecomposition
        """
        check_is_fitted(self)
        self._validate_params()
        batch, single = self._batch(X, n_bins=self.n_features_in_)
        self._check_search_memory(batch)
        flow = self._device_flow(batch.dtype, batch.device)
        n_items, n_frames, _ = batch.shape
        labels = self._component_labels(batch.device)
        code_index = self._code_index(batch.device)
        n_codes = labels.numel() if code_index is None else int(code_index.max()) + 1
        if self._per_frame:
            latent_shape = (n_items, n_frames, n_codes, flow.n_latent)
        else:
            latent_shape = (n_items, n_codes, flow.n_latent)
        # Codes start at the base density's mode, as in the DDS papers (the mode is the
        # same for every label, so a shared code starts there too).
        Z = flow.mode(labels[:n_codes]).expand(latent_shape).clone()
        objective = FlowDictionaryObjective(
            batch, flow=flow, labels=labels, per_frame=self._per_frame,
            likelihood_weight=self._likelihood_weight(),
            beta=beta_loss_to_float(self.beta_loss), code_index=code_index,
            autocast_dtype=resolve_matmul_precision(self.flow_precision, batch.device),
        )
        with torch.no_grad():
            W0 = objective.dictionary({"Z": Z})
        # Small uniform activations scaled so the start reconstructs X's mean level
        # (the papers' ē / (n_sources · n_components_per_source) with ē normalised by the
        # dictionary's level).
        start_dictionary = W0[:, 0] if self._per_frame else W0
        H = initialize_activations(batch, start_dictionary, method="random",
                                   generator=self._generator())
        if self.warm_start_iterations:
            H = self._warm_start(batch, start_dictionary, H)
        Z, H = self._start_codes(batch, start_dictionary, H, flow, labels, Z)
        level = H.mean(dim=(-2, -1)).clamp_min(torch.finfo(H.dtype).tiny)
        blocks = [
            Block("Z", Z, learning_rate=self.latent_learning_rate),
            Block("H", H, nonnegative=True, learning_rate=self.learning_rate * level),
        ]
        wrapped = None
        if callback is not None:
            def wrapped(iteration: int, state: dict, loss: torch.Tensor) -> None:
                with torch.no_grad():
                    error, penalty = objective.terms(state)
                    shown = {**state, "W": objective.dictionary(state),
                             "reconstruction_error": error, "likelihood_penalty": penalty}
                callback(iteration, shown, loss)
        result = minimize(
            objective, blocks, schedule=("Z", "H"),
            solver={"Z": "adam", "H": self.activation_solver},
            max_iter=self.max_iter if max_iter is None else max_iter,
            tol=self.tol, patience=self.patience, check_every=10,
            on_non_finite="recover", progress=self.progress,
            desc=f"{type(self).__name__} search", callback=wrapped,
        )
        Z, H = result.blocks["Z"], result.blocks["H"]
        with torch.no_grad():
            W = objective.dictionary({"Z": Z})
            sources = self._sum_by_source(H, W)

        def shown(value: torch.Tensor) -> Any:
            return like_input(value[0] if single else value, X)

        return FlowDecomposition(
            activations=shown(H),
            loss=result.loss.cpu().numpy(),
            n_iter=result.n_iter,
            converged=result.converged,
            history=result.history,
            history_iterations=result.history_iterations,
            dictionary=shown(W),
            latent_codes=shown(Z),
            source_activations=shown(sources),
        )

    def _warm_start(self, batch: torch.Tensor, dictionary: torch.Tensor,
                    activations: torch.Tensor) -> torch.Tensor:
        """``warm_start_iterations`` NMF updates of ``activations`` (n_items, n_frames,
        n_components) against the fixed starting ``dictionary`` (n_components, n_bins)."""
        return self._nmf_updates(batch, dictionary, activations,
                                 self.warm_start_iterations)[1]

    def _nmf_updates(self, batch: torch.Tensor, dictionary: torch.Tensor,
                     activations: torch.Tensor, n_updates: int, *,
                     adapt_dictionary: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Exactly ``n_updates`` multiplicative updates of the activations and, with
        ``adapt_dictionary``, of a per-item copy of the dictionary (n_items,
        n_components, n_bins); returns the dictionary and the activations."""
        objective = BetaNMFObjective(batch, beta_loss_to_float(self.beta_loss))
        if adapt_dictionary:
            W = Block("W", dictionary.expand(batch.shape[0], *dictionary.shape[-2:]).clone(),
                      nonnegative=True)
        else:
            W = Block("W", dictionary, trainable=False, per_item=False)
        # tol=0: exactly n_updates, whatever the loss does.
        blocks = minimize(objective, [W, Block("H", activations, nonnegative=True)],
                          schedule=("W", "H") if adapt_dictionary else ("H",), solver="mu",
                          max_iter=n_updates, tol=0.0).blocks
        return blocks["W"], blocks["H"]

    def _start_codes(self, batch: torch.Tensor, dictionary: torch.Tensor,
                     activations: torch.Tensor, flow: DictionaryFlow, labels: torch.Tensor,
                     codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes and activations the search starts from: unchanged here (the mode)."""
        return codes, activations

    def _check_search_memory(self, batch: torch.Tensor) -> None:
        """Refuse, before allocating, a search whose codes, dictionary and activations
        exceed the free memory (each counted twice: value and gradient; the flow's
        intermediate activations are left out, so this is a lower bound)."""
        n_items, n_frames, n_bins = batch.shape
        n_components = self.n_components_
        rows = n_items * (n_frames if self._per_frame else 1) * n_components
        itemsize = batch.element_size()
        per_row = self.flow_.n_latent + n_bins
        layout = f"{n_frames} frames x " if self._per_frame else ""
        self._check_memory(
            2 * (rows * per_row + n_items * n_frames * n_components), itemsize,
            method="transform",
            what=(f"its codes and dictionary ({n_items} item(s) x {layout}{n_components} "
                  f"components x (n_latent={self.flow_.n_latent} + n_bins={n_bins})) and "
                  f"activations ({n_items} x {n_frames} frames x {n_components}), "
                  f"{itemsize} bytes x 2 copies"),
            hint=("Pass fewer frames or items at a time" + (
                "." if self._per_frame else ", or lower n_components_per_source.")),
        )

    def _sum_by_source(self, H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        if self._per_frame:
            # One entry per source per frame: rescaling is all there is to do.
            return H * torch.linalg.vector_norm(W, dim=-1)
        membership = torch.as_tensor(
            source_membership(self.component_sources_, self.sources_), device=H.device)
        return sum_by_source(H, W, membership)

    def transform(self, X: Any) -> Any:
        """Activations of ``X`` against its searched dictionary.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)

        Returns
        -------
        ndarray or Tensor of shape ([n_items,] n_frames, n_components)
            Raw activations (for DDS-1, ``n_components == n_sources``); the dictionary
            they weigh differs per item (see :meth:`decompose`).
        """
        return self.decompose(X).activations

    def score(self, X: Any, y: Any = None) -> float:
        """Negative DDS objective per entry of ``X`` after the search (higher is better).

        The objective :meth:`decompose` minimises, ``||X - H relu(f(Z))||_F + λ Σ_k c_k
        NLL(w_k) / n_bins`` per item, summed over the items, divided by ``X.size`` and
        negated, so that ``GridSearchCV`` and ``cross_val_score`` work without a scorer.
        The search is seeded by ``random_state``, so the score is repeatable. It compares
        settings of one ``beta_loss`` and one ``likelihood_weight`` (λ scales the second
        term); for λ or the flow's size, compare on a task metric instead.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
        y : ignored

        Returns
        -------
        float
        """
        return self._negative_objective_per_entry(X)

    def source_activations(self, X: Any) -> Any:
        """Per-source activity of ``X``: activations rescaled by their row's norm, summed.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)

        Returns
        -------
        ndarray or Tensor of shape ([n_items,] n_frames, n_sources)
            Columns follow :attr:`sources_`.
        """
        return self.decompose(X).source_activations

    def sample_dictionary(self, z: Any = None, source: Any = None) -> np.ndarray:
        """Dictionary rows ``relu(f(z))`` for given labels (the latent mode by default).

        Parameters
        ----------
        z : array-like of shape (n, n_latent), optional
            Latent codes; default the mode (zeros) for each requested source.
        source : array-like of shape (n,), optional
            Source labels (values of :attr:`sources_`); default every source once.

        Returns
        -------
        ndarray of shape (n, n_bins)
        """
        check_is_fitted(self)
        sources = self.sources_ if source is None else np.atleast_1d(np.asarray(source))
        index = np.searchsorted(self.sources_, sources)
        bad = (index >= self.sources_.size) | (self.sources_[np.minimum(
            index, self.sources_.size - 1)] != sources)
        if bad.any():
            raise ValueError(f"unknown source label(s) {sources[bad][:5].tolist()}; the "
                             f"model knows {self.sources_[:5].tolist()}...")
        flow = self._device_flow(torch.float32, torch.device("cpu"))
        labels = torch.as_tensor(index)
        if z is None:
            codes = flow.mode(labels)
        else:
            codes = to_tensor(z, device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            return torch.relu(flow.sample(codes, labels)).numpy()



class DDS1(_FlowDecomposer):
    """DDS-1: one RealNVP per source, one latent code per source per frame.

    Each frame ``t`` is approximated by ``Σ_s H[t, s] · relu(f_s(z[t, s]))``: no
    dictionary sharing across time, so cost grows with ``n_frames × n_sources``. It is
    the original formulation, kept as the reference point of the papers' comparison.
    Memory grows the same way (codes and dictionary of shape (n_frames, n_sources,
    n_bins) per item): pass long recordings as a batch of chunks, as
    :class:`~decomp.transcription.PianoTranscriber` does with ``chunk_frames``.

    Parameters
    ----------
    likelihood_weight : float, optional
        λ: weight of the activation-share-weighted negative log-likelihood (nats per
        bin) of the dictionary entries; 0 lets the codes go wherever the reconstruction
        pulls them. None uses the variant's default: 100 for the RealNVP variants
        (DDS-1/2), 1 for DDS-3, whose nuisance NLL has another scale.
    beta_loss : str or float, default="frobenius"
        Reconstruction divergence; for Frobenius the norm ``||X - HW||`` (not squared).
    max_iter : int, default=1000
        Largest number of alternating updates (one code step and one activation step).
    tol : float, default=1e-4
        Improvement, relative to the initial loss, that resets the plateau counter.
    activation_solver : {"mu", "adam"}, default="mu"
        How the activation step is taken: a multiplicative (NMF) update against the
        current dictionary, or an Adam step as in the DDS authors' code. Measured on
        piano chords (log-CQT, 60 notes, 300 iterations), Adam activation steps left the
        fit far from converged (PSA 0.23 against 0.64 for multiplicative updates on the
        same fixed dictionary), so the default is "mu"; the codes always take Adam steps.
    learning_rate : float, default=0.05
        Adam step of the activations (``activation_solver="adam"``), relative to their
        initial level.
    latent_learning_rate : float, default=0.002
        Adam step of the latent codes (absolute: the latent is standard normal). Small
        steps keep the search near the mode, where attribution stays right: on
        cross-font piano chords, 0.05 gave PSA 0.29–0.49 (DDS-2) and 0.25–0.34 (DDS-3),
        0.002 gave 0.44–0.53 and 0.45–0.60 (300 iterations, no warm start). With
        ``warm_start_iterations`` the search needs fewer iterations, and fewer larger
        steps can move the codes no further than many small ones: the shipped DDS-2
        transcriber uses 0.02 for 25 iterations, the shipped DDS-3, whose codes are
        shared by every note (``DDS3(shared_codes=True)``), 0.1 for 50
        (``benchmarks/dds_budget.py``).
    warm_start_iterations : int, default=0
        Multiplicative (NMF) updates of the activations against the starting dictionary
        (every code at the base density's mode) before the search, so that the search
        starts from activations that already explain the input instead of uniform ones.
        They cost no flow evaluation. On cross-font piano validation chords (DDS-3, 50
        search iterations, latent step 0.02) 40 of them raised frame F1 from 0.73 to
        0.78 (``benchmarks/dds_budget.py``). 0 starts from the uniform activations, as
        the papers do.
    patience : int, default=20
        Iterations without improvement before an item's steps are halved; after four
        halvings the item stops.
    n_flow_steps : int, optional
        Coupling blocks per flow (default 4; the papers use 16).
    hidden_features : int, optional
        Width of the coupling MLPs (default 32; the papers use 128).
    n_hidden_layers : int, optional
        Hidden layers of the coupling MLPs (default 1; the papers: 4 dense layers, i.e.
        3 hidden). The defaults keep 60 notes' flows to about 2 M parameters.
    flow : DictionaryFlow, optional
        A trained flow to use as is instead of training one in ``fit``.
    max_epochs, batch_size, flow_learning_rate, validation_fraction, early_stopping_epochs
        Flow training (see :func:`decomp.flows.fit_flow`): Adam, mini-batches, a 80/20
        split with model selection on validation NLL.
    flow_noise : float, default=0.0
        Standard deviation (feature units) of Gaussian noise: when positive, the flow
        trains on the frames plus :data:`NOISE_COPIES` copies with the noise added
        (floored at 0), made before the 80/20 split. It puts a floor under each bin's
        spread, which the frames of one note in one font hardly have between its
        partials. On the log STFT cut at 384 bins, DDS-3's Glow (flow learning rate
        3e-4) went from cross-font validation frame F1 0.752 to 0.819 with 0.1
        (``benchmarks/dds_levers.py``; see the DDS guide for why the shipped DDS-3 does
        not use it yet).
    checkpoint : path, optional
        Flow-training checkpoint; an interrupted ``fit`` resumes from it.
    max_training_seconds : float, optional
        Stop flow training after this long (keeping the best epoch).
    device, dtype, random_state, progress
        As for :class:`~decomp.NMF`.
    flow_precision : {"float32", "bfloat16", "auto"}, default="float32"
        Precision of the flow's matrix products during the search (the flow pass runs
        under :func:`torch.autocast` with bfloat16; its outputs, the reconstruction, the
        activation updates and the warm start stay in ``dtype``). ``"auto"`` uses
        bfloat16 where the device computes it natively (a CUDA GPU that supports it, a
        CPU with Intel AMX) and float32 elsewhere: without AMX a CPU emulates bfloat16
        products and the search gets slower, not faster. The shipped DDS-3 transcriber
        uses ``"auto"``: on the 2-core reference machine (AMX) its search took about
        0.6x the time, at validation frame F1 0.8184 against 0.8195 and equal PSA
        (``benchmarks/dds_budget.py``, ``benchmarks/dds_speed.py``; the DDS guide has
        the figures). Training always runs in float32, and with ``dtype="float64"`` the
        search stays in float64 (autocast leaves float64 products alone).

    Attributes
    ----------
    flow_ : DictionaryFlow
        The trained flow (CPU, float32).
    sources_ : ndarray of shape (n_sources,)
    component_sources_ : ndarray of shape (n_components,)
    n_components_ : int
    n_features_in_ : int
    training_history_ : dict
        Per-epoch ``train_loss`` and ``validation_loss``, ``best_epoch``, ``seconds``.
    """

    _per_frame = True

    @classmethod
    def paper(cls, **params: Any) -> DDS1:
        """An estimator with the papers' flow size (16 blocks, 4 dense layers of 128)."""
        return cls(**{"n_flow_steps": 16, "hidden_features": 128, "n_hidden_layers": 3,
                      **params})


class DDS2(_FlowDecomposer):
    """DDS-2: one RealNVP per source, ``n_components_per_source`` codes shared over time.

    ``X ≈ H @ relu(f(Z))`` with ``Z`` of shape (n_sources · n_components_per_source,
    n_latent) per item. Parameters are those of :class:`DDS1` plus:

    Parameters
    ----------
    n_components_per_source : int, default=4
        Dictionary entries per source (the DDS-2 paper's default is 20). Fixed at
        :meth:`fit` (``n_components_``): changing it later takes effect at the next fit.
    inverse_start_iterations : int, default=0
        An amortized start through the flow's inverse: after the warm start, this many
        multiplicative (NMF) updates of a free copy of the starting dictionary and of the
        activations adapt every entry to the input; each entry's code then starts
        halfway between the base density's mode and the flow's inverse of its adapted
        row (:data:`INVERSE_START_SHRINK`), and the activations start from the updated
        ones. Entries with less than half an even share of the activation
        (:data:`INVERSE_START_MIN_SHARE`) keep the mode. On cross-font piano validation
        (DDS-2, 384-bin STFT) 10 updates let 10 search iterations score what 25 did
        without (frame F1 0.824 against 0.820, PSA 0.633 against 0.594, 0.9 s against
        1.2-1.6 s of transcription per validation set); on the held-out font that setting
        moved F1 by -0.029 to +0.024 across chords of polyphony 2-5 and a piece (PSA up
        by about 0.06), so the shipped transcribers do not use it
        (``benchmarks/dds_levers.py``, ``benchmarks/dds_table.py``; the DDS guide has the
        figures). The flow must have an inverse. For DDS-3 the inverse of a row gives the
        nuisance code of the semantic part the row itself maps to, not of the entry's
        label, and this start failed there (validation F1 0.48 against 0.77).

    Attributes
    ----------
    See :class:`DDS1`.
    """

    _parameter_constraints: dict = {
        **_FlowDecomposer._parameter_constraints,
        "n_components_per_source": [StrictInterval(Integral, 1, None, closed="left")],
        "inverse_start_iterations": [StrictInterval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_components_per_source: int = 4,
        *,
        inverse_start_iterations: int = 0,
        likelihood_weight: float | None = None,
        beta_loss: str | float = "frobenius",
        max_iter: int = 1000,
        tol: float = 1e-4,
        activation_solver: str = "mu",
        learning_rate: float = 0.05,
        latent_learning_rate: float = 0.002,
        warm_start_iterations: int = 0,
        patience: int = 20,
        n_flow_steps: int | None = None,
        hidden_features: int | None = None,
        n_hidden_layers: int | None = None,
        flow: DictionaryFlow | None = None,
        max_epochs: int = 100,
        batch_size: int = 512,
        flow_learning_rate: float = 1e-3,
        flow_noise: float = 0.0,
        validation_fraction: float = 0.2,
        early_stopping_epochs: int = 10,
        checkpoint: str | os.PathLike | None = None,
        max_training_seconds: float | None = None,
        device: str | torch.device = "auto",
        dtype: str | None = None,
        flow_precision: str = "float32",
        random_state: Any = None,
        progress: bool = False,
    ) -> None:
        # Spelled out (not **params): scikit-learn reads parameters from the signature.
        super().__init__(
            likelihood_weight=likelihood_weight, beta_loss=beta_loss, max_iter=max_iter,
            tol=tol, activation_solver=activation_solver, learning_rate=learning_rate,
            latent_learning_rate=latent_learning_rate,
            warm_start_iterations=warm_start_iterations, patience=patience,
            n_flow_steps=n_flow_steps, hidden_features=hidden_features,
            n_hidden_layers=n_hidden_layers, flow=flow, max_epochs=max_epochs,
            batch_size=batch_size, flow_learning_rate=flow_learning_rate,
            flow_noise=flow_noise, validation_fraction=validation_fraction,
            early_stopping_epochs=early_stopping_epochs, checkpoint=checkpoint,
            max_training_seconds=max_training_seconds, device=device, dtype=dtype,
            flow_precision=flow_precision, random_state=random_state, progress=progress,
        )
        self.n_components_per_source = n_components_per_source
        self.inverse_start_iterations = inverse_start_iterations

    def _components_per_source(self) -> int:
        return self.n_components_per_source

    def _start_codes(self, batch: torch.Tensor, dictionary: torch.Tensor,
                     activations: torch.Tensor, flow: DictionaryFlow, labels: torch.Tensor,
                     codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``inverse_start_iterations`` NMF updates of a free dictionary (n_items,
        n_components, n_bins) and the activations, then codes halfway to the flow's
        inverse of the adapted rows; see the parameter."""
        if not self.inverse_start_iterations:
            return codes, activations
        adapted, activations = self._nmf_updates(
            batch, dictionary, activations, self.inverse_start_iterations,
            adapt_dictionary=True)
        n_items, n_components, n_bins = adapted.shape
        with torch.no_grad():
            try:
                inverse = flow.inverse(adapted.reshape(-1, n_bins).contiguous(),
                                       labels.repeat(n_items)).reshape(codes.shape)
            except InverseNotAvailable:
                raise ValueError(
                    f"inverse_start_iterations needs a flow with an inverse; "
                    f"{type(flow).__name__} has none. Set inverse_start_iterations=0."
                ) from None
            mass = activations.sum(dim=-2)
            share = mass / mass.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)
            active = ((share > INVERSE_START_MIN_SHARE / n_components).unsqueeze(-1)
                      & torch.isfinite(inverse).all(dim=-1, keepdim=True))
            shrink = INVERSE_START_SHRINK
            codes = torch.where(active, (1 - shrink) * codes + shrink * inverse, codes)
        return codes, activations

    @classmethod
    def paper(cls, **params: Any) -> DDS2:
        """The papers' configuration: 16 coupling blocks of 4 dense layers of 128 SELU
        units, 20 components per source."""
        return cls(**{"n_flow_steps": 16, "hidden_features": 128, "n_hidden_layers": 3,
                      "n_components_per_source": 20, **params})


class DDS3(DDS2):
    """DDS-3: one conditional Glow for all sources; only nuisance codes are searched.

    The flow's latent splits into a semantic part (one dim per source, fixed to the
    entry's one-hot label) and a nuisance part (``n_bins - n_sources`` dims, searched).
    Parameters are those of :class:`DDS2` plus ``shared_codes``; ``n_flow_steps``
    (default 8) counts Glow steps (ActNorm, LU mixing, affine coupling) and
    ``hidden_features`` (default 256) the width of the coupling MLPs. :meth:`paper` gives
    the paper's 32 steps of 1024 units.

    Parameters
    ----------
    shared_codes : bool, default=False
        Search ``n_components_per_source`` nuisance codes shared by every source instead
        of ``n_components_per_source`` per source: entry ``k`` of every source is
        generated from code ``k`` under that source's label. The Glow is trained to
        keep the source out of the nuisance part, so a shared code stands for what the
        sources of one recording have in common (for piano notes, the instrument and the
        room), and every note's evidence moves it. The codes' share of the likelihood
        penalty is counted per entry, as without sharing. Cannot be combined with
        ``inverse_start_iterations``. See the DDS guide for what it measured on piano
        transcription (the shipped ``piano-dds3`` searches this way).

    Attributes
    ----------
    See :class:`DDS1`.
    """

    _default_flow_steps = 8
    _default_hidden_features = 256
    _default_hidden_layers = 2
    _default_likelihood_weight = 1.0

    _parameter_constraints: dict = {
        **DDS2._parameter_constraints,
        "shared_codes": ["boolean"],
    }

    def __init__(
        self,
        n_components_per_source: int = 4,
        *,
        shared_codes: bool = False,
        inverse_start_iterations: int = 0,
        likelihood_weight: float | None = None,
        beta_loss: str | float = "frobenius",
        max_iter: int = 1000,
        tol: float = 1e-4,
        activation_solver: str = "mu",
        learning_rate: float = 0.05,
        latent_learning_rate: float = 0.002,
        warm_start_iterations: int = 0,
        patience: int = 20,
        n_flow_steps: int | None = None,
        hidden_features: int | None = None,
        n_hidden_layers: int | None = None,
        flow: DictionaryFlow | None = None,
        max_epochs: int = 100,
        batch_size: int = 512,
        flow_learning_rate: float = 1e-3,
        flow_noise: float = 0.0,
        validation_fraction: float = 0.2,
        early_stopping_epochs: int = 10,
        checkpoint: str | os.PathLike | None = None,
        max_training_seconds: float | None = None,
        device: str | torch.device = "auto",
        dtype: str | None = None,
        flow_precision: str = "float32",
        random_state: Any = None,
        progress: bool = False,
    ) -> None:
        # Spelled out (not **params): scikit-learn reads parameters from the signature.
        super().__init__(
            n_components_per_source, inverse_start_iterations=inverse_start_iterations,
            likelihood_weight=likelihood_weight, beta_loss=beta_loss, max_iter=max_iter,
            tol=tol, activation_solver=activation_solver, learning_rate=learning_rate,
            latent_learning_rate=latent_learning_rate,
            warm_start_iterations=warm_start_iterations, patience=patience,
            n_flow_steps=n_flow_steps, hidden_features=hidden_features,
            n_hidden_layers=n_hidden_layers, flow=flow, max_epochs=max_epochs,
            batch_size=batch_size, flow_learning_rate=flow_learning_rate,
            flow_noise=flow_noise, validation_fraction=validation_fraction,
            early_stopping_epochs=early_stopping_epochs, checkpoint=checkpoint,
            max_training_seconds=max_training_seconds, device=device, dtype=dtype,
            flow_precision=flow_precision, random_state=random_state, progress=progress,
        )
        self.shared_codes = shared_codes

    def _code_index(self, device: torch.device) -> torch.Tensor | None:
        """With ``shared_codes``, entry ``k`` of every source from code ``k``."""
        if not self.shared_codes:
            return None
        n_per_source = self._fitted_components_per_source()
        return torch.arange(n_per_source, device=device).repeat(self.sources_.size)

    def _start_codes(self, batch: torch.Tensor, dictionary: torch.Tensor,
                     activations: torch.Tensor, flow: DictionaryFlow, labels: torch.Tensor,
                     codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared_codes and self.inverse_start_iterations:
            raise ValueError(
                "inverse_start_iterations starts each entry's own code from the inverse of "
                "its row, which shared_codes=True does not have; set one of them off.")
        return super()._start_codes(batch, dictionary, activations, flow, labels, codes)

    def _flow_weight_count(self, n_sources: int, n_bins: int) -> int:
        """One Glow for all sources: its coupling MLPs plus an (n_bins, n_bins) LU mixing
        matrix per step."""
        n_steps = self.n_flow_steps or self._default_flow_steps
        return self._coupling_weight_count(n_bins) + n_steps * n_bins * n_bins

    def _make_flow(self, n_sources: int, n_bins: int, seed: int) -> DictionaryFlow:
        from decomp.flows import ConditionalGlow

        if n_bins <= n_sources:
            raise ValueError(
                f"DDS3 needs more bins than sources (the latent holds one semantic dim per "
                f"source plus nuisance dims); got {n_bins} bins and {n_sources} sources."
            )
        return ConditionalGlow(
            n_sources, n_bins,
            n_steps=self.n_flow_steps or self._default_flow_steps,
            hidden_features=self.hidden_features or self._default_hidden_features,
            n_hidden_layers=self.n_hidden_layers or self._default_hidden_layers,
            random_state=seed,
        )

    @classmethod
    def paper(cls, **params: Any) -> DDS3:
        """The paper's configuration: 32 Glow steps with coupling MLPs of 3 dense layers of
        1024 Leaky-ReLU units, 20 components per source."""
        return cls(**{"n_flow_steps": 32, "hidden_features": 1024, "n_hidden_layers": 2,
                      "n_components_per_source": 20, **params})
