"""Estimators: thin choices of blocks, objective and post-processing over the engine."""

from decomp.estimators.base import BaseDecomposer
from decomp.estimators.nmf import NMF, Decomposition

__all__ = ["BaseDecomposer", "Decomposition", "NMF"]
