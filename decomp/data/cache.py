"""On-disk cache of rendered data, keyed by the parameters that produced it.

Entries live in ``$DECOMP_CACHE_DIR`` (default ``~/.cache/decomp``) as ``<key>.npz``, with
an optional ``<key>.mid`` next to it for inspection. The key is the SHA-256 of a canonical
JSON of the parameters, the decomp version and, when a SoundFont is involved, that file's
path, size and modification time, so replacing a font invalidates what it rendered.

Every file is written to a temporary name in the same directory and moved into place with
``os.replace`` (atomic on POSIX), so parallel or interrupted runs never leave a half-written
entry under a real name. An entry that still fails to load is deleted and reported as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from decomp._version import __version__

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "cache_key",
    "load_entry",
    "store_entry",
    "cached_arrays",
]

CACHE_ENV = "DECOMP_CACHE_DIR"
"""Environment variable that overrides the cache directory."""


def cache_dir() -> Path:
    """The cache directory: ``$DECOMP_CACHE_DIR`` if set (and non-empty), else ``~/.cache/decomp``.

    The directory is not created here; :func:`store_entry` creates it when first needed.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "decomp"


def _to_json(value: Any) -> Any:
    """``json.dumps`` fallback for NumPy scalars/arrays, paths, ranges and sets."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (os.PathLike,)):
        return os.fspath(value)
    if isinstance(value, range):
        return list(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(
        f"cache parameters must be JSON-like (numbers, strings, lists, dicts); "
        f"got {type(value).__name__}: {value!r}."
    )


def cache_key(params: Mapping[str, Any], *, soundfont: str | os.PathLike | None = None) -> str:
    """SHA-256 hex digest identifying an entry.

    Parameters
    ----------
    params : mapping
        Everything that determines the result (JSON-like values; tuples equal lists).
    soundfont : path-like, optional
        A file the result depends on; its resolved path, size and mtime enter the key.

    Returns
    -------
    str
        64 hexadecimal characters.

    Raises
    ------
    TypeError
        If ``params`` is not a mapping or holds values that JSON cannot represent.
    FileNotFoundError
        If ``soundfont`` does not exist.

    Examples
    --------
    >>> cache_key({"a": 1, "b": (2, 3)}) == cache_key({"b": [2, 3], "a": 1})
    True
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping; got {type(params).__name__}.")
    payload: dict[str, Any] = {"params": dict(params), "version": __version__}
    if soundfont is not None:
        path = Path(soundfont).resolve()
        stat = path.stat()
        payload["soundfont"] = {
            "path": str(path),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
    text = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_to_json
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _entry_path(key: str, suffix: str, directory: str | os.PathLike | None) -> Path:
    if not (isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
        raise ValueError(f"key must be a 64-character hex digest from cache_key; got {key!r}.")
    return Path(directory if directory is not None else cache_dir()) / f"{key}{suffix}"


def load_entry(
    key: str, *, directory: str | os.PathLike | None = None
) -> dict[str, np.ndarray] | None:
    """Read an entry's arrays, or ``None`` if it is absent or unreadable.

    An unreadable (truncated, corrupt) entry is deleted so that the next store replaces it.

    Parameters
    ----------
    key : str
        From :func:`cache_key`.
    directory : path-like, optional
        Defaults to :func:`cache_dir`.

    Returns
    -------
    dict of str to ndarray, or None
    """
    path = _entry_path(key, ".npz", directory)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            # Reading every member checks each CRC, so a damaged file is caught here.
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        path.unlink(missing_ok=True)
        return None


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write via ``write(file)`` to a temporary sibling, fsync, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def store_entry(
    key: str,
    arrays: Mapping[str, np.ndarray],
    *,
    midi_bytes: bytes | None = None,
    directory: str | os.PathLike | None = None,
) -> Path:
    """Write an entry atomically.

    Parameters
    ----------
    key : str
        From :func:`cache_key`.
    arrays : mapping of str to ndarray
        Saved uncompressed in ``<key>.npz`` (audio does not compress well).
    midi_bytes : bytes, optional
        A standard MIDI file saved as ``<key>.mid`` (written first: the ``.npz`` marks the
        entry complete).
    directory : path-like, optional
        Defaults to :func:`cache_dir`.

    Returns
    -------
    pathlib.Path
        The ``.npz`` file.
    """
    path = _entry_path(key, ".npz", directory)
    if midi_bytes is not None:
        _atomic_write(path.with_suffix(".mid"), lambda file: file.write(midi_bytes))
    _atomic_write(path, lambda file: np.savez(file, **dict(arrays)))
    return path


def cached_arrays(
    params: Mapping[str, Any],
    compute: Callable[[], Mapping[str, np.ndarray]],
    *,
    soundfont: str | os.PathLike | None = None,
    midi_bytes: bytes | None = None,
    directory: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Return the cached arrays for ``params``, computing and storing them on a miss.

    Parameters
    ----------
    params, soundfont
        As in :func:`cache_key`.
    compute : callable
        Called with no argument on a miss; returns a mapping of arrays.
    midi_bytes, directory
        As in :func:`store_entry`.

    Returns
    -------
    dict of str to ndarray
    """
    key = cache_key(params, soundfont=soundfont)
    hit = load_entry(key, directory=directory)
    if hit is not None:
        return hit
    arrays = {name: np.asarray(value) for name, value in compute().items()}
    store_entry(key, arrays, midi_bytes=midi_bytes, directory=directory)
    return arrays
