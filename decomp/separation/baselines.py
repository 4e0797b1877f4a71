"""Separation baselines: the oracle ideal ratio mask and semi-supervised NMF with masking."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from decomp._backend import resolve_device
from decomp._validation import DEVICE, RANDOM_STATE, StrictInterval, check_audio, check_params
from decomp.audio._segments import separate_file, stream_segments
from decomp.audio.spectrogram import Spectrogram
from decomp.engine import BETA_LOSSES
from decomp.estimators.nmf import NMF
from decomp.persistence import Persistent

__all__ = ["NMFSeparator", "ideal_ratio_mask"]


def _stft_front_end(front_end: Any) -> Spectrogram:
    """The linear-magnitude STFT front end with the analysis of ``front_end``."""
    if front_end is None:
        return Spectrogram(kind="linear")
    if not isinstance(front_end, Spectrogram):
        raise TypeError(f"front_end must be a decomp.audio.Spectrogram or None; got "
                        f"{type(front_end).__name__}.")
    return front_end.replace(kind="linear", n_bins=None)


def ideal_ratio_mask(
    mixture: Any,
    sources: Any,
    front_end: Spectrogram | None = None,
    *,
    power: float = 1.0,
    eps: float = 1e-12,
) -> Any:
    """Oracle separation with the ideal ratio mask: the upper bound of magnitude masking.

    ``mask_k = |S_k| ** power / sum_j |S_j| ** power`` on the STFT of the true sources,
    applied to the mixture's STFT and inverted with the mixture's phase
    (:meth:`Spectrogram.masks` and :meth:`Spectrogram.separate`). The masks sum to 1 in
    every bin (bins where the sources hold at most ``eps`` give every source
    ``1 / n_sources``), so the outputs sum to the mixture up to STFT round-off.

    Parameters
    ----------
    mixture : ndarray or Tensor of shape (n_samples,) or (n_items, n_samples)
        The mixture(s).
    sources : ndarray or Tensor of shape (n_sources, n_samples) or (n_items, n_sources, n_samples)
        The true sources of each mixture (zero-padded slots get near-zero outputs).
    front_end : Spectrogram, optional
        Its STFT analysis (sample rate, ``n_fft``, hop, window) is used, always on the
        full linear STFT whatever its ``kind``. Default: ``Spectrogram(kind="linear")``.
    power : float, default=1.0
        Exponent on the magnitudes (1: amplitude ratio mask, 2: Wiener-like).
    eps : float, default=1e-12
        Energy below which a bin counts as silent (avoids 0 / 0).

    Returns
    -------
    estimates : ndarray or Tensor of shape ([n_items,] n_sources, n_samples)
        float32 for NumPy input; like ``mixture`` otherwise.

    Raises
    ------
    TypeError, ValueError
        If an input is not finite floating-point audio, or the shapes disagree.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(4000) / 16000
    >>> sources = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 2000 * t)])
    >>> estimates = ideal_ratio_mask(sources.sum(0), sources)
    >>> estimates.shape
    (2, 4000)
    """
    stft_front = _stft_front_end(front_end)
    mixture = check_audio(mixture, name="mixture", allow_batch=True)
    single = mixture.ndim == 1
    expected = "(n_sources, n_samples)" if single else "(n_items, n_sources, n_samples)"
    if getattr(sources, "ndim", None) is None:
        sources = np.asarray(sources)
    if sources.ndim != mixture.ndim + 1:
        raise ValueError(f"sources must have shape {expected} for a mixture of shape "
                         f"{tuple(mixture.shape)}; got shape {tuple(sources.shape)}.")
    if sources.shape[-1] != mixture.shape[-1] or (not single
                                                  and sources.shape[0] != mixture.shape[0]):
        raise ValueError(f"sources of shape {tuple(sources.shape)} do not match the mixture of "
                         f"shape {tuple(mixture.shape)}; expected {expected}.")
    mixtures = [mixture] if single else list(mixture)
    item_sources = [sources] if single else list(sources)
    outputs = []
    for index, (item_mixture, item_source) in enumerate(zip(mixtures, item_sources, strict=True)):
        name = "sources" if single else f"sources[{index}]"
        item_source = check_audio(item_source, name=name, allow_batch=True)
        magnitudes = stft_front(item_source)  # (n_sources, n_frames, n_bins)
        masks = stft_front.masks(magnitudes, power=power, eps=eps)
        outputs.append(stft_front.separate(item_mixture, masks=masks))  # (n_sources, n_samples)
    if single:
        return outputs[0]
    if isinstance(mixture, torch.Tensor):
        return torch.stack(outputs)
    return np.stack(outputs)


def _training_stems(X: Any, y: Any) -> tuple[list[Any], list[Any]]:
    """``{label: stem or stems}`` or ``(stems, labels)`` -> (list of 1-d stems, their labels)."""
    if isinstance(X, Mapping):
        if y is not None:
            raise ValueError("fit takes either a dict {class: stems} without y, or stems and "
                             "labels y; got a dict and y.")
        stems, labels = [], []
        for label, value in X.items():
            items = [value] if getattr(value, "ndim", None) == 1 else list(value)
            if not items:
                raise ValueError(f"class {label!r} has no training stems.")
            stems.extend(items)
            labels.extend([label] * len(items))
        if not stems:
            raise ValueError("X is an empty dict; give at least one class of stems.")
        return stems, labels
    if y is None:
        raise ValueError("NMFSeparator requires y to be passed, but the target y is None: "
                         "give class labels, as a dict {class: stems} or one label per stem "
                         "of X in y.")
    if isinstance(X, (Sequence, np.ndarray, torch.Tensor)) and getattr(X, "ndim", 2) == 2:
        stems = list(X)
    else:
        raise ValueError("X must be a dict {class: stems}, a list of 1-d waveforms or an array "
                         f"of shape (n_stems, n_samples); got {type(X).__name__} of shape "
                         f"{getattr(X, 'shape', None)}.")
    labels = list(y.tolist() if isinstance(y, (np.ndarray, torch.Tensor)) else y)
    if len(labels) != len(stems):
        raise ValueError(f"y has {len(labels)} labels but X has {len(stems)} stems; give one "
                         "label per stem.")
    if not stems:
        raise ValueError("X holds no training stems.")
    return stems, labels


def _stem_features(X: Any, y: Any, front_end: Spectrogram) -> Iterator[tuple[np.ndarray, Any]]:
    """Stems as in :meth:`NMFSeparator.fit` -> (features (n_frames, n_bins), label) each."""
    stems, labels = _training_stems(X, y)
    for index, (stem, label) in enumerate(zip(stems, labels, strict=True)):
        stem = check_audio(stem, name=f"training stem {index} (class {label!r})",
                            allow_batch=False)
        if isinstance(stem, torch.Tensor):
            stem = stem.detach().cpu().numpy()
        yield front_end(stem), label


class NMFSeparator(Persistent, BaseEstimator):
    """Semi-supervised NMF separation baseline: per-class dictionaries and soft masks.

    ``fit`` learns ``n_components_per_source`` NMF components for each class from its
    isolated stems (:class:`decomp.NMF` with ``dictionary="nmf"``) on the front end's
    features. ``separate`` infers the activations of a mixture against the dictionaries
    of the requested classes (kept fixed), reconstructs each class as ``H_k @ W_k`` and
    turns these into masks ``mask_k = (H_k W_k) ** p / sum_j (H_j W_j) ** p`` (``p =
    mask_power``), applied to the mixture's STFT and inverted with its phase
    (:meth:`Spectrogram.separate`). The outputs sum to the mixture.

    Blind, with ``n_sources`` and no classes requested, it chooses the classes itself:
    every class's dictionary explains every ``selection_stride``-th frame of the segment,
    the ``n_sources`` classes whose parts of that model hold the most energy are kept,
    and the segment is separated with theirs. The outputs are then unordered (the
    loudest class first), as a blind separator's are, so the separator can be a member of
    a :class:`~decomp.SeparatorEnsemble` beside blind networks.

    Parameters
    ----------
    n_components_per_source : int, default=8
        NMF components learned per class.
    front_end : Spectrogram, optional
        Feature front end; default ``Spectrogram(kind="linear")``. For the log kinds the
        reconstructions are turned back into magnitudes before masking.
    beta_loss : str or float, default="kullback-leibler"
        β-divergence of the NMF fits (see :class:`decomp.NMF`).
    max_iter : int, default=200
        Iterations of each NMF fit and of the activation inference.
    tol : float, default=1e-4
        Stopping tolerance of the NMF runs.
    mask_power : float, default=1.0
        Exponent ``p`` of the masks (1: the ratio of modelled magnitudes, 2: Wiener).
    n_sources : int, optional
        Blind separation: without requested classes, separate this many classes, chosen
        per segment as above (at most the number of fitted classes). None (default):
        every fitted class is separated.
    selection_stride : int, default=4
        Blind separation chooses the classes on every ``selection_stride``-th frame (1:
        all of them), which costs that fraction of a separation with every class.
    device : str or torch.device, default="auto"
        Where the NMF runs.
    random_state : int, RandomState or None
        Seed of the NMF initialisation.
    progress : bool, default=False
        Show progress bars.

    Attributes
    ----------
    model_ : NMF
        The fitted semi-supervised NMF; ``model_.components_`` of shape
        (n_classes * n_components_per_source, n_bins), ``model_.component_sources_``
        the class of each component.
    classes_ : ndarray of shape (n_classes,)
        The classes seen in ``fit``, sorted.
    front_end_ : Spectrogram
        The front end used.
    n_features_in_ : int
        Number of feature bins.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(8000) / 8000
    >>> low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 1200 * t)
    >>> front_end = Spectrogram(sample_rate=8000, n_fft=256, hop_length=64, kind="linear")
    >>> separator = NMFSeparator(n_components_per_source=2, front_end=front_end,
    ...                          random_state=0).fit({"low": [low], "high": [high]})
    >>> separator.separate(low + high, ["low", "high"]).shape
    (2, 8000)
    """

    _parameter_constraints: dict = {
        "n_components_per_source": [StrictInterval(Integral, 1, None, closed="left")],
        "front_end": [Spectrogram, None],
        "beta_loss": [StrOptions(set(BETA_LOSSES)),
                      StrictInterval(Real, None, None, closed="neither")],
        "max_iter": [StrictInterval(Integral, 1, None, closed="left")],
        "tol": [StrictInterval(Real, 0, None, closed="left")],
        "mask_power": [StrictInterval(Real, 0, None, closed="neither")],
        "n_sources": [StrictInterval(Integral, 1, None, closed="left"), None],
        "selection_stride": [StrictInterval(Integral, 1, None, closed="left")],
        "device": DEVICE,
        "random_state": RANDOM_STATE,
        "progress": ["boolean"],
    }

    def _validate_params(self) -> None:
        """scikit-learn's parameter check, then whether the requested device is there."""
        super()._validate_params()
        resolve_device(self.device, owner=type(self).__name__)

    def __init__(
        self,
        n_components_per_source: int = 8,
        *,
        front_end: Spectrogram | None = None,
        beta_loss: str | float = "kullback-leibler",
        max_iter: int = 200,
        tol: float = 1e-4,
        mask_power: float = 1.0,
        n_sources: int | None = None,
        selection_stride: int = 4,
        device: str | torch.device = "auto",
        random_state: Any = None,
        progress: bool = False,
    ) -> None:
        self.n_components_per_source = n_components_per_source
        self.front_end = front_end
        self.beta_loss = beta_loss
        self.max_iter = max_iter
        self.tol = tol
        self.mask_power = mask_power
        self.n_sources = n_sources
        self.selection_stride = selection_stride
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def fit(self, X: Any, y: Any = None) -> NMFSeparator:
        """Learn each class's dictionary from isolated stems.

        Parameters
        ----------
        X : dict of label to waveforms, or sequence of waveforms
            Either ``{class: stems}``, where ``stems`` is one waveform of shape
            (n_samples,), a list of them (lengths may differ) or an array of shape
            (n_stems, n_samples); or a list / array of waveforms with labels in ``y``.
        y : sequence of shape (n_stems,), optional
            Class label of each stem when ``X`` is not a dict.

        Returns
        -------
        self : NMFSeparator

        Raises
        ------
        TypeError, ValueError
            If a parameter is invalid, a stem is not finite floating-point 1-d audio, or
            the labels do not match the stems.
        """
        self._validate_params()
        front_end = Spectrogram(kind="linear") if self.front_end is None else self.front_end
        frames, frame_labels = [], []
        for features, label in _stem_features(X, y, front_end):
            frames.append(features)
            frame_labels.extend([label] * features.shape[0])
        model = NMF(
            beta_loss=self.beta_loss, max_iter=self.max_iter, tol=self.tol,
            dictionary="nmf", n_components_per_source=self.n_components_per_source,
            device=self.device, random_state=self.random_state, progress=self.progress,
        )
        model.fit(np.concatenate(frames), np.asarray(frame_labels))
        self.model_ = model
        self.classes_ = model.sources_
        self.front_end_ = front_end
        self.n_features_in_ = front_end.n_bins
        return self

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the NMF objective per entry of stems against their own class's dictionary.

        Each stem's features are decomposed against the components of its class alone
        (what :meth:`separate` relies on: a class's dictionary explains that class), and
        the final objectives (:meth:`decomp.NMF.score`) are summed over the stems,
        divided by their number of entries and negated (higher is better), so
        ``GridSearchCV`` can choose ``n_components_per_source`` on held-out stems without
        a scorer. Compare settings of one ``beta_loss`` and front end.

        Parameters
        ----------
        X, y
            Isolated stems and their classes, as in :meth:`fit`; every class must be
            one of ``classes_``.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        self._validate_params()
        total, size = 0.0, 0
        for features, label in _stem_features(X, y, self.front_end_):
            model, _ = self._restricted_model(self._check_classes([label]))
            total += model.score(features) * features.size
            size += features.size
        return total / size

    def _check_classes(self, classes: Any) -> np.ndarray:
        if classes is None:
            return self.classes_
        if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray)):
            raise TypeError(f"classes must be a sequence of class labels; got {classes!r}.")
        requested = list(classes)
        if not requested:
            raise ValueError("classes is empty; request at least one class.")
        known = set(self.classes_.tolist())
        unknown = [label for label in requested if label not in known]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; the separator was fitted on "
                             f"{self.classes_.tolist()}.")
        if len(set(requested)) != len(requested):
            raise ValueError(f"classes must not repeat a class; got {requested}.")
        return np.asarray(requested)

    def _restricted_model(self, classes: np.ndarray) -> tuple[NMF, list[np.ndarray]]:
        """An NMF holding only the components of ``classes``, and each class's columns."""
        model = self.model_
        sources = model.component_sources_
        index = np.concatenate([np.flatnonzero(sources == label) for label in classes])
        restricted = clone(model)
        restricted.components_ = model.components_[index]
        restricted.component_sources_ = sources[index]
        restricted.sources_ = classes
        restricted.n_components_ = index.size
        restricted.n_features_in_ = model.n_features_in_
        restricted.n_iter_ = model.n_iter_
        restricted.reconstruction_err_ = model.reconstruction_err_
        restricted.loss_history_ = model.loss_history_
        columns = [np.flatnonzero(sources[index] == label) for label in classes]
        return restricted, columns

    def separate(self, mixture: Any, classes: Sequence[Any] | None = None) -> Any:
        """Separate the requested classes from a mixture by NMF-based soft masking.

        A long mixture is separated in segments of 2048 frames (about 65 s at a hop of
        512), each with more than a window of context on both sides, so the working
        memory (STFT, features, activations, masks) is that of one segment, not of the
        recording; only the mixture and the estimates are whole. With a fixed number of
        NMF iterations (``tol=0``) the result equals that of one pass over the whole
        mixture (frames are independent under a fixed dictionary); with the default
        stopping rule each segment stops on its own.

        Parameters
        ----------
        mixture : ndarray or Tensor of shape (n_samples,) or (n_items, n_samples)
            The mixture(s), at the front end's sample rate.
        classes : sequence of labels, optional
            The classes present in the mixture, in the output order; only their
            dictionaries explain it. Default: every fitted class (``classes_``), or with
            ``n_sources`` the ``n_sources`` classes chosen blind in each segment (its
            outputs then unordered, loudest class first).

        Returns
        -------
        estimates : ndarray or Tensor of shape ([n_items,] n_classes, n_samples)
            float32 for NumPy input; like ``mixture`` otherwise. ``n_classes`` is
            ``n_sources`` when blind.

        Raises
        ------
        NotFittedError
            If the separator is not fitted.
        TypeError, ValueError
            If the mixture is not finite floating-point audio, a class is unknown,
            repeated, or none is given, or ``n_sources`` exceeds the fitted classes.
        """
        check_is_fitted(self)
        self._validate_params()
        separate_segment, n_outputs = self._separator_for(classes)
        mixture = check_audio(mixture, name="mixture", allow_batch=True)
        if mixture.ndim == 1:
            return _in_segments(mixture, separate_segment, self.front_end_, n_outputs)
        outputs = [_in_segments(item, separate_segment, self.front_end_, n_outputs)
                   for item in mixture]
        return torch.stack(outputs) if isinstance(mixture, torch.Tensor) else np.stack(outputs)

    @property
    def n_slots_(self) -> int:
        """Outputs per mixture when no classes are requested: ``n_sources`` (blind) or
        the number of fitted classes."""
        check_is_fitted(self)
        return len(self.classes_) if self.n_sources is None else int(self.n_sources)

    @property
    def _permutation_invariant(self) -> bool:
        """Whether its outputs are unordered (blind, with ``n_sources``), as
        :class:`~decomp.SeparatorEnsemble` requires of its members."""
        return self.n_sources is not None

    def _check_n_sources(self) -> int:
        """``n_sources``, refused if not a count or above the number of fitted classes
        (``set_params`` does not validate)."""
        check_is_fitted(self)
        check_params({"n_sources": self._parameter_constraints["n_sources"]},
                     {"n_sources": self.n_sources}, "NMFSeparator")
        if self.n_sources is None or self.n_sources > len(self.classes_):
            raise ValueError(f"NMFSeparator(n_sources={self.n_sources}) separates that many "
                             f"of its {len(self.classes_)} fitted classes; give 1 to "
                             f"{len(self.classes_)}.")
        return int(self.n_sources)

    def _separator_for(self, classes: Sequence[Any] | None) -> tuple[Any, int]:
        """The segment separator for ``classes``: blind when none are given and
        ``n_sources`` is set, else that of the requested (or every) class."""
        if classes is None and self.n_sources is not None:
            return self._blind_segment_separator(self._check_n_sources()), int(self.n_sources)
        return self._segment_separator(self._check_classes(classes))

    def _blind_segment_separator(self, n_sources: int) -> Any:
        """A function separating one segment (n,) -> (n_sources, n) into the classes
        whose parts of a model with every class's dictionary, fitted on every
        ``selection_stride``-th frame, hold the most energy (loudest first)."""
        full, columns = self._restricted_model(self.classes_)
        separators: dict[tuple[Any, ...], Any] = {}  # one per chosen set, built once

        def separate_segment(segment: Any) -> Any:
            features = self.front_end_(segment)[:: self.selection_stride]
            energy = _class_parts(full, features, columns).square().sum(dim=(-2, -1))
            energy = energy.cpu().numpy()
            # Stable, so a silent segment keeps the classes' order.
            chosen = self.classes_[np.argsort(-energy, kind="stable")[:n_sources]]
            key = tuple(chosen.tolist())
            if key not in separators:
                separators[key] = self._segment_separator(chosen)[0]
            return separators[key](segment)

        return separate_segment

    def _segment_separator(self, requested: np.ndarray) -> tuple[Any, int]:
        """(function separating one segment (n,) -> (n_classes, n), n_classes)."""
        model, columns = self._restricted_model(requested)

        def separate_segment(segment: Any) -> Any:  # (n,) -> (n_classes, n)
            parts = _class_parts(model, self.front_end_(segment), columns)
            if not isinstance(segment, torch.Tensor):
                parts = parts.cpu().numpy()
            return self.front_end_.separate(segment, parts, power=self.mask_power)

        return separate_segment, len(columns)

    def separate_stream(self, blocks: Iterable[Any], classes: Sequence[Any] | None = None, *,
                        segment_frames: int | None = None) -> Iterator[np.ndarray]:
        """Separate a long mixture given block by block, in bounded memory.

        The segments of :meth:`separate` (2048 frames by default, each with more than a
        window of context on both sides) are separated as soon as their samples have
        arrived, so only a segment and its margins are held, and the concatenated
        output equals :meth:`separate` of the whole mixture (the same segments are
        computed, with the same stopping rule).

        Parameters
        ----------
        blocks : iterable of array-like of shape (n_block_samples,)
            Consecutive samples at the front end's sample rate (e.g. a
            :class:`decomp.audio.AudioStream`).
        classes : sequence of labels, optional
            As in :meth:`separate`.
        segment_frames : int, optional
            Hops of samples per segment (default 2048, as :meth:`separate`).

        Yields
        ------
        estimates : ndarray of shape (n_classes, n_segment_samples), float32
            Consecutive segments of the separated classes.
        """
        check_is_fitted(self)
        self._validate_params()
        check_params({"segment_frames": [StrictInterval(Integral, 1, None, closed="left"), None]},
                     {"segment_frames": segment_frames}, "NMFSeparator.separate_stream")
        segment_frames = None if segment_frames is None else int(segment_frames)
        separate_segment, _ = self._separator_for(classes)
        yield from stream_segments(blocks, lambda samples, first: separate_segment(samples),
                                    self.front_end_, segment_frames or _SEGMENT_FRAMES)

    def separate_file(self, path: Any, out_paths: Any, classes: Sequence[Any] | None = None,
                      *, segment_frames: int | None = None,
                      block_frames: int = 65536) -> list[Path]:
        """Separate an audio file into one file per class, streaming (bounded memory).

        The file is read block by block (:class:`decomp.audio.AudioStream`, resampled to
        the front end's rate, with one :class:`~decomp.exceptions.AudioWarning` naming
        both rates when they differ), separated by :meth:`separate_stream` and written
        incrementally; every stem is written atomically and an error leaves none of them.

        Parameters
        ----------
        path : path-like
            The mixture.
        out_paths : sequence of path-like, or callable
            One path per class, or a function of the number of classes returning them.
            WAV files are written as 32-bit float.
        classes : sequence of labels, optional
            As in :meth:`separate`.
        segment_frames, block_frames : int
            Segment size (hops) and file frames read per block.

        Returns
        -------
        paths : list of Path
        """
        return separate_file(
            lambda blocks: self.separate_stream(blocks, classes, segment_frames=segment_frames),
            path, out_paths, self.front_end_.sample_rate, block_frames=block_frames)


