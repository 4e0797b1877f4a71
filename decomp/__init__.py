"""decomp: probabilistic decomposition of audio (NMF, normalizing flows, amortized separators).

The estimators follow scikit-learn's contract on time-major spectrograms of shape
(n_frames, n_bins), batched as (n_items, n_frames, n_bins); NumPy in gives NumPy out
and torch tensors in give tensors out.
"""

from decomp._version import __version__
from decomp.estimators import NMF, Decomposition
from decomp.persistence import load

__all__ = ["NMF", "Decomposition", "__version__", "load"]
