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

Importing the package loads only torch and the model loader; the subpackages and the
estimators are imported on first use (``decomp.NMF``, ``from decomp import BayesianNMF``),
so that ``import decomp`` costs little more than ``import torch``
(``benchmarks/import_time.py``).
"""

import importlib
from typing import TYPE_CHECKING, Any

from decomp._version import __version__
from decomp.persistence import load
from decomp.pretrained import pretrained

if TYPE_CHECKING:  # what type checkers, IDEs and the API docs see; imported lazily below
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
        SeparatorEnsemble,
        SoundOfPixels,
    )
    from decomp.transcription import PianoTranscriber

_SUBMODULES = frozenset({"audio", "batch", "data", "engine", "estimators", "flows", "losses",
                         "metrics", "separation", "transcription"})
_ATTRIBUTES = {
    **{name: "decomp.estimators" for name in (
        "AudioSlots", "BayesianNMF", "BlockVAE", "DDS1", "DDS2", "DDS3", "NMF",
        "Decomposition", "FlowDecomposition", "MHUNet", "SeparatorEnsemble", "SoundOfPixels")},
    "PianoTranscriber": "decomp.transcription",
}

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
    "SeparatorEnsemble",
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


def __getattr__(name: str) -> Any:
    """Import a subpackage or an estimator on first use (PEP 562)."""
    if name in _SUBMODULES:
        value = importlib.import_module(f"decomp.{name}")
    elif name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module 'decomp' has no attribute {name!r}")
    globals()[name] = value  # later uses are ordinary attribute look-ups
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
