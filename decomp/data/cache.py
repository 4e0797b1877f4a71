"""On-disk cache of rendered data, keyed by the parameters that produced it.

Entries live in ``$DECOMP_CACHE_DIR`` (default ``~/.cache/decomp``) as ``<key>.npz``, with
an optional ``<key>.mid`` next to it for inspection. The key is the SHA-256 of a canonical
JSON of the parameters, the decomp version and, when a SoundFont is involved, that file's
path, size and modification time, so replacing a font invalidates what it rendered.

Every file is written by :func:`decomp._files.atomic_write` (a unique temporary name in
the same directory, fsync, ``os.replace``), so parallel or interrupted runs never leave a
half-written entry under a real name. An entry that still fails to load is deleted and
reported as a miss.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from decomp._files import write_atomically
from decomp._version import __version__

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "writable_cache_dir",
    "cache_key",
    "load_entry",
    "store_entry",
    "cached_arrays",
]

CACHE_ENV = "DECOMP_CACHE_DIR"
"""Environment variable that overrides the cache directory."""


def cache_dir() -> Path:
    """The cache directory: ``$DECOMP_CACHE_DIR`` if set (and non-empty), else ``~/.cache/decomp``.

    The directory is not created here; :func:`writable_cache_dir` creates it when first
    needed.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "decomp"


def writable_cache_dir(*parts: str) -> Path:
    """``cache_dir() / parts``, created if missing and checked to be writable.

    Parameters
    ----------
    *parts : str
        Sub-folders, e.g. ``"models"``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OSError
        (``NotADirectoryError``, ``FileExistsError``, ``PermissionError``...) with one line
        naming the cache folder, the cause and the fix: set ``DECOMP_CACHE_DIR`` to a
        writable folder.
    """
    root = cache_dir()
    directory = root.joinpath(*parts)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        blocking = next((parent for parent in reversed((directory, *directory.parents))
                         if parent.exists() and not parent.is_dir()), None)
        cause = (f"{blocking} is a file, not a folder" if blocking is not None
                 else exc.strerror or str(exc))
        message = (f"the decomp cache folder {root} cannot be used ({cause}); set "
                   f"{CACHE_ENV} to a writable folder.")
        raise (type(exc)(exc.errno, message) if exc.errno is not None
               else type(exc)(message)) from exc
    return directory


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
    if directory is None:
        directory = writable_cache_dir()
    path = _entry_path(key, ".npz", directory)
    if midi_bytes is not None:
        write_atomically(path.with_suffix(".mid"), lambda file: file.write(midi_bytes))
    write_atomically(path, lambda file: np.savez(file, **dict(arrays)))
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
