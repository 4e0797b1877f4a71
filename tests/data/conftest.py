"""Fixtures for the data tests: a private cache directory and small shared renders."""

from __future__ import annotations

import shutil

import pytest

from decomp.data.soundfonts import available_soundfonts

requires_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None, reason="needs `apt-get install fluidsynth`"
)


def requires_font(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        name not in available_soundfonts(), reason=f"SoundFont {name!r} is not installed"
    )


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """One cache for the session, so renders shared between tests happen once."""
    return tmp_path_factory.mktemp("decomp-cache")


@pytest.fixture(autouse=True)
def _cache_in_tmp(session_cache_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the user's ~/.cache/decomp from tests.
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(session_cache_dir))


@pytest.fixture
def fresh_cache_dir(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """An empty cache directory of the test's own."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(directory))
    return directory


def render_in(cache_dir, function, *args, **kwargs):
    """Call a renderer with DECOMP_CACHE_DIR set (for session-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DECOMP_CACHE_DIR", str(cache_dir))
        return function(*args, **kwargs)
