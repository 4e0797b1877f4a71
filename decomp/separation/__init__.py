"""Source separation: evaluation of separated waveforms and baseline separators."""

from decomp.separation.baselines import NMFSeparator, ideal_ratio_mask
from decomp.separation.evaluation import SeparationScores, evaluate_separation

__all__ = ["NMFSeparator", "SeparationScores", "evaluate_separation", "ideal_ratio_mask"]
