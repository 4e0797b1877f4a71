"""Metrics shared by every estimator: attribution, sparsity, frame and note F1, separation."""

from decomp.metrics.attribution import epsilon_sparsity, precision_of_source_attribution, psa
from decomp.metrics.multipitch import frame_scores, midi_to_hz, multipitch_scores
from decomp.metrics.notes import as_notes, note_scores
from decomp.metrics.separation import bss_eval, si_sdr, si_sdr_improvement

__all__ = [
    "as_notes",
    "bss_eval",
    "epsilon_sparsity",
    "frame_scores",
    "midi_to_hz",
    "multipitch_scores",
    "note_scores",
    "precision_of_source_attribution",
    "psa",
    "si_sdr",
    "si_sdr_improvement",
]
