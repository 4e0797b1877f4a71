"""Amortized separators: networks that output the sources of a mixture in one pass.

They share :class:`~decomp.estimators.amortized.base.AmortizedSeparator` (data checks, one
training loop, chunked inference, masking and ISTFT) and the permutation-invariant losses
of :mod:`decomp.losses`.
"""

from decomp.estimators.amortized.audioslots import AudioSlots
from decomp.estimators.amortized.base import DEFAULT_FRONT_END, AmortizedSeparator
from decomp.estimators.amortized.blockvae import BlockVAE
from decomp.estimators.amortized.ensemble import SeparatorEnsemble
from decomp.estimators.amortized.unet import SOLOS_FRONT_END, MHUNet, SoundOfPixels

__all__ = ["AmortizedSeparator", "AudioSlots", "BlockVAE", "DEFAULT_FRONT_END", "MHUNet",
           "SOLOS_FRONT_END", "SeparatorEnsemble", "SoundOfPixels"]
