"""Shared fixtures: a private data cache, fixed seeds, and small planted problems."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


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
    np.random.seed(0)


@pytest.fixture
def planted():
    """A non-negative X = H @ W with known factors: 3 components, 60 frames, 20 bins."""
    rng = np.random.default_rng(0)
    W = rng.gamma(1.0, 1.0, size=(3, 20))
    H = rng.gamma(0.5, 1.0, size=(60, 3))
    return H @ W, H, W
