"""Piano transcription: audio or spectrogram -> per-pitch activity -> piano roll -> MIDI.

A :class:`PianoTranscriber` wraps any fitted decomposer that offers
``source_activations`` (NMF, BayesianNMF, the DDS estimators) with the front end that
turns audio into features and the post-processing that turns activity into notes:
temporal median smoothing, a threshold (optionally with hysteresis), and note
extraction.

This module is the mechanism: the transcriber, what its ``None`` parameters stand for
(:func:`default_front_end`, :func:`default_decomposer`) and the loading of the shipped
transcribers (:meth:`PianoTranscriber.pretrained`). The policy (the default
transcriber's settings, its training, its cache) is :mod:`decomp.transcription.defaults`,
which imports this module and never the other way round.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import scipy.ndimage
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from decomp._backend import torch_threads
from decomp._chunks import feature_chunks, run_in_chunks
from decomp._files import atomic_write
from decomp._validation import StrictInterval, check_labels, check_spectrogram
from decomp.audio import (
    MIN_SAMPLE_RATE,
    SILENCE_FLOOR_DBFS,
    AudioStream,
    Spectrogram,
    check_level,
    roll_to_midi,
)
from decomp.estimators import DDS1, NMF
from decomp.metrics import frame_scores
from decomp.persistence import Persistent
from decomp.pretrained import pretrained as load_pretrained

__all__ = [
    "PianoTranscriber",
    "Transcription",
    "activity_to_roll",
    "choose_threshold",
    "default_decomposer",
    "default_front_end",
    "hysteresis_threshold",
]

#: Methods :meth:`PianoTranscriber.pretrained` loads: the shipped ``piano-<method>`` models,
#: and ``"dds1"``, which searches the shipped DDS-2's flows frame by frame.
SHIPPED_METHODS = ("nmf", "dds1", "dds2", "dds3")

# DDS-1 holds (frames x notes) codes per chunk: smaller chunks than DDS-2's bound memory.
_DDS1_CHUNK_FRAMES = 256


def default_front_end() -> Spectrogram:
    """The front end of the default NMF transcriber: ``log1p(100 |STFT|)``, 1025 bins.

    What ``PianoTranscriber(front_end=None)`` uses. Milder compression than the DDS
    papers' 10000: it won the cross-font validation of ``benchmarks/transcription.py``
    against linear magnitude, log1p(10000 |STFT|) and a CQT.
    """
    return Spectrogram(kind="log", compression=100.0)


def default_decomposer() -> NMF:
    """The decomposer of the default NMF transcriber (unfitted).

    What ``PianoTranscriber(decomposer=None)`` fits. Euclidean NMF against a fixed
    dictionary of 12 training frames per note, 40 multiplicative updates. Chosen by
    cross-font validation (``benchmarks/nmf_budget.py``: frames per note 8-24 x 20-200
    iterations): F1 0.812, against 0.792 for the earlier 24 frames x 200 iterations, in
    a fifteenth of the time (0.26 s against 3.95 s for a 20-s piece on one thread; an
    update costs about n_frames x n_rows^2). Stopping early helps on an unheard timbre
    in validation: the activations stay closer to their smooth start instead of fitting
    the new font's spectra with far-off rows. On the held-out font it does not carry
    over (frame F1 0.004-0.019 lower; see the transcription guide).
    """
    return NMF(beta_loss="frobenius", dictionary="frames", n_components_per_source=12,
               max_iter=40, random_state=0)


@dataclass
class Transcription:
    """The result of transcribing one recording.

    Attributes
    ----------
    times : ndarray of shape (n_frames,)
        Frame centres in seconds.
    pitches : ndarray of shape (n_pitches,)
        MIDI numbers of the columns.
    activations : ndarray of shape (n_frames, n_pitches)
        Per-pitch activity (norm-rescaled source activations, before smoothing).
    roll : ndarray of bool, shape (n_frames, n_pitches)
        Active notes after smoothing and thresholding.
    midi : pretty_midi.PrettyMIDI
        The notes of ``roll`` (velocity from the activity).
    """

    times: np.ndarray
    pitches: np.ndarray
    activations: np.ndarray
    roll: np.ndarray
    midi: pretty_midi.PrettyMIDI

    def save(self, directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
        """Write ``<name>.mid`` and ``<name>.npz`` (times, pitches, activations, roll).

        Each file is written atomically (a temporary sibling, then a rename), so an
        interrupted save leaves the previous file or none. Returns the two paths.
        """
        directory = Path(directory)
        midi_path = directory / f"{name}.mid"
        arrays_path = directory / f"{name}.npz"
        with atomic_write(midi_path) as file:
            self.midi.write(file)
        with atomic_write(arrays_path) as file:
            _write_npz(file, times=self.times, pitches=self.pitches,
                       activations=self.activations.astype(np.float32), roll=self.roll)
        return midi_path, arrays_path


def _write_npz(file: Any, **arrays: np.ndarray) -> None:
    """``np.savez_compressed``, with every entry dated 1980-01-01.

    NumPy stamps each entry with the time of writing, so the same transcription saved
    twice gave two different files; with a fixed date the bytes depend on the arrays
    only (a corpus run in parallel writes exactly what a sequential one writes).
    """
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)


def hysteresis_threshold(
    activity: np.ndarray, high: float, low: float
) -> np.ndarray:
    """Two-threshold (hysteresis) roll: runs above ``low`` that reach ``high``, per pitch.

    A note starts where the activity of a pitch reaches ``high`` and lasts, forwards and
    backwards in time, while it stays at or above ``low``: each run of consecutive frames
    at or above ``low`` (along time, one pitch at a time) is kept whole when at least
    one of its frames is at or above ``high``, and dropped otherwise. A dip that stays
    above ``low`` therefore does not split a note, and a frame above ``low`` alone never
    starts one. With ``low == high`` this is ``activity >= high``.

    Parameters
    ----------
    activity : ndarray of shape (n_frames, n_pitches)
    high : float
        Level a run must reach somewhere to become a note.
    low : float
        Level a note must keep to continue; at most ``high``.

    Returns
    -------
    ndarray of bool, shape (n_frames, n_pitches)
    """
    if low > high:
        raise ValueError(f"low must be at most high; got low={low} and high={high}.")
    above_low = activity >= low
    if low == high:
        return above_low
    # Label the runs above ``low`` along time only (no connection between pitches).
    along_time = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=bool)
    runs, n_runs = scipy.ndimage.label(above_low, structure=along_time)
    keep = np.zeros(n_runs + 1, dtype=bool)  # (n_runs + 1,): label 0 is the background
    keep[runs[activity >= high]] = True
    keep[0] = False
    return keep[runs]


def activity_to_roll(
    activity: np.ndarray, threshold: float, *, sustain_ratio: float = 1.0,
    min_note_frames: int = 1,
) -> np.ndarray:
    """Threshold activity into a roll and drop notes shorter than ``min_note_frames``.

    Parameters
    ----------
    activity : ndarray of shape (n_frames, n_pitches)
    threshold : float
        Level at which a note starts.
    sustain_ratio : float, default=1.0
        A started note continues while its activity stays at or above
        ``threshold * sustain_ratio`` (hysteresis, :func:`hysteresis_threshold`); 1 gives
        a single threshold (``activity >= threshold``). In (0, 1].
    min_note_frames : int
        Runs of active frames shorter than this are removed (a morphological opening
        along time only), after the thresholding.

    Returns
    -------
    ndarray of bool, shape (n_frames, n_pitches)
    """
    if not 0 < sustain_ratio <= 1:
        raise ValueError(f"sustain_ratio must be in (0, 1]; got {sustain_ratio}.")
    roll = hysteresis_threshold(activity, threshold, threshold * sustain_ratio)
    if min_note_frames > 1:
        structure = np.ones((min_note_frames, 1), dtype=bool)
        roll = scipy.ndimage.binary_opening(roll, structure=structure)
    return roll


def choose_threshold(
    activity: np.ndarray,
    reference_roll: np.ndarray,
    candidates: np.ndarray | None = None,
    *,
    sustain_ratio: float = 1.0,
    min_note_frames: int = 1,
) -> tuple[float, float]:
    """The threshold on ``activity`` that maximises frame-level F1 against ``reference_roll``.

    Parameters
    ----------
    activity : ndarray of shape (n_frames, n_pitches)
        Already normalised and smoothed activity.
    reference_roll : ndarray of bool, shape (n_frames, n_pitches)
    candidates : ndarray, optional
        Thresholds to try (default: 120 values log-spaced over three decades below the
        largest activity).
    sustain_ratio : float, default=1.0
        Passed to :func:`activity_to_roll`: the threshold chosen is the onset level for
        this ratio (a note continues down to ``threshold * sustain_ratio``).
    min_note_frames : int
        Passed to :func:`activity_to_roll`, so the choice sees the rolls it will produce.

    Returns
    -------
    threshold : float
    f1 : float
        The F1 reached with it.
    """
    if candidates is None:
        top = float(activity.max())
        if top <= 0:
            return 0.0, 0.0
        candidates = top * np.geomspace(1e-3, 1.0, 120)
    best = (float(candidates[0]), -1.0)
    for threshold in candidates:
        roll = activity_to_roll(activity, threshold, sustain_ratio=sustain_ratio,
                                min_note_frames=min_note_frames)
        f1 = frame_scores(roll, reference_roll)["f1"]
        if f1 > best[1]:
            best = (float(threshold), float(f1))
    return best


def _validation_recordings(validation: Any) -> list[tuple[Any, Any]]:
    """``fit``'s ``validation``, a (features, roll) tuple or a list of them, as a list."""
    pairs = validation if isinstance(validation, list) else [validation]
    if not pairs or not all(isinstance(pair, tuple) and len(pair) == 2 for pair in pairs):
        raise ValueError(
            "validation must be a (features, roll) tuple or a non-empty list of them; "
            f"got {type(validation).__name__}"
            + (f" of {len(pairs)} items" if isinstance(validation, list) else "") + "."
        )
    return pairs