def _class_parts(model: NMF, features: Any, columns: list[np.ndarray]) -> torch.Tensor:
    """Features (n_frames, n_bins) explained by ``model``'s fixed dictionary -> each
    class's part of the reconstruction, ``H[:, cols] @ W[cols]`` for the components
    ``cols`` of each class: (n_classes, n_frames, n_bins)."""
    activations = torch.as_tensor(model.transform(features))  # (n_frames, K)
    dictionary = torch.as_tensor(model.components_, dtype=activations.dtype,
                                 device=activations.device)  # (K, n_bins)
    return torch.stack([activations[..., torch.as_tensor(cols, device=activations.device)]
                        @ dictionary[torch.as_tensor(cols, device=activations.device)]
                        for cols in columns], dim=-3)


#: Frames of one segment of :meth:`NMFSeparator.separate` (about 65 s at a hop of 512).
_SEGMENT_FRAMES = 2048


def _in_segments(audio: Any, separate: Any, front_end: Spectrogram, n_outputs: int,
                 segment_frames: int | None = None) -> Any:
    """Apply ``separate`` ((n,) -> (n_outputs, n)) to a long waveform segment by segment.

    Each segment owns ``segment_frames`` hops of samples and is separated with a margin
    of more than one window on both sides, so every frame whose window touches the
    samples it owns lies wholly inside it: its STFT frames, masks and overlap-add are
    those of the whole waveform (for a per-frame separation; NMF's stopping rule is per
    segment). Working memory is that of one segment, not of the recording.

    audio : (n_samples,) ndarray or Tensor -> (n_outputs, n_samples), like ``audio``
    """
    hop = front_end.hop_length
    n_samples = int(audio.shape[-1])
    step = (segment_frames or _SEGMENT_FRAMES) * hop
    if n_samples <= step:
        return separate(audio)
    margin = (-(-front_end.n_fft // hop) + 1) * hop  # samples of context, whole hops
    if isinstance(audio, torch.Tensor):
        output = torch.empty((n_outputs, n_samples), dtype=audio.dtype, device=audio.device)
    else:
        output = np.empty((n_outputs, n_samples), dtype=np.float32)
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        first, last = max(0, start - margin), min(n_samples, stop + margin)
        output[:, start:stop] = separate(audio[first:last])[:, start - first:stop - first]
    return output
