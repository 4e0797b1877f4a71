"""Pictures of transcriptions: activity over time, with the ground truth when known."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from decomp._files import atomic_write, suffix_format
from decomp.transcription.piano import Transcription

__all__ = ["plot_transcription"]


def plot_transcription(
    transcription: Transcription,
    path: str | os.PathLike,
    *,
    reference_roll: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG of the per-pitch activity, the estimated roll and the reference roll.

    Parameters
    ----------
    transcription : Transcription
    path : path-like
        Output PNG.
    reference_roll : ndarray of bool, shape (n_frames, n_pitches), optional
        Ground truth on the transcription's frames and pitches; drawn as outlines.
    title : str, optional

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    times, pitches = transcription.times, transcription.pitches
    extent = (times[0], times[-1] if times.size > 1 else 1.0, pitches[0] - 0.5, pitches[-1] + 0.5)
    n_panels = 2
    figure, axes = plt.subplots(n_panels, 1, figsize=(10, 6), sharex=True, squeeze=True)
    activity = transcription.activations
    scale = activity.max() if activity.max() > 0 else 1.0
    axes[0].imshow((activity / scale).T, origin="lower", aspect="auto", extent=extent,
                   cmap="magma", interpolation="nearest")
    axes[0].set_ylabel("MIDI pitch")
    axes[0].set_title("activity (norm-rescaled source activations)")
    axes[1].imshow(transcription.roll.T, origin="lower", aspect="auto", extent=extent,
                   cmap="Greys", interpolation="nearest")
    axes[1].set_title("estimated notes" + (" (red: reference)" if reference_roll is not None
                                           else ""))
    if reference_roll is not None:
        for axis in axes:
            axis.contour(times, pitches, np.asarray(reference_roll, dtype=float).T, levels=[0.5],
                         colors="red", linewidths=0.8)
    axes[1].set_xlabel("time (s)")
    axes[1].set_ylabel("MIDI pitch")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    try:
        # The temporary's name ends in ".part": the format comes from the target's suffix.
        with atomic_write(path) as file:
            figure.savefig(file, dpi=110, format=suffix_format(path))
    finally:
        plt.close(figure)
    return path
