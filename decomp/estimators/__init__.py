"""Estimators: thin choices of blocks, objective and post-processing over the engine."""

from decomp.estimators.base import BaseDecomposer
from decomp.estimators.dds import DDS1, DDS2, DDS3, FlowDecomposition
from decomp.estimators.nmf import NMF, Decomposition

__all__ = ["BaseDecomposer", "DDS1", "DDS2", "DDS3", "Decomposition", "FlowDecomposition",
           "NMF"]