class PianoTranscriber(Persistent, BaseEstimator):
    """Transcribe piano audio with a supervised decomposer.

    Parameters
    ----------
    decomposer : estimator, optional
        An unfitted decomposer with ``fit(X, y)`` and ``source_activations(X)``; its
        sources are MIDI pitches. Default: the default NMF transcriber's decomposer
        (see :func:`decomp.transcription.default_decomposer`).
    front_end : Spectrogram, optional
        Turns audio into features; default :func:`default_front_end`.
    threshold : float or "auto", default="auto"
        Onset of activity, on the scale given by ``normalization``. ``"auto"`` chooses
        the F1-maximising value on the validation data passed to :meth:`fit`.
    normalization : {"max", "none"} or float, default="max"
        ``"max"`` divides each recording's activity by its largest value, so the
        threshold does not depend on loudness; a number ``q`` in (0, 1) divides it by
        the ``q``-quantile of all its values (frames × pitches) instead, which a few
        outlying frames cannot move (the largest value can: a longer recording holds
        more chances of one); ``"none"`` thresholds raw activity.
    median_filter : int, default=9
        Width in frames of the temporal median filter applied before thresholding
        (1 disables it).
    sustain_ratio : float, default=1.0
        Hysteresis of the note decision, as a share of the threshold (unitless, in
        (0, 1]): a note starts where the smoothed activity reaches ``threshold_`` and
        lasts while it stays at or above ``threshold_ * sustain_ratio``, so a dip in a
        sustained note does not split it and activity that never reaches the threshold
        never starts a note (:func:`hysteresis_threshold`). 1 is a single threshold.
        With ``threshold="auto"`` the threshold is chosen for this ratio.
    min_note_frames : int, default=2
        Notes shorter than this many frames are dropped (after the thresholding).
    chunk_frames : int, default=1024
        Recordings are decomposed in chunks of this many frames (about 33 s at the
        default hop), one chunk per batch on a CPU and eight on a GPU (where batching is
        what keeps it busy); a shorter last chunk is extended back into its predecessor,
        as the separators' last window is (:func:`decomp._chunks.run_in_chunks`; the
        separators' windows overlap). A file given to
        :meth:`transcribe` is read, resampled and analysed chunk by chunk too, so memory
        does not grow with the length of the recording beyond the per-pitch activity
        (n_frames x n_pitches float32: about 80 MB for two hours).
    n_threads : int or None, default=1
        Torch threads while a recording is analysed and decomposed (:meth:`transcribe`,
        :meth:`transcribe_features` and the validation in :meth:`fit`); the process's
        count is restored afterwards. ``None`` keeps the process's setting (torch's
        default is one thread per core). One thread is the default because
        transcriptions are often run side by side (a notebook beside a script, one
        process per file): on the 2-core reference machine two transcriptions at once
        then take 1.00-1.05x the time of one alone, against 3x (NMF, DDS-3) to 100x
        (DDS-2) with torch's default, whose OpenMP workers spin-wait for cores the other
        process holds
        (``benchmarks/shared_cpu.py``; the transcription guide has the figures). Raise
        it when a transcription has the machine to itself.

    Attributes
    ----------
    decomposer_ : estimator
        The fitted decomposer.
    pitches_ : ndarray of shape (n_pitches,)
        MIDI numbers the transcriber knows (the decomposer's sources).
    threshold_ : float
        The threshold in use.
    validation_f1_ : float
        Frame F1 on the validation data at ``threshold_`` (NaN without validation).
    """

    _parameter_constraints: dict = {
        "decomposer": "no_validation",
        "front_end": [None, Spectrogram],
        "threshold": [StrictInterval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "normalization": [StrOptions({"max", "none"}),
                          StrictInterval(Real, 0, 1, closed="neither")],
        "median_filter": [StrictInterval(Integral, 1, None, closed="left")],
        "sustain_ratio": [StrictInterval(Real, 0, 1, closed="right")],
        "min_note_frames": [StrictInterval(Integral, 1, None, closed="left")],
        "chunk_frames": [StrictInterval(Integral, 16, None, closed="left")],
        "n_threads": [None, StrictInterval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        decomposer: Any = None,
        *,
        front_end: Spectrogram | None = None,
        threshold: float | str = "auto",
        normalization: str | float = "max",
        median_filter: int = 9,
        sustain_ratio: float = 1.0,
        min_note_frames: int = 2,
        chunk_frames: int = 1024,
        n_threads: int | None = 1,
    ) -> None:
        self.decomposer = decomposer
        self.front_end = front_end
        self.threshold = threshold
        self.normalization = normalization
        self.median_filter = median_filter
        self.sustain_ratio = sustain_ratio
        self.min_note_frames = min_note_frames
        self.chunk_frames = chunk_frames
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # features are magnitudes
        return tags

    @property
    def n_features_in_(self) -> int:
        """Number of feature bins ``fit`` saw: the fitted decomposer's ``n_features_in_``."""
        return self.decomposer_.n_features_in_

    # --- set-up --------------------------------------------------------------------------
    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore the fitted state; a dictionary stored in float16 comes back as float32.

        The shipped default NMF transcriber stores its ``components_`` in float16 to halve
        the file (``benchmarks/train_default_models.py``); decomposing runs in float32.
        """
        super()._set_state(state)
        decomposer = getattr(self, "decomposer_", None)
        components = getattr(decomposer, "components_", None)
        if isinstance(components, np.ndarray) and components.dtype == np.float16:
            decomposer.components_ = components.astype(np.float32)

    def _front_end(self) -> Spectrogram:
        return self.front_end if self.front_end is not None else default_front_end()

    @classmethod
    def pretrained(cls, method: str = "nmf") -> PianoTranscriber:
        """A shipped fitted transcriber: ``"nmf"``, ``"dds1"``, ``"dds2"`` or ``"dds3"``.

        ``"nmf"``, ``"dds2"`` and ``"dds3"`` are the models shipped inside the package,
        ``decomp.pretrained(f"piano-{method}")``. ``"dds1"`` searches the shipped DDS-2's
        per-note flows frame by frame (one code per note per frame, :class:`~decomp.DDS1`)
        with DDS-2's threshold, in chunks of 256 frames. None needs FluidSynth.
        :func:`decomp.transcription.default_transcriber` returns these same models, and
        fits the NMF one when its file is missing or for another protocol.

        Raises
        ------
        ValueError
            If ``method`` is not one of :data:`SHIPPED_METHODS`.
        FileNotFoundError
            If the shipped file is missing from this installation.
        """
        if method not in SHIPPED_METHODS:
            raise ValueError(f"method must be one of {SHIPPED_METHODS}; got {method!r}.")
        if method != "dds1":
            return load_pretrained(f"piano-{method}", kind=cls)
        dds2 = load_pretrained("piano-dds2", kind=cls)
        search = dds2.decomposer_
        settings = {key: getattr(search, key) for key in (
            "max_iter", "latent_learning_rate", "warm_start_iterations", "random_state")}
        return dds2.with_decomposer(DDS1.from_flow(search.flow_, search.sources_, **settings),
                                    decomposer=DDS1(**settings),
                                    chunk_frames=_DDS1_CHUNK_FRAMES)

    def with_decomposer(self, fitted_decomposer: Any, /, **params: Any) -> PianoTranscriber:
        """A fitted transcriber like this one that decomposes with another fitted decomposer.

        For a decomposer fitted without :meth:`fit`, e.g. a :class:`~decomp.DDS1` that
        searches this transcriber's DDS-2 flows (``DDS1.from_flow``): the new transcriber
        keeps this one's parameters (but ``params``) and its threshold.

        Parameters
        ----------
        fitted_decomposer : estimator
            Fitted, with ``source_activations`` and ``sources_`` (MIDI pitches).
        **params
            Parameters of the new transcriber that differ from this one's, as for
            ``set_params``: e.g. ``decomposer`` (the unfitted settings it records) or
            ``chunk_frames``.

        Returns
        -------
        PianoTranscriber
            Fitted: ``decomposer_`` is ``fitted_decomposer``, ``pitches_`` its sources,
            ``threshold_`` this transcriber's; ``validation_f1_`` is NaN (the threshold
            was validated with the other decomposer).
        """
        check_is_fitted(self, "decomposer_")
        check_is_fitted(fitted_decomposer, "sources_")
        transcriber = clone(self).set_params(**params)
        transcriber._validate_params()
        transcriber.decomposer_ = fitted_decomposer
        transcriber.pitches_ = np.asarray(fitted_decomposer.sources_).astype(np.int64)
        transcriber.threshold_ = self.threshold_
        transcriber.validation_f1_ = float("nan")
        return transcriber

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation: tuple[Any, Any] | list[tuple[Any, Any]] | None = None,
    ) -> PianoTranscriber:
        """Fit the decomposer on isolated-note frames and choose the threshold.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins)
            Features (from ``front_end``) of frames where one note sounds.
        y : array-like of shape (n_frames,)
            Their MIDI pitches.
        validation : (features, roll) or list of (features, roll), optional
            Features of shape (n_frames, n_bins) or (n_items, n_frames, n_bins) and the
            matching roll (…, n_frames, n_pitches) over ``pitches_``, used to choose
            ``threshold="auto"``; a list holds one pair per recording, of any lengths.
            Each recording (each 2-D array, each item of a 3-D one) is normalised alone,
            as :meth:`transcribe` normalises the one recording it is given, so the
            threshold is chosen on the scale it is later applied to. Use recordings
            that are not the training frames (ideally another instrument/SoundFont than
            the one the dictionary came from).

        Returns
        -------
        self
        """
        self._validate_params()
        X = check_spectrogram(X, name="X", allow_batch=False)
        labels = check_labels(y, X.shape[0])
        if self.front_end is not None and X.shape[1] != self.front_end.n_bins:
            raise ValueError(
                f"X has {X.shape[1]} bins but front_end produces {self.front_end.n_bins}; "
                "compute X with the same front end."
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"y must hold integer MIDI pitches; got dtype {labels.dtype}.")
        # Both checks run before the decomposer's fit, which may train flows for minutes.
        if self.threshold == "auto" and validation is None:
            raise ValueError(
                "threshold='auto' chooses the threshold on validation data: pass "
                "validation=(features, roll), or give a number."
            )
        recordings = None if validation is None else _validation_recordings(validation)
        decomposer = clone(self.decomposer) if self.decomposer is not None else (
            default_decomposer()
        )
        self.decomposer_ = decomposer.fit(X, labels)
        self.pitches_ = np.asarray(self.decomposer_.sources_).astype(np.int64)
        self.validation_f1_ = float("nan")
        if recordings is None:
            self.threshold_ = float(self.threshold)
            return self
        activity, roll = self._validation_activity(recordings)
        if self.threshold == "auto":
            self.threshold_, self.validation_f1_ = choose_threshold(
                activity, roll, sustain_ratio=self.sustain_ratio,
                min_note_frames=self.min_note_frames)
        else:
            self.threshold_ = float(self.threshold)
            estimated = activity_to_roll(activity, self.threshold_,
                                         sustain_ratio=self.sustain_ratio,
                                         min_note_frames=self.min_note_frames)
            self.validation_f1_ = frame_scores(estimated, roll)["f1"]
        return self

    def _check_roll(self, roll: Any, shape: tuple) -> np.ndarray:
        roll = np.asarray(roll).astype(bool)
        if roll.shape != shape:
            raise ValueError(
                f"the validation roll has shape {roll.shape} but the activity has shape "
                f"{shape} (frames x the {len(self.pitches_)} pitches of pitches_)."
            )
        return roll

    def _activity_batch(self, features: Any) -> np.ndarray:
        """Normalised, smoothed activity of one or several feature arrays, frames stacked."""
        features = check_spectrogram(features, name="features",
                                     n_bins=self.decomposer_.n_features_in_)
        items = features[None] if features.ndim == 2 else features
        return np.concatenate([self._postprocess(self._source_activity(self._feature_chunks(item)))
                               for item in items])

    def _validation_activity(self, recordings: list[tuple[Any, Any]]
                             ) -> tuple[np.ndarray, np.ndarray]:
        """Activity (each recording normalised alone) and roll of (features, roll) pairs,
        frames stacked."""
        activities, rolls = [], []
        for features, roll in recordings:
            activity = self._activity_batch(features)
            activities.append(activity)
            rolls.append(self._check_roll(roll, activity.shape))
        return np.concatenate(activities), np.concatenate(rolls)

    # --- inference -----------------------------------------------------------------------
    #: Chunks decomposed per call of the decomposer, on a CPU and on a GPU. Each chunk in
    #: flight costs the decomposer's working buffers (measured: ~120 MB per 1024-frame
    #: chunk for an NMF of 2112 components, which outnumber the bins), and on a CPU
    #: batching gains nothing (one chunk keeps the cores busy), so one there; a GPU needs
    #: a batch to be busy.
    _chunks_per_batch = {"cpu": 1, "cuda": 8}

    def _batch_size(self) -> int:
        device = getattr(self.decomposer_, "_torch_device", None)
        kind = device().type if callable(device) else "cpu"
        return self._chunks_per_batch.get(kind, self._chunks_per_batch["cpu"])

    def _feature_chunks(self, features: np.ndarray) -> Iterator[np.ndarray]:
        """(n_frames, n_bins) -> consecutive chunks of ``chunk_frames`` frames (views)."""
        return feature_chunks(features, self.chunk_frames)

    def _source_activity(self, chunks: Iterable[np.ndarray]) -> np.ndarray:
        """Raw per-pitch activity (n_frames, n_pitches) of consecutive feature chunks.

        The chunks run through :func:`decomp._chunks.run_in_chunks`, the consecutive
        case of the windowing shared with the separators, in batches of
        ``_batch_size()`` (each chunk gets its own search for DDS): a shorter last chunk
        is extended backwards into its predecessor and only its new frames are kept; a
        recording shorter than one chunk is decomposed at its own length. The result
        depends only on the chunks, not on where they came from: a file streamed by
        :meth:`transcribe` and the same features in memory give the same activity.
        """
        def decompose(batch: torch.Tensor) -> np.ndarray:
            return np.asarray(self.decomposer_.source_activations(batch.numpy()),
                              dtype=np.float32)  # (n_batch, chunk_frames, n_pitches)

        with torch_threads(self.n_threads):
            return np.concatenate([
                activity[keep] for activity, keep in run_in_chunks(
                    chunks, decompose, chunk_frames=self.chunk_frames,
                    batch_size=self._batch_size(), pad_short=False)])

    def _postprocess(self, activity: np.ndarray) -> np.ndarray:
        if self.normalization != "none":
            top = float(activity.max() if self.normalization == "max"
                        else np.quantile(activity, self.normalization))
            activity = activity / top if top > 0 else activity
        if self.median_filter > 1:
            activity = scipy.ndimage.median_filter(activity, size=(self.median_filter, 1),
                                                   mode="nearest")
        return activity

    def _transcription(self, raw: np.ndarray, *, silent: bool = False) -> Transcription:
        """Post-process raw activity (n_frames, n_pitches) into a :class:`Transcription`.

        ``silent``: the recording is below the silence floor, so the roll and the MIDI
        stay empty whatever the (rescaled) activity says.
        """
        smoothed = self._postprocess(raw)
        if silent:
            roll = np.zeros(smoothed.shape, dtype=bool)
        else:
            roll = activity_to_roll(smoothed, self.threshold_,
                                    sustain_ratio=self.sustain_ratio,
                                    min_note_frames=self.min_note_frames)
        times = self._front_end().frame_times(raw.shape[0])
        top = max(float(smoothed.max()), 1e-12)
        velocities = np.clip(smoothed / top, 0, 1)
        midi = roll_to_midi(roll, times, self.pitches_, velocities=velocities)
        return Transcription(times=times, pitches=self.pitches_.copy(), activations=raw,
                             roll=roll, midi=midi)

    def transcribe_features(self, features: Any) -> Transcription:
        """Transcribe a spectrogram computed with ``front_end``.

        Parameters
        ----------
        features : array-like of shape (n_frames, n_bins)

        Returns
        -------
        Transcription
        """
        check_is_fitted(self)
        self._validate_params()  # parameters set after fitting (n_threads, ...) too
        features = check_spectrogram(features, name="features", allow_batch=False,
                                     n_bins=self.decomposer_.n_features_in_,
                                     owner=type(self).__name__)
        features = np.asarray(features, dtype=np.float32)
        return self._transcription(self._source_activity(self._feature_chunks(features)))

    def transcribe(self, audio: Any, sample_rate: int | None = None) -> Transcription:
        """Transcribe audio (a path, or samples at ``front_end.sample_rate``).

        A file is streamed: read in blocks, downmixed, resampled to the front end's rate
        (``soxr`` "HQ", as :func:`~decomp.audio.load_audio`), analysed and decomposed
        ``chunk_frames`` frames at a time (:class:`~decomp.audio.AudioStream`,
        :meth:`Spectrogram.stream <decomp.audio.Spectrogram.stream>`). Only the per-pitch
        activity of the whole recording is kept, so peak memory does not grow with its
        length beyond n_frames x n_pitches float32 (~80 MB for two hours). The result
        equals that of the samples loaded with :func:`~decomp.audio.load_audio` and
        passed in memory (exactly for the STFT front ends; see
        :meth:`Spectrogram.stream <decomp.audio.Spectrogram.stream>` for the constant-Q
        ones).

        Inputs are checked. A file sampled below :data:`~decomp.audio.MIN_SAMPLE_RATE`
        (8 kHz) is refused. Samples beyond full scale (``|x| > 1``) and a file shorter
        than its header says give an :class:`~decomp.exceptions.AudioWarning`. A
        recording whose :func:`~decomp.audio.audio_level` (the RMS of its loudest 0.1 s
        above 20 Hz, so a DC offset does not count) is below
        :data:`~decomp.audio.SILENCE_FLOOR_DBFS` (-60 dBFS) is near-silent: it gives an
        empty roll and MIDI file (with a warning), since the ``"max"`` normalisation
        would otherwise blow hiss up into notes. Quiet real piano (velocity 20 recorded
        at -40 dBFS) is well above the floor.

        Parameters
        ----------
        audio : str, PathLike or array-like of shape (n_samples,)
            A WAV/FLAC file (resampled as needed) or mono samples.
        sample_rate : int, optional
            Rate of ``audio`` samples; must equal the front end's rate when given.

        Returns
        -------
        Transcription

        Raises
        ------
        FileNotFoundError, AudioFileError
            If the file is missing or cannot be decoded.
        ValueError
            If the file's rate is below ``MIN_SAMPLE_RATE``, or samples are given at
            another rate than the front end's.

        Warns
        -----
        AudioWarning
            Near-silence (empty transcription), samples beyond full scale, a truncated
            file; once per recording and reason, naming the file.
        """
        check_is_fitted(self)
        self._validate_params()  # parameters set after fitting (n_threads, ...) too
        front_end = self._front_end()
        if isinstance(audio, (str, os.PathLike)):
            stream = AudioStream(audio, front_end.sample_rate, min_sample_rate=MIN_SAMPLE_RATE)
            if front_end.db_normalization:  # needs the whole spectrogram at once
                features = front_end.transform(np.concatenate(list(stream)))
                raw = self._source_activity(self._feature_chunks(features))
            else:
                raw = self._source_activity(
                    front_end.stream(stream, chunk_frames=self.chunk_frames))
            # The stream has warned about near-silence already.
            return self._transcription(raw, silent=stream.level < SILENCE_FLOOR_DBFS)
        if sample_rate is not None and sample_rate != front_end.sample_rate:
            raise ValueError(
                f"audio is at {sample_rate} Hz but the front end expects "
                f"{front_end.sample_rate} Hz; resample it (or pass a file path)."
            )
        level = check_level(audio, front_end.sample_rate, name="audio")
        features = np.asarray(front_end.transform(audio), dtype=np.float32)
        return self._transcription(self._source_activity(self._feature_chunks(features)),
                                   silent=level < SILENCE_FLOOR_DBFS)
