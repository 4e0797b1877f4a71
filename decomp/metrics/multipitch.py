"""Frame-level multi-pitch precision, recall, F1 and accuracy of piano rolls."""

from __future__ import annotations

import warnings
from typing import Any

import mir_eval
import numpy as np
import torch

from decomp.metrics._common import (
    as_float64,
    check_finite,
    check_ndim,
    check_same_shape,
    like_input,
)

__all__ = ["multipitch_scores", "frame_scores", "midi_to_hz"]

_ROLL_LAYOUT = "(n_frames, n_pitches)"
_BATCH_ROLL_LAYOUT = "(n_frames, n_pitches) or (n_items, n_frames, n_pitches)"


def midi_to_hz(midi: Any) -> np.ndarray:
    """Convert MIDI note numbers to frequencies in Hz: ``440 * 2 ** ((midi - 69) / 12)``.

    Parameters
    ----------
    midi : array-like of shape (n,)
        MIDI note numbers (fractional values allowed).

    Returns
    -------
    hz : ndarray of shape (n,)
        Frequencies in Hz, float64 (same formula as librosa and mir_eval).
    """
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _check_roll(roll: Any, name: str, ndims: tuple[int, ...], layout: str) -> torch.Tensor:
    values = as_float64(roll, name)
    check_ndim(values, name, ndims, layout)
    check_finite(values, name)
    if not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(
            f"{name} must be boolean or hold only 0 and 1; got values in "
            f"[{float(values.min()):.3g}, {float(values.max()):.3g}]."
        )
    return values.detach() != 0


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # A score whose denominator is empty is 0, as in mir_eval, rather than NaN, so that
    # an empty estimate or reference scores as a failure instead of poisoning averages.
    numerator = numerator.to(torch.float64)
    denominator = denominator.to(torch.float64)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))


def frame_scores(estimated_roll: Any, reference_roll: Any) -> dict[str, Any]:
    """Frame-level multi-pitch scores by direct counting over a whole piano roll.

    With ``TP``, ``FP`` and ``FN`` the numbers of (frame, pitch) cells that are active in
    both rolls, only in the estimate and only in the reference, summed over all frames:
    precision ``TP / (TP + FP)``, recall ``TP / (TP + FN)``, F1 their harmonic mean and
    accuracy ``TP / (TP + FP + FN)``. Each score is defined as 0 where its denominator
    is 0 (an empty estimate has precision 0, an empty reference recall 0, and two empty
    rolls score 0 everywhere), as mir_eval does. On an exact MIDI grid this equals
    :func:`multipitch_scores` and is much faster.

    Parameters
    ----------
    estimated_roll : ndarray or Tensor of shape (n_frames, n_pitches) or \
(n_items, n_frames, n_pitches), bool or 0/1
        Estimated active pitches per frame.
    reference_roll : ndarray or Tensor of the same shape, bool or 0/1
        Ground-truth active pitches per frame.

    Returns
    -------
    scores : dict
        ``"precision"``, ``"recall"``, ``"f1"``, ``"accuracy"``: each a ``float`` (or an
        array of shape (n_items,) with a batch axis) for NumPy input, a float64 tensor on
        the input's device for tensor input; ``"true_positives"``,
        ``"false_positives"``, ``"false_negatives"``: the counts, as ``int`` or int64
        arrays/tensors.

    Raises
    ------
    TypeError
        If a roll is not array-like.
    ValueError
        If the shapes differ or have the wrong rank, a roll is empty, or holds values
        other than 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> estimate = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    >>> reference = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    >>> frame_scores(estimate, reference)["f1"]
    0.5
    """
    estimate = _check_roll(estimated_roll, "estimated_roll", (2, 3), _BATCH_ROLL_LAYOUT)
    reference = _check_roll(reference_roll, "reference_roll", (2, 3), _BATCH_ROLL_LAYOUT)
    check_same_shape(estimate, "estimated_roll", reference, "reference_roll")
    reference = reference.to(estimate.device)
    axes = (-2, -1)
    true_positives = (estimate & reference).sum(dim=axes)
    false_positives = (estimate & ~reference).sum(dim=axes)
    false_negatives = (~estimate & reference).sum(dim=axes)
    precision = _ratio(true_positives, true_positives + false_positives)
    recall = _ratio(true_positives, true_positives + false_negatives)
    f1 = _ratio(2 * precision * recall, precision + recall)
    accuracy = _ratio(true_positives, true_positives + false_positives + false_negatives)
    scores = {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}
    output = {key: _like(value, estimated_roll) for key, value in scores.items()}
    counts = {
        "true_positives": true_positives,
        "false_positives": false_positives,
        "false_negatives": false_negatives,
    }
    output.update({key: _count_like(value, estimated_roll) for key, value in counts.items()})
    return output


def _like(value: torch.Tensor, reference: Any) -> Any:
    # Scores are float64 whatever the roll dtype (rolls are usually bool).
    if isinstance(reference, torch.Tensor):
        return value.to(device=reference.device, dtype=torch.float64)
    return like_input(value, reference)


def _count_like(value: torch.Tensor, reference: Any) -> Any:
    if isinstance(reference, torch.Tensor):
        return value.to(device=reference.device, dtype=torch.int64)
    array = value.cpu().numpy().astype(np.int64)
    return int(array) if array.ndim == 0 else array


