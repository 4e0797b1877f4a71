"""Exceptions raised by decomp, all importable from one place."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError

__all__ = [
    "AudioFileError",
    "DecompError",
    "MissingDependencyError",
    "ModelFileError",
    "NonFiniteLossError",
    "NotFittedError",
]


class DecompError(Exception):
    """Root of the errors that decomp raises for reasons other than bad arguments."""


class MissingDependencyError(DecompError, RuntimeError):
    """A system program or data file that decomp needs is not installed.

    The message names the Debian package (or file) to install.
    """


class ModelFileError(DecompError, ValueError):
    """A saved model file is corrupt, foreign or from an incompatible version."""


class NonFiniteLossError(DecompError, FloatingPointError):
    """The objective became NaN or infinite during inference and could not recover."""


class AudioFileError(DecompError, ValueError):
    """An audio file exists but cannot be decoded, or holds no samples.

    The message names the file and the decoder's reason.
    """
