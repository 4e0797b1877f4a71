"""Exceptions raised by decomp, all importable from one place."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError

__all__ = [
    "AudioFileError",
    "AudioWarning",
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