def _roll_to_frequency_lists(roll: np.ndarray, hz: np.ndarray) -> list[np.ndarray]:
    return [hz[frame] for frame in roll]


def multipitch_scores(
    estimated_roll: Any, reference_roll: Any, frame_times: Any, pitches: Any
) -> dict[str, float]:
    """Frame-level multi-pitch scores computed by :func:`mir_eval.multipitch.metrics`.

    The rolls are turned into mir_eval's form (one array of active frequencies in Hz
    per frame, ``440 * 2 ** ((midi - 69) / 12)``) and scored with mir_eval's defaults: an
    estimated pitch is correct when within half a semitone of an unmatched reference
    pitch in the same frame. Scores are totals over all frames ("macro" in mir_eval's
    words). mir_eval's warnings about empty rolls are silenced; empty rolls score as
    described in :func:`frame_scores`.

    Parameters
    ----------
    estimated_roll : ndarray or Tensor of shape (n_frames, n_pitches), bool or 0/1
        Estimated active pitches per frame.
    reference_roll : ndarray or Tensor of shape (n_frames, n_pitches), bool or 0/1
        Ground-truth active pitches per frame.
    frame_times : array-like of shape (n_frames,)
        Time of each frame in seconds: finite, non-negative, strictly increasing and at
        most mir_eval's limit of 30000 s.
    pitches : array-like of shape (n_pitches,)
        MIDI note number of each roll column, distinct, and within mir_eval's range
        20 Hz to 5 kHz (about MIDI 15.5 to 111.1; the piano's 21 to 108 fit).

    Returns
    -------
    scores : dict of str to float
        ``"precision"``, ``"recall"``, ``"f1"`` (harmonic mean of the two, 0 when both
        are 0) and ``"accuracy"`` (``TP / (TP + FP + FN)``), plain floats whatever the
        input type (mir_eval works in NumPy).

    Raises
    ------
    TypeError
        If an argument is not array-like.
    ValueError
        If the shapes do not agree, a roll is empty or not boolean, ``frame_times`` is not
        strictly increasing, non-negative and finite, or ``pitches`` are repeated or
        outside mir_eval's frequency range.

    See Also
    --------
    frame_scores : the same scores by direct counting, batched and much faster.

    Examples
    --------
    >>> import numpy as np
    >>> estimate = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    >>> reference = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    >>> scores = multipitch_scores(estimate, reference, [0.0, 0.01], [60, 64, 67])
    >>> scores["precision"], scores["recall"], scores["f1"]
    (0.5, 0.5, 0.5)
    """
    estimate = _check_roll(estimated_roll, "estimated_roll", (2,), _ROLL_LAYOUT).cpu().numpy()
    reference = _check_roll(reference_roll, "reference_roll", (2,), _ROLL_LAYOUT).cpu().numpy()
    check_same_shape(estimate, "estimated_roll", reference, "reference_roll")
    n_frames, n_pitches = reference.shape
    times = as_float64(frame_times, "frame_times").detach().cpu().numpy()
    if times.shape != (n_frames,):
        raise ValueError(
            f"frame_times must have shape (n_frames,) = ({n_frames},) to match the rolls; "
            f"got shape {times.shape}."
        )
    max_time = mir_eval.multipitch.MAX_TIME
    if not np.isfinite(times).all() or times.min() < 0 or times.max() > max_time:
        raise ValueError(
            f"frame_times must be finite seconds in [0, {max_time:g}]; got values in "
            f"[{times.min()}, {times.max()}]."
        )
    if n_frames > 1 and not (np.diff(times) > 0).all():
        first = int(np.argmin(np.diff(times) > 0))
        raise ValueError(
            "frame_times must be strictly increasing; got "
            f"{times[first]} then {times[first + 1]} at frames {first} and {first + 1}."
        )
    midi = as_float64(pitches, "pitches").detach().cpu().numpy()
    if midi.shape != (n_pitches,):
        raise ValueError(
            f"pitches must have shape (n_pitches,) = ({n_pitches},) to match the rolls; "
            f"got shape {midi.shape}."
        )
    if not np.isfinite(midi).all():
        raise ValueError("pitches contains NaN or infinity.")
    if np.unique(midi).size != n_pitches:
        raise ValueError("pitches must be distinct MIDI numbers; got repeated values.")
    hz = midi_to_hz(midi)
    low, high = mir_eval.multipitch.MIN_FREQ, mir_eval.multipitch.MAX_FREQ
    if hz.min() < low or hz.max() > high:
        raise ValueError(
            f"pitches must map to frequencies within mir_eval's [{low:g}, {high:g}] Hz "
            f"(MIDI about 15.5 to 111.1); got MIDI {midi.min():g} to {midi.max():g}."
        )
    reference_hz = _roll_to_frequency_lists(reference, hz)
    estimate_hz = _roll_to_frequency_lists(estimate, hz)
    with warnings.catch_warnings():
        # mir_eval warns about empty rolls; our docstring defines that case instead.
        warnings.simplefilter("ignore", UserWarning)
        results = mir_eval.multipitch.metrics(times, reference_hz, times, estimate_hz)
    precision, recall, accuracy = (float(value) for value in results[:3])
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}
