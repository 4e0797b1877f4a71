"""Flow dictionaries: per-source normalizing flows evaluated as one stacked model."""

from __future__ import annotations

from decomp.flows.base import ConditionedDictionary, DictionaryFlow, InverseNotAvailable
from decomp.flows.realnvp import SingleSourceRealNVP, StackedRealNVP

__all__ = [
    "ConditionedDictionary",
    "DictionaryFlow",
    "InverseNotAvailable",
    "SingleSourceRealNVP",
    "StackedRealNVP",
]
