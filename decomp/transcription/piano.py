"""Piano transcription: audio or spectrogram -> per-pitch activity -> piano roll -> MIDI.

A :class:`PianoTranscriber` wraps any fitted decomposer that offers
``source_activations`` (NMF today, the DDS estimators later) with the front end that
turns audio into features and the post-processing that turns activity into notes:
temporal median smoothing, a threshold, and note extraction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import scipy.ndimage
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from decomp._validation import check_labels, check_spectrogram
from decomp.audio import Spectrogram, load_audio, roll_to_midi
from decomp.metrics import frame_scores
from decomp.persistence import Persistent

__all__ = ["PianoTranscriber", "Transcription", "activity_to_roll", "choose_threshold"]


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

        Returns the two paths.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        midi_path = directory / f"{name}.mid"
        arrays_path = directory / f"{name}.npz"
        self.midi.write(str(midi_path))
        np.savez_compressed(arrays_path, times=self.times, pitches=self.pitches,
                            activations=self.activations.astype(np.float32), roll=self.roll)
        return midi_path, arrays_path


def activity_to_roll(
    activity: np.ndarray, threshold: float, *, min_note_frames: int = 1
) -> np.ndarray:
    """Threshold activity into a roll and drop notes shorter than ``min_note_frames``.

    Parameters
    ----------
    activity : ndarray of shape (n_frames, n_pitches)
    threshold : float
    min_note_frames : int
        Runs of active frames shorter than this are removed (a morphological opening
        along time only).

    Returns
    -------
    ndarray of bool, shape (n_frames, n_pitches)
    """
    roll = activity >= threshold
    if min_note_frames > 1:
        structure = np.ones((min_note_frames, 1), dtype=bool)
        roll = scipy.ndimage.binary_opening(roll, structure=structure)
    return roll


def choose_threshold(
    activity: np.ndarray,
    reference_roll: np.ndarray,
    candidates: np.ndarray | None = None,
    *,
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
        roll = activity_to_roll(activity, threshold, min_note_frames=min_note_frames)
        f1 = frame_scores(roll, reference_roll)["f1"]
        if f1 > best[1]:
            best = (float(threshold), float(f1))
    return best


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
    normalization : {"max", "none"}, default="max"
        ``"max"`` divides each recording's activity by its largest value, so the
        threshold does not depend on loudness; ``"none"`` thresholds raw activity.
    median_filter : int, default=9
        Width in frames of the temporal median filter applied before thresholding
        (1 disables it).
    min_note_frames : int, default=2
        Notes shorter than this many frames are dropped.
    chunk_frames : int, default=1024
        Long recordings are cut into chunks of this many frames and decomposed as one
        batch, which bounds memory.

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
        "threshold": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "normalization": [StrOptions({"max", "none"})],
        "median_filter": [Interval(Integral, 1, None, closed="left")],
        "min_note_frames": [Interval(Integral, 1, None, closed="left")],
        "chunk_frames": [Interval(Integral, 16, None, closed="left")],
    }

    def __init__(
        self,
        decomposer: Any = None,
        *,
        front_end: Spectrogram | None = None,
        threshold: float | str = "auto",
        normalization: str = "max",
        median_filter: int = 9,
        min_note_frames: int = 2,
        chunk_frames: int = 1024,
    ) -> None:
        self.decomposer = decomposer
        self.front_end = front_end
        self.threshold = threshold
        self.normalization = normalization
        self.median_filter = median_filter
        self.min_note_frames = min_note_frames
        self.chunk_frames = chunk_frames

    # --- set-up --------------------------------------------------------------------------
    def _front_end(self) -> Spectrogram:
        from decomp.transcription.defaults import default_front_end

        return self.front_end if self.front_end is not None else default_front_end()

    @classmethod
    def pretrained(cls, method: str = "nmf") -> PianoTranscriber:
        """A fitted transcriber: ``"nmf"``, or the shipped ``"dds1"``, ``"dds2"``, ``"dds3"``.

        See :func:`decomp.transcription.default_transcriber`.
        """
        from decomp.transcription.defaults import default_transcriber

        return default_transcriber(method)

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation: tuple[Any, Any] | None = None,
    ) -> PianoTranscriber:
        """Fit the decomposer on isolated-note frames and choose the threshold.

        Parameters
        ----------
        X : array-like of shape (n_frames, n_bins)
            Features (from ``front_end``) of frames where one note sounds.
        y : array-like of shape (n_frames,)
            Their MIDI pitches.
        validation : (features, roll), optional
            Features of shape (n_frames, n_bins) or (n_items, n_frames, n_bins) and the
            matching roll (…, n_frames, n_pitches) over ``pitches_``, used to choose
            ``threshold="auto"``. Use recordings that are not the training frames
            (ideally another instrument/SoundFont than the one the dictionary came from).

        Returns
        -------
        self
        """
        from decomp.transcription.defaults import default_decomposer

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
        decomposer = clone(self.decomposer) if self.decomposer is not None else (
            default_decomposer()
        )
        self.decomposer_ = decomposer.fit(X, labels)
        self.pitches_ = np.asarray(self.decomposer_.sources_).astype(np.int64)
        self.validation_f1_ = float("nan")
        if self.threshold == "auto":
            if validation is None:
                raise ValueError(
                    "threshold='auto' chooses the threshold on validation data: pass "
                    "validation=(features, roll), or give a number."
                )
            self.threshold_, self.validation_f1_ = self._choose_threshold(*validation)
        else:
            self.threshold_ = float(self.threshold)
            if validation is not None:
                activity = self._activity_batch(validation[0])
                roll = self._check_roll(validation[1], activity.shape)
                estimated = activity_to_roll(activity, self.threshold_,
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
        return np.concatenate([self._postprocess(self._source_activity(item))
                               for item in items])

    def _choose_threshold(self, features: Any, roll: Any) -> tuple[float, float]:
        activity = self._activity_batch(features)
        return choose_threshold(activity, self._check_roll(roll, activity.shape),
                                min_note_frames=self.min_note_frames)

    # --- inference -----------------------------------------------------------------------
    def _source_activity(self, features: np.ndarray) -> np.ndarray:
        """Raw per-pitch activity of one (n_frames, n_bins) array, decomposed in chunks."""
        n_frames, n_bins = features.shape
        chunk = min(self.chunk_frames, n_frames)
        n_chunks = -(-n_frames // chunk)
        padded = np.zeros((n_chunks * chunk, n_bins), dtype=np.float32)
        padded[:n_frames] = features
        # Chunks form one batch (each chunk gets its own search for DDS; with a fixed
        # dictionary frames are independent anyway); the zero padding decomposes to zero
        # activity and is cut off again.
        activity = self.decomposer_.source_activations(padded.reshape(n_chunks, chunk, n_bins))
        return np.asarray(activity).reshape(n_chunks * chunk, -1)[:n_frames]

    def _postprocess(self, activity: np.ndarray) -> np.ndarray:
        if self.normalization == "max":
            top = float(activity.max())
            activity = activity / top if top > 0 else activity
        if self.median_filter > 1:
            activity = scipy.ndimage.median_filter(activity, size=(self.median_filter, 1),
                                                   mode="nearest")
        return activity

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
        features = check_spectrogram(features, name="features", allow_batch=False,
                                     n_bins=self.decomposer_.n_features_in_,
                                     owner=type(self).__name__)
        features = np.asarray(features, dtype=np.float32)
        raw = self._source_activity(features)
        smoothed = self._postprocess(raw)
        roll = activity_to_roll(smoothed, self.threshold_, min_note_frames=self.min_note_frames)
        times = self._front_end().frame_times(features.shape[0])
        velocities = np.clip(smoothed / max(float(smoothed.max()), 1e-12), 0, 1)
        midi = roll_to_midi(roll, times, self.pitches_, velocities=velocities)
        return Transcription(times=times, pitches=self.pitches_.copy(), activations=raw,
                             roll=roll, midi=midi)

    def transcribe(self, audio: Any, sample_rate: int | None = None) -> Transcription:
        """Transcribe audio (a path, or samples at ``front_end.sample_rate``).

        Parameters
        ----------
        audio : str, PathLike or array-like of shape (n_samples,)
            A WAV/FLAC file (resampled as needed) or mono samples.
        sample_rate : int, optional
            Rate of ``audio`` samples; must equal the front end's rate when given.

        Returns
        -------
        Transcription
        """
        check_is_fitted(self)
        front_end = self._front_end()
        if isinstance(audio, (str, os.PathLike)):
            samples, _ = load_audio(audio, sample_rate=front_end.sample_rate)
        else:
            if sample_rate is not None and sample_rate != front_end.sample_rate:
                raise ValueError(
                    f"audio is at {sample_rate} Hz but the front end expects "
                    f"{front_end.sample_rate} Hz; resample it (or pass a file path)."
                )
            samples = audio
        return self.transcribe_features(front_end.transform(samples))
