"""Estimators: thin choices of blocks, objective and post-processing over the engine."""

from decomp.estimators.amortized import (
    AudioSlots,
    BlockVAE,
    MHUNet,
    SeparatorEnsemble,
    SoundOfPixels,
)
from decomp.estimators.base import BaseDecomposer
from decomp.estimators.bayes_nmf import BayesianNMF
from decomp.estimators.dds import DDS1, DDS2, DDS3, FlowDecomposition
from decomp.estimators.nmf import NMF, Decomposition

__all__ = ["AudioSlots", "BaseDecomposer", "BayesianNMF", "BlockVAE", "DDS1", "DDS2", "DDS3",
           "Decomposition", "FlowDecomposition", "MHUNet", "NMF", "SeparatorEnsemble",
           "SoundOfPixels"]
