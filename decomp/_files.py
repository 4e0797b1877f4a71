"""The one atomic file writer: every file decomp writes goes through :func:`atomic_write`.

A file is written under a unique temporary name in its own folder
(``.<name>.<random>.part``), flushed and fsync'ed, then moved over the target with
``os.replace`` (atomic on POSIX and Windows), and the folder is fsync'ed where the system
allows it. If anything goes wrong before the move, an exception or ``KeyboardInterrupt``
included, the temporary is removed and the previous complete file stays untouched, so
readers and interrupted runs see the previous complete file or none, never a torn one.
A process killed outright (``SIGKILL``, power loss) cannot clean up and may leave its
hidden ``.part`` file behind; the target is still intact.

Two writers of the same path never share a temporary name; the last to finish wins and the
file is always one complete version.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "write_atomically", "suffix_format"]

TEMPORARY_SUFFIX = ".part"
"""Suffix of the temporary files (hidden: their names start with a dot)."""

_MODES = ("wb", "w")
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _current_umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # other systems: read it by setting it, then restore at once
    os.umask(mask)
    return mask


def _reason(exc: OSError, path: Path) -> str:
    """A short, human cause for a failed write of ``path``."""
    code = exc.errno
    if code in (errno.ENOTDIR, errno.EEXIST) or isinstance(
        exc, (NotADirectoryError, FileExistsError)
    ):
        for parent in reversed(path.parents):
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a folder"
        return "a part of its folder path is not a folder"
    if code == errno.EISDIR or isinstance(exc, IsADirectoryError):
        return "it is a folder"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or isinstance(exc, PermissionError):
        if not path.parent.is_dir():
            return f"the folder {path.parent} cannot be created ({exc.strerror or exc})"
        return f"the folder {path.parent} is not writable ({exc.strerror or exc})"
    if code in _NO_SPACE:
        return f"no space left for it ({exc.strerror or exc})"
    return exc.strerror or str(exc)


def _write_error(exc: OSError, path: Path) -> OSError:
    """``exc`` re-made with a one-line message naming the target (never the temporary)."""
    message = f"cannot write {path}: {_reason(exc, path)}."
    error = type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    return error


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; silently skipped where folders cannot be opened (Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        descriptor = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    Parameters
    ----------
    path : path-like
        The file to (re)place. Missing parent folders are created.
    mode : {"wb", "w"}
        Binary (default) or text.
    encoding : str, optional
        Text mode only; defaults to ``"utf-8"``.

    Yields
    ------
    file object
        Open on the temporary file. Its ``name`` is the temporary's path, so writers that
        infer a format from the name (soundfile, matplotlib) must be given the format
        explicitly: see :func:`suffix_format`.

    Raises
    ------
    ValueError
        If ``mode`` is neither ``"wb"`` nor ``"w"``, or ``encoding`` is given with ``"wb"``.
    OSError
        (the same subclass as the cause, e.g. ``PermissionError``, ``NotADirectoryError``)
        when the folder cannot be created or written, the disk is full, or the move fails;
        the message names ``path`` and the cause, never the temporary. Other exceptions
        from the body propagate unchanged (after the temporary is removed).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out" / "notes.txt"
    >>> with atomic_write(target, "w") as file:
    ...     _ = file.write("complete")
    >>> target.read_text()
    'complete'
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
    if encoding is not None and mode != "w":
        raise ValueError(f"encoding is for text mode 'w' only; got mode {mode!r}.")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(
            mode=mode,
            encoding=(encoding or "utf-8") if mode == "w" else None,
            dir=path.parent,
            prefix=f".{path.name}.",
            suffix=TEMPORARY_SUFFIX,
            delete=False,
        )
    except OSError as exc:
        raise _write_error(exc, path) from exc
    temporary = Path(handle.name)
    try:
        with handle:
            # NamedTemporaryFile creates 0600; give the file the permissions a plain
            # ``open(path, "w")`` would: the old file's, else 0666 minus the umask.
            try:
                permissions = stat.S_IMODE(path.stat().st_mode)
            except OSError:
                permissions = 0o666 & ~_current_umask()
            if hasattr(os, "fchmod"):
                try:
                    os.fchmod(handle.fileno(), permissions)
                except OSError:
                    pass
            try:
                yield handle
            except OSError as exc:
                if exc.errno in _NO_SPACE:  # a full disk: name the target, not the temporary
                    raise _write_error(exc, path) from exc
                raise
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                raise _write_error(exc, path) from exc
        try:
            os.replace(temporary, path)
        except OSError as exc:
            raise _write_error(exc, path) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_atomically(
    path: str | os.PathLike, write: Callable[[IO[Any]], object], mode: str = "wb",
    *, encoding: str | None = None,
) -> Path:
    """Call ``write(file)`` inside :func:`atomic_write` and return the target path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "data.bin"
    >>> write_atomically(target, lambda file: file.write(b"\\x00\\x01")) == target
    True
    """
    path = Path(path)
    with atomic_write(path, mode, encoding=encoding) as file:
        write(file)
    return path


def suffix_format(path: str | os.PathLike, *, upper: bool = False) -> str | None:
    """The format named by ``path``'s suffix (``"song.FLAC"`` -> ``"flac"``), or ``None``.

    Writers that infer the format from a file name need it passed explicitly when they
    write to the temporary of :func:`atomic_write`.
    """
    suffix = Path(path).suffix.lstrip(".")
    if not suffix:
        return None
    return suffix.upper() if upper else suffix.lower()
