"""Non-negative matrix factorisation on the shared inference engine."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from decomp._backend import like_input, to_tensor
from decomp._validation import StrictInterval, check_labels
from decomp.engine import (
    BETA_LOSSES,
    BetaNMFObjective,
    Block,
    beta_loss_to_float,
    initialize_activations,
    initialize_nmf,
    minimize,
)
from decomp.estimators.base import BaseDecomposer, FixedDictionaryReconstruction
from decomp.estimators.postprocessing import source_membership, sum_by_source

__all__ = ["NMF", "Decomposition"]


@dataclass
class Decomposition:
    """The full outcome of decomposing a batch against a fitted dictionary.

    Attributes
    ----------
    activations : ndarray or Tensor of shape ([n_items,] n_frames, n_components)
    loss : ndarray of shape (n_items,)
        Final objective per item.
    n_iter : ndarray of shape (n_items,)
        Iterations each item ran.
    converged : ndarray of shape (n_items,)
    history : ndarray of shape (n_checks, n_items)
        Objective at each check, for plotting convergence.
    history_iterations : ndarray of shape (n_checks,)
    """

    activations: Any
    loss: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    history: np.ndarray
    history_iterations: np.ndarray


class NMF(FixedDictionaryReconstruction, BaseDecomposer):
    """Non-negative matrix factorisation ``X ≈ H @ W`` with β-divergences, batched, CPU/GPU.

    Unsupervised by default (``dictionary="learn"``): ``fit(X)`` learns ``n_components``
    rows and ignores ``y``, as scikit-learn's transformers do, so in a ``Pipeline`` (which
    passes ``y`` to every step) it stays unsupervised. ``dictionary="frames"`` is the
    semi-supervised, over-complete baseline of the DDS papers: ``fit(X, y)`` builds the
    dictionary from the labelled training frames of each source, and it stays fixed while
    activations are inferred; ``dictionary="nmf"`` learns a few rows per source instead.

    Parameters
    ----------
    n_components : int, optional
        Number of dictionary rows learned with ``dictionary="learn"``; None uses
        ``n_bins``. Ignored by the supervised dictionaries. At most ``max(n_frames, n_bins)`` of the
        training data: ``min(n_frames, n_bins)`` components already reconstruct any
        non-negative ``X`` exactly, so beyond the larger one a factorisation can only add
        redundant components (over-complete, sparse dictionaries up to that size are
        allowed). ``fit`` also refuses, before allocating, factors that would not fit in
        the free memory of ``device`` (``MemoryError`` giving the size in GB).
    beta_loss : str or float, default="kullback-leibler"
        The β-divergence minimised: ``"frobenius"`` (β=2), ``"kullback-leibler"``
        (β=1), ``"itakura-saito"`` (β=0), the short ``"euclidean"``, ``"kl"``, ``"is"``,
        or any β as a float.
    solver : {"mu", "adam"}, default="mu"
        Multiplicative updates (fast path) or projected Adam on autograd gradients.
    max_iter : int, default=200
        Largest number of iterations (one iteration updates the dictionary, when it is
        learned, then the activations).
    tol : float, default=1e-4
        Stopping tolerance, relative to the initial loss (see :func:`decomp.engine.minimize`).
    alpha : float, default=0.0
        Regularisation strength; 0 disables it. Scaled as in scikit-learn: the
        activations' terms by ``n_bins`` and the dictionary's by ``n_frames``.
    l1_ratio : float, default=1.0
        Share of L1 (sparsity) in the elastic-net penalty; 1 is pure L1.
    init : {"nndsvda", "random"}, default="nndsvda"
        Initialisation of ``fit(X)``. Activations in ``transform`` start from a constant
        that matches the input's mean energy.
    dictionary : {"learn", "frames", "nmf"}, default="learn"
        How ``fit`` builds the dictionary: ``"learn"``, ``n_components`` rows learned from
        ``X`` (``y`` is ignored); ``"frames"``, the labelled training frames themselves
        (``fit(X, y)``, ``y`` required); ``"nmf"``, ``n_components_per_source`` rows learned
        by NMF on each source's frames (``y`` required).
    n_components_per_source : int, optional
        With ``dictionary="frames"``, keep at most this many frames per source (a random
        subsample; None keeps all). With ``dictionary="nmf"``, the number of components
        learned per source (None means 4).
    learning_rate : float, default=0.05
        Adam step size, relative to the initial level of each block.
    device : str or torch.device, default="auto"
        Where to compute: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or a ``torch.device`` of type cpu or cuda. Anything else, or CUDA on a
        machine without it, is refused when ``fit``/``transform`` starts.
    dtype : {"float32", "float64"}, optional
        Compute dtype; None follows the input (float64 stays float64, others float32).
    random_state : int, RandomState or None
        Seed for initialisation and subsampling.
    progress : bool, default=False
        Show progress bars.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_bins)
        The dictionary ``W``.
    component_sources_ : ndarray of shape (n_components,)
        Source label of each component (its own index for unsupervised fits).
    sources_ : ndarray of shape (n_sources,)
        Distinct source labels, the column order of :meth:`source_activations`.
    n_components_ : int
    n_features_in_ : int
        Number of bins seen in ``fit``.
    n_iter_ : int
        Iterations run by ``fit`` (0 for a dictionary of training frames).
    reconstruction_err_ : float
        Final divergence of ``fit`` (for Frobenius the norm ``||X - HW||``, as in
        scikit-learn); NaN for a dictionary of training frames.
    loss_history_ : ndarray of shape (n_checks,)
        Objective during ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from decomp import NMF
    >>> X = np.random.default_rng(0).random((50, 12))
    >>> model = NMF(n_components=3, random_state=0).fit(X)
    >>> model.transform(X).shape
    (50, 3)
    """

    _parameter_constraints: dict = {
        **BaseDecomposer._parameter_constraints,
        "n_components": [StrictInterval(Integral, 1, None, closed="left"), None],
        "beta_loss": [StrOptions(set(BETA_LOSSES)),
                      StrictInterval(Real, None, None, closed="neither")],
        "solver": [StrOptions({"mu", "adam"})],
        "max_iter": [StrictInterval(Integral, 1, None, closed="left")],
        "tol": [StrictInterval(Real, 0, None, closed="left")],
        "alpha": [StrictInterval(Real, 0, None, closed="left")],
        "l1_ratio": [StrictInterval(Real, 0, 1, closed="both")],
        "init": [StrOptions({"nndsvda", "random"})],
        "dictionary": [StrOptions({"learn", "frames", "nmf"})],
        "n_components_per_source": [StrictInterval(Integral, 1, None, closed="left"), None],
        "learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        n_components: int | None = None,
        *,
        beta_loss: str | float = "kullback-leibler",
        solver: str = "mu",
        max_iter: int = 200,
        tol: float = 1e-4,
        alpha: float = 0.0,
        l1_ratio: float = 1.0,
        init: str = "nndsvda",
        dictionary: str = "learn",
        n_components_per_source: int | None = None,
        learning_rate: float = 0.05,
        device: str | torch.device = "auto",
        dtype: str | None = None,
        random_state: Any = None,
        progress: bool = False,
    ) -> None:
        self.n_components = n_components
        self.beta_loss = beta_loss
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.init = init
        self.dictionary = dictionary
        self.n_components_per_source = n_components_per_source
        self.learning_rate = learning_rate
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.progress = progress

    # --- engine set-up -----------------------------------------------------------------
    def _beta(self) -> float:
        return beta_loss_to_float(self.beta_loss)

    def _regularization(self, n_frames: int, n_bins: int, learn_dictionary: bool) -> tuple:
        """Elastic-net weights per block, scaled as scikit-learn scales them."""
        l1 = {"H": self.alpha * self.l1_ratio * n_bins}
        l2 = {"H": self.alpha * (1 - self.l1_ratio) * n_bins}
        if learn_dictionary:
            l1["W"] = self.alpha * self.l1_ratio * n_frames
            l2["W"] = self.alpha * (1 - self.l1_ratio) * n_frames
        return l1, l2

    def _run(
        self,
        X: torch.Tensor,
        W: torch.Tensor,
        H: torch.Tensor,
        *,
        learn_dictionary: bool,
        desc: str,
        max_iter: int | None = None,
    ):
        l1, l2 = self._regularization(X.shape[-2], X.shape[-1], learn_dictionary)
        objective = BetaNMFObjective(X, self._beta(), l1=l1, l2=l2)
        level = H.mean(dim=(-2, -1))  # (n_items,)
        blocks = [
            Block("W", W, trainable=learn_dictionary, per_item=False, nonnegative=True,
                  learning_rate=float(self.learning_rate * W.mean())),
            Block("H", H, nonnegative=True, learning_rate=self.learning_rate * level),
        ]
        return minimize(
            objective,
            blocks,
            schedule=("W", "H") if learn_dictionary else ("H",),
            solver=self.solver,
            max_iter=self.max_iter if max_iter is None else max_iter,
            tol=self.tol,
            progress=self.progress,
            desc=desc,
        )

    # --- fitting -----------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> NMF:
        """Learn the dictionary.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            Non-negative magnitudes. A batch is treated as one long sequence of frames.
        y : array-like of shape (n_frames,), optional
            Source label of each frame of ``X`` (isolated-source training frames): required
            by ``dictionary="frames"`` and ``"nmf"``, ignored by ``"learn"``.

        Returns
        -------
        self : NMF

        Raises
        ------
        ValueError, TypeError
            Before anything is computed: a parameter outside its constraints (the
            message names it, what is allowed and what was got; booleans are not ints),
            a CUDA ``device`` on a machine without it, ``n_components`` above
            ``max(n_frames, n_bins)``, or bad ``X``/``y``.
        MemoryError
            Before allocating, if the factors need more than the free memory of
            ``device`` (the message gives the size in GB).
        """
        self._fit(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit and return the activations of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            Non-negative magnitudes.
        y : array-like of shape (n_frames,), optional
            Source labels; see :meth:`fit`. The activations are then inferred against the
            fixed dictionary of training frames.

        Returns
        -------
        activations : ndarray or Tensor of shape ([n_items,] n_frames, n_components)
            What :meth:`transform` gives for ``X`` after the fit (scikit-learn's
            contract: ``fit_transform(X)`` equals ``fit(X).transform(X)``), not the
            activations the dictionary was learned with.
        """
        self._fit(X, y)
        return self.transform(X)

    def _fit(self, X: Any, y: Any) -> torch.Tensor | None:
        self._validate_params()
        batch, single = self._batch(X)
        batch_shape = tuple(batch.shape[1:-1]) if single else tuple(batch.shape[:-1])
        n_bins = batch.shape[-1]
        frames = batch.reshape(-1, n_bins)
        self.n_features_in_ = n_bins
        if self.dictionary == "learn":
            n_components = self.n_components or n_bins
            self._check_n_components(frames, n_components)
            H, W, result = self._fit_unsupervised(frames, n_components)
            self.components_ = W.cpu().numpy()
            self.component_sources_ = np.arange(W.shape[0])
            self.sources_ = np.arange(W.shape[0])
            self.n_iter_ = int(result.n_iter.max())
            loss = float(result.loss[0])
            self.reconstruction_err_ = float(np.sqrt(2 * loss)) if self._beta() == 2 else loss
            self.loss_history_ = result.history[:, 0]
            self.n_components_ = W.shape[0]
            return H.reshape(*batch_shape, -1)
        if y is None:
            raise ValueError(
                f"dictionary={self.dictionary!r} builds the dictionary from labelled training "
                "frames: call fit(X, y) with one source label per frame, or use "
                "dictionary='learn' for unsupervised NMF."
            )
        if len(batch_shape) != 1:
            raise ValueError(
                "fit(X, y) takes X of shape (n_frames, n_bins) with one label per frame; got "
                f"X of shape {tuple(batch.shape)}."
            )
        labels = check_labels(y, batch_shape[0])
        self._fit_supervised(frames, labels)
        return None

    def _check_n_components(self, frames: torch.Tensor, n_components: int) -> None:
        """Refuse, before allocating, factors beyond the free memory or the data's size.

        ``frames`` is (n_frames, n_bins). The memory bound counts ``H`` (n_frames,
        n_components) and ``W`` (n_components, n_bins) twice (each value and its update),
        a lower bound of what the engine holds.
        """
        n_frames, n_bins = frames.shape
        itemsize = frames.element_size()
        self._check_memory(
            2 * n_components * (n_frames + n_bins), itemsize,
            method="fit",
            what=(f"its factors (n_components={n_components} x (n_frames={n_frames} + "
                  f"n_bins={n_bins}) x {itemsize} bytes x 2 copies)"),
            hint="Lower n_components, or fit on fewer frames.",
        )
        limit = max(n_frames, n_bins)
        if n_components > limit:
            raise ValueError(
                f"The 'n_components' parameter of NMF must be at most max(n_frames, n_bins) "
                f"= {limit} for X of {n_frames} frames and {n_bins} bins. Got {n_components} "
                f"instead: min(n_frames, n_bins) = {min(n_frames, n_bins)} components already "
                "reconstruct X exactly (H = X and W = identity, or H = identity and W = X), "
                "so more can only be redundant."
            )

    def _fit_unsupervised(self, frames: torch.Tensor, n_components: int, desc: str = "NMF fit"):
        H, W = initialize_nmf(frames, n_components, method=self.init, generator=self._generator())
        result = self._run(frames.unsqueeze(0), W, H.unsqueeze(0), learn_dictionary=True,
                           desc=desc)
        return result.blocks["H"][0], result.blocks["W"], result

    def _fit_supervised(self, frames: torch.Tensor, labels: np.ndarray) -> None:
        sources = np.unique(labels)
        rng = check_random_state(self.random_state)
        rows, row_sources = [], []
        n_iter = 0
        for source in sources:
            index = np.flatnonzero(labels == source)
            if self.dictionary == "frames":
                if self.n_components_per_source is not None and index.size > \
                        self.n_components_per_source:
                    index = np.sort(rng.choice(index, self.n_components_per_source,
                                               replace=False))
                rows.append(frames[torch.as_tensor(index, device=frames.device)])
                row_sources.append(np.full(index.size, source))
            else:
                n_per_source = min(self.n_components_per_source or 4, index.size)
                source_frames = frames[torch.as_tensor(index, device=frames.device)]
                _, W, result = self._fit_unsupervised(
                    source_frames, n_per_source, desc=f"NMF fit source {source}"
                )
                n_iter = max(n_iter, int(result.n_iter.max()))
                rows.append(W)
                row_sources.append(np.full(n_per_source, source))
        W = torch.cat(rows)
        self.components_ = W.cpu().numpy()
        self.component_sources_ = np.concatenate(row_sources)
        self.sources_ = sources
        self.n_components_ = W.shape[0]
        self.n_iter_ = n_iter
        self.reconstruction_err_ = float("nan")
        self.loss_history_ = np.zeros(0)

    # --- inference ---------------------------------------------------------------------
    def decompose(self, X: Any, *, max_iter: int | None = None) -> Decomposition:
        """Infer activations of ``X`` against the fixed dictionary, with diagnostics.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            A batch is decomposed in one engine call; each item stops on its own.
        max_iter : int, optional
            Overrides the estimator's ``max_iter``.

        Returns
        -------
        Decomposition
        """
        check_is_fitted(self)
        self._validate_params()
        batch, single = self._batch(X, n_bins=self.n_features_in_)
        n_items, n_frames, _ = batch.shape
        itemsize = batch.element_size()
        self._check_memory(
            2 * n_items * n_frames * self.n_components_, itemsize,
            method="transform",
            what=(f"the activations ({n_items} item(s) x {n_frames} frames x "
                  f"n_components_={self.n_components_} x {itemsize} bytes x 2 copies)"),
            hint="Pass fewer frames or items at a time.",
        )
        W = torch.as_tensor(self.components_, dtype=batch.dtype, device=batch.device)
        H = initialize_activations(batch, W)
        result = self._run(batch, W, H, learn_dictionary=False, desc="NMF transform",
                           max_iter=max_iter)
        activations = result.blocks["H"]
        return Decomposition(
            activations=like_input(activations[0] if single else activations, X),
            loss=result.loss.cpu().numpy(),
            n_iter=result.n_iter,
            converged=result.converged,
            history=result.history,
            history_iterations=result.history_iterations,
        )

    def score(self, X: Any, y: Any = None) -> float:
        """Negative objective per entry of ``X`` after :meth:`transform` (higher is better).

        The β-divergence of ``X`` from its reconstruction against the fitted dictionary,
        plus the activations' regularisation, divided by ``X.size`` and negated, so that
        ``GridSearchCV`` and ``cross_val_score`` work without a scorer. It only compares
        settings of one ``beta_loss``; more components never score worse on the data they
        were fitted to, so compare on held-out frames.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
        y : ignored

        Returns
        -------
        float
        """
        return self._negative_objective_per_entry(X)

    def transform(self, X: Any) -> Any:
        """Activations of ``X`` against the fitted dictionary (the dictionary stays fixed).

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)

        Returns
        -------
        activations : ndarray or Tensor of shape ([n_items,] n_frames, n_components)
            NumPy for NumPy input, a tensor on the input's device for tensor input.
        """
        return self.decompose(X).activations

    def source_activations(self, X: Any) -> Any:
        """Per-source activity: activations rescaled by dictionary-row norms, summed per source.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)

        Returns
        -------
        ndarray or Tensor of shape (n_frames, n_sources) or (n_items, n_frames, n_sources)
            Columns follow ``sources_``.
        """
        activations = self.transform(X)
        return self.activations_to_sources(activations)

    def activations_to_sources(self, activations: Any) -> Any:
        """Apply the norm rescaling and per-source summation to given activations.

        Parameters
        ----------
        activations : array-like of shape (..., n_frames, n_components)

        Returns
        -------
        ndarray or Tensor of shape (..., n_frames, n_sources)
        """
        check_is_fitted(self)
        tensor = to_tensor(activations, device=self._torch_device(),
                           dtype=self._torch_dtype(activations))
        if tensor.shape[-1] != self.n_components_:
            raise ValueError(
                f"activations have {tensor.shape[-1]} components (last axis) but the model "
                f"has {self.n_components_}."
            )
        W = torch.as_tensor(self.components_, dtype=tensor.dtype, device=tensor.device)
        membership = torch.as_tensor(
            source_membership(self.component_sources_, self.sources_), device=tensor.device
        )
        return like_input(sum_by_source(tensor, W, membership), activations)
