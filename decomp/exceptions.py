"""Exceptions raised by decomp, all importable from one place."""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "describe_error",
    "AudioFileError",
    "AudioWarning",
    "DecompError",
    "MissingDependencyError",
    "ModelFileError",
    "NonFiniteLossError",
    "NotFittedError",  # noqa: F822 (module __getattr__, below)
]


class DecompError(Exception):
    """Root of the errors that decomp raises for reasons other than bad arguments."""


class MissingDependencyError(DecompError, RuntimeError):
    """A system program or data file that decomp needs is not installed.

    The message names the Debian package (or file) to install.
    """


class ModelFileError(DecompError, ValueError):
    """A saved model file is corrupt, foreign, unsafe or from an incompatible version.

    Attributes
    ----------
    reason : str
        What is wrong with the file, without its path.
    path : str or None
        The file, when known; the message then reads ``"<path>: <reason>"``.
    """

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class NonFiniteLossError(DecompError, FloatingPointError):
    """The objective became NaN or infinite during inference and could not recover."""


class AudioFileError(DecompError, ValueError):
    """An audio file exists but cannot be decoded, or holds no samples.

    The message names the file and the decoder's reason.
    """


class AudioWarning(UserWarning):
    """Audio that decomp reads but suspects: near-silent, beyond full scale, or shorter
    than its file header says.

    The message names the file (when there is one) and what was measured.
    """


def describe_error(error: BaseException, file: str | os.PathLike | None = None) -> str:
    """One line for ``error``: its message, with its type when it is an unexpected one.

    ``OSError`` gives its file (unless that is ``file``, which the caller names) and its
    ``strerror``; decomp's own errors, ``ValueError`` and other ``OSError`` give the first
    line of their message; anything else gives ``<ExceptionType>: <first line>``. Used by
    the command line and by corpus runs' manifests.
    """
    if isinstance(error, OSError) and error.strerror:
        filename = error.filename
        if filename is not None and (file is None or str(filename) != str(file)):
            return f"{filename}: {error.strerror}"
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else ""
    if isinstance(error, (DecompError, ValueError, OSError)) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def __getattr__(name: str) -> Any:
    """``NotFittedError`` is scikit-learn's, imported on first use: importing scikit-learn
    costs more than the rest of ``import decomp`` (which needs this module)."""
    if name == "NotFittedError":
        from sklearn.exceptions import NotFittedError

        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

