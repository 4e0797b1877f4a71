"""Shared fixtures: a private data cache, fixed seeds, and small planted problems."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from decomp import NMF
from decomp.data import PianoProtocol
from decomp.transcription import PianoTranscriber, fit_transcriber

os.environ.setdefault("MPLBACKEND", "Agg")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (not a package) as module ``name``. A benchmark that
    imports another by name needs ``BENCHMARKS`` on ``sys.path`` (monkeypatch it)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="session")
def _session_cache_dir(tmp_path_factory):
    """Keep rendered data out of the user's cache unless DECOMP_CACHE_DIR is set.

    CI sets nothing, so each run renders into a session directory; locally an explicit
    DECOMP_CACHE_DIR keeps renders between runs.
    """
    if "DECOMP_CACHE_DIR" not in os.environ:
        os.environ["DECOMP_CACHE_DIR"] = str(tmp_path_factory.mktemp("decomp-cache"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def planted():
    """A non-negative X = H @ W with known factors: 3 components, 60 frames, 20 bins."""
    rng = np.random.default_rng(0)
    W = rng.gamma(1.0, 1.0, size=(3, 20))
    H = rng.gamma(0.5, 1.0, size=(60, 3))
    return H @ W, H, W


TINY_PITCHES = tuple(range(60, 68))


@pytest.fixture(scope="session")
def tiny_protocol() -> PianoProtocol:
    return PianoProtocol(pitches=TINY_PITCHES, train_velocities=(64,))


@pytest.fixture(scope="session")
def tiny_transcriber(tiny_protocol) -> PianoTranscriber:
    settings = PianoTranscriber(decomposer=NMF(dictionary="frames", n_components_per_source=8,
                                               max_iter=100, random_state=0))
    return fit_transcriber(settings, tiny_protocol, n_validation_chords=4,
                           validation_polyphonies=(1, 2), n_validation_piece_bars=0)


@pytest.fixture(scope="session")
def tiny_chords(tiny_protocol):
    return tiny_protocol.test_chords(polyphony=2, n_chords=6, random_state=3)


def save_tiny_separator(folder):
    """Save a tiny AudioSlots (8 kHz, 33-bin front end, one epoch) in ``folder``; its path."""
    from decomp.audio import Spectrogram
    from decomp.estimators.amortized import AudioSlots

    rng = np.random.default_rng(0)
    sources = (0.1 * rng.standard_normal((4, 2, 2000))).astype(np.float32)
    front_end = Spectrogram(sample_rate=8000, n_fft=64, hop_length=32, kind="linear")
    model = AudioSlots(n_slots=2, embed_dim=16, n_layers=1, n_heads=2, decoder_hidden=16,
                       front_end=front_end, chunk_frames=16, max_epochs=1, random_state=0)
    return model.fit(sources.sum(axis=1), sources).save(folder / "separator.decomp")
