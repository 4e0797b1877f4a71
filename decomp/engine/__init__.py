"""Batched alternating-gradient inference: divergences, objectives, the loop."""

from decomp.engine.divergences import BETA_LOSSES, beta_divergence, beta_loss_to_float
from decomp.engine.init import initialize_activations, initialize_nmf
from decomp.engine.loop import Block, InferenceResult, minimize
from decomp.engine.objectives import BetaNMFObjective, Objective, Penalty
from decomp.engine.optim import BatchedAdam
from decomp.engine.variational import PoissonGammaObjective

__all__ = [
    "BETA_LOSSES",
    "BatchedAdam",
    "BetaNMFObjective",
    "Block",
    "InferenceResult",
    "Objective",
    "Penalty",
    "PoissonGammaObjective",
    "beta_divergence",
    "beta_loss_to_float",
    "initialize_activations",
    "initialize_nmf",
    "minimize",
]
