"""The estimator base class: scikit-learn contract, NumPy/torch in and out, save/load."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from decomp._backend import check_memory, like_input, resolve_device, resolve_dtype, to_tensor
from decomp._validation import DEVICE, RANDOM_STATE, check_spectrogram
from decomp.persistence import Persistent

__all__ = ["BaseDecomposer", "ComponentFeatureNames", "FixedDictionaryReconstruction"]


class BaseDecomposer(Persistent, TransformerMixin, BaseEstimator):
    """Shared behaviour of decomp's decomposers.

    Subclasses declare ``_parameter_constraints`` (extending this class's), store their
    arguments in ``__init__`` and learn attributes ending in ``_`` in ``fit``. Fitted
    attributes are NumPy arrays, so estimators pickle, clone and save the same way on
    every device; computation happens in torch on ``device``.

    ``fit`` and ``transform`` start with :meth:`_validate_params`, before anything is
    allocated: numeric parameters use :class:`~decomp._validation.StrictInterval`
    (scikit-learn's ``Interval`` refusing booleans), ``device`` is checked for its form
    and for CUDA being there. Sizes that depend on the data are checked against the free
    memory by :meth:`_check_memory` before the engine allocates anything.
    """

    _parameter_constraints: dict = {
        "device": DEVICE,
        "dtype": [StrOptions({"float32", "float64"}), None],
        "random_state": RANDOM_STATE,
        "progress": ["boolean"],
    }

    def _validate_params(self) -> None:
        """scikit-learn's parameter check, then whether the requested device is there."""
        super()._validate_params()
        self._torch_device()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _negative_objective_per_entry(self, X: Any) -> float:
        """``score``'s value for decomposers with ``decompose``: minus the final objective
        of every item of ``X``, summed and divided by ``X``'s number of entries."""
        result = self.decompose(X)
        return float(-np.sum(result.loss, dtype=np.float64) / int(np.prod(np.shape(X))))

    # --- backend ---------------------------------------------------------------------
    def _torch_device(self) -> torch.device:
        return resolve_device(self.device, owner=type(self).__name__)

    def _check_memory(
        self, n_elements: int, itemsize: int, *, method: str, what: str, hint: str
    ) -> None:
        """Refuse (``MemoryError``) ``n_elements`` of ``itemsize`` bytes beyond the free memory.

        ``n_elements`` is a lower bound of what ``method`` allocates, so a refusal never
        stops a run that would fit; ``what`` says what it is for and how it was counted.
        """
        check_memory(int(n_elements) * int(itemsize), device=self._torch_device(),
                     who=f"{type(self).__name__}.{method}", what=what, hint=hint)

    def _torch_dtype(self, X: Any) -> torch.dtype:
        """The compute dtype: ``dtype`` when set, else float64 for float64 input, else float32."""
        if self.dtype is not None:
            return resolve_dtype(self.dtype)
        if isinstance(X, torch.Tensor):
            return torch.float64 if X.dtype == torch.float64 else torch.float32
        return torch.float64 if np.asarray(X).dtype == np.float64 else torch.float32

    def _generator(self) -> torch.Generator:
        """A torch generator seeded from ``random_state`` (repeatable runs)."""
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        return torch.Generator().manual_seed(seed)

    def _batch(
        self, X: Any, *, name: str = "X", n_bins: int | None = None
    ) -> tuple[torch.Tensor, bool]:
        """Validate ``X`` and return it as a (n_items, n_frames, n_bins) tensor.

        The flag tells whether the input was a single (n_frames, n_bins) spectrogram.
        """
        X = check_spectrogram(X, name=name, n_bins=n_bins, owner=type(self).__name__)
        tensor = to_tensor(X, device=self._torch_device(), dtype=self._torch_dtype(X))
        single = tensor.ndim == 2
        return (tensor.unsqueeze(0) if single else tensor), single


class ComponentFeatureNames(ClassNamePrefixFeaturesOutMixin):
    """``get_feature_names_out`` and ``set_output`` for transforms to ``n_components_`` columns.

    As in scikit-learn's decomposition estimators, ``get_feature_names_out()`` names the
    activations after the class, lower case: ``nmf0, nmf1, …``; a class name that ends in
    a digit gets an underscore (``dds2_0, dds2_1, …``), so the component index stays
    readable. Mixed in before :class:`BaseDecomposer`, whose :class:`TransformerMixin`
    then wraps ``transform`` and ``fit_transform`` for ``set_output`` (``"pandas"``,
    ``"polars"``), which applies to 2-d NumPy input.
    """

    @property
    def _n_features_out(self) -> int:
        return self.n_components_

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns: the class name, lower case, and the component index.

        Parameters
        ----------
        input_features : array-like of str, optional
            Only checked against ``feature_names_in_`` (when fitted on a DataFrame).

        Returns
        -------
        ndarray of str objects, shape (n_components_,)
        """
        check_is_fitted(self, "n_components_")
        _check_feature_names_in(self, input_features, generate_names=False)
        prefix = type(self).__name__.lower()
        prefix += "_" if prefix[-1].isdigit() else ""
        return np.asarray([f"{prefix}{index}" for index in range(self._n_features_out)],
                          dtype=object)


class FixedDictionaryReconstruction(ComponentFeatureNames):
    """``inverse_transform`` and output feature names for decomposers with ``components_``.

    Shared by :class:`~decomp.NMF` and :class:`~decomp.BayesianNMF` (its posterior mean
    dictionary); mixed in before :class:`BaseDecomposer`, whose ``_batch`` it uses. Feature
    names and ``set_output`` come from :class:`ComponentFeatureNames`.
    """

    def inverse_transform(self, X: Any) -> Any:
        """Reconstruct magnitudes from activations: ``X @ components_``.

        Parameters
        ----------
        X : array-like of shape (..., n_frames, n_components)
            Activations.

        Returns
        -------
        ndarray or Tensor of shape (..., n_frames, n_bins)
        """
        check_is_fitted(self)
        batch, single = self._batch(X, name="activations", n_bins=self.n_components_)
        W = torch.as_tensor(self.components_, dtype=batch.dtype, device=batch.device)
        reconstruction = batch @ W
        return like_input(reconstruction[0] if single else reconstruction, X)
