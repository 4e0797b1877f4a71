"""Metrics shared by every estimator: attribution, sparsity, multi-pitch and separation scores."""

from decomp.metrics.attribution import epsilon_sparsity, precision_of_source_attribution, psa
from decomp.metrics.multipitch import frame_scores, midi_to_hz, multipitch_scores
from decomp.metrics.separation import bss_eval, si_sdr, si_sdr_improvement

__all__ = [
    "bss_eval",
    "epsilon_sparsity",
    "frame_scores",
    "midi_to_hz",
    "multipitch_scores",
    "precision_of_source_attribution",
    "psa",
    "si_sdr",
    "si_sdr_improvement",
]
