"""decomp: probabilistic decomposition of audio (NMF, normalizing flows, amortized separators).

The estimators follow scikit-learn's contract on time-major spectrograms of shape
(n_frames, n_bins), batched as (n_items, n_frames, n_bins); NumPy in gives NumPy out
and torch tensors in give tensors out.

Subpackages: :mod:`decomp.engine` (inference loop, divergences), :mod:`decomp.audio`
(front end), :mod:`decomp.data` (rendered data), :mod:`decomp.metrics`,
:mod:`decomp.flows` (flow dictionaries and their training), :mod:`decomp.transcription`
(piano transcription), :mod:`decomp.separation` (separation baselines and scoring); the
Bayesian NMF (posteriors, learned rank, uncertainty) is :class:`BayesianNMF`; the
amortized separators (AudioSlots, BlockVAE, MHUNet, SoundOfPixels) live in
:mod:`decomp.estimators.amortized`. :func:`pretrained` loads a shipped model by name
(``decomp.pretrained("instruments")``) or any saved model by path; :mod:`decomp.batch`
runs a transcriber or separator over a corpus (in-process or on Ray, resumable).
"""

from decomp import (
    audio,
    batch,
    data,
    engine,
    flows,
    losses,
    metrics,
    separation,
    transcription,
)
from decomp._version import __version__
from decomp.estimators import (
    DDS1,
    DDS2,
    DDS3,
    NMF,
    AudioSlots,
    BayesianNMF,
    BlockVAE,
    Decomposition,
    FlowDecomposition,
    MHUNet,
    SoundOfPixels,
)
from decomp.persistence import load
from decomp.pretrained import pretrained
from decomp.transcription import PianoTranscriber

__all__ = [
    "AudioSlots",
    "BayesianNMF",
    "BlockVAE",
    "DDS1",
    "DDS2",
    "DDS3",
    "NMF",
    "Decomposition",
    "FlowDecomposition",
    "MHUNet",
    "PianoTranscriber",
    "SoundOfPixels",
    "__version__",
    "audio",
    "batch",
    "data",
    "engine",
    "flows",
    "load",
    "losses",
    "metrics",
    "pretrained",
    "separation",
    "transcription",
]
