"""Flow dictionaries: per-source normalizing flows evaluated as one stacked model."""

from __future__ import annotations

from decomp.flows.base import ConditionedDictionary, DictionaryFlow, InverseNotAvailable
from decomp.flows.glow import PAPER_GLOW_CONFIG, ConditionalGlow
from decomp.flows.nflows_adapter import NflowsDictionary
from decomp.flows.realnvp import SingleSourceRealNVP, StackedRealNVP
from decomp.flows.training import FlowTrainingResult, fit_flow, stratified_split

__all__ = [
    "PAPER_GLOW_CONFIG",
    "ConditionalGlow",
    "ConditionedDictionary",
    "DictionaryFlow",
    "FlowTrainingResult",
    "InverseNotAvailable",
    "NflowsDictionary",
    "SingleSourceRealNVP",
    "StackedRealNVP",
    "fit_flow",
    "stratified_split",
]
