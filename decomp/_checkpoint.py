"""Training checkpoints: one atomic writer and one reader that checks the run's fingerprint.

Long training loops (:func:`decomp.flows.fit_flow`, the amortized separators' ``fit``)
write their whole state after every epoch and resume from it when restarted. A
checkpoint holds only tensors, numbers, strings, lists and dicts, so it is read with
``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # an interrupted save never leaves a torn file


def load_checkpoint(
    path: Path, checkpoint_format: str, fingerprint: dict[str, Any], *, what: str
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` for the same run.

    Parameters
    ----------
    path : Path
        The checkpoint file.
    checkpoint_format : str
        The ``"format"`` entry the file must carry.
    fingerprint : dict
        Settings and data summary of the current run; the file's must be equal.
    what : str
        What kind of training wrote it, for messages (e.g. ``"flow-training"``).

    Raises
    ------
    ValueError
        If the file cannot be read, is not such a checkpoint, or was written for other
        data or settings (the message names the differing entries).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a torn or foreign file
        raise ValueError(
            f"checkpoint {str(path)!r} could not be read ({type(error).__name__}: {error}); "
            "delete it to start afresh."
        ) from None
    if not isinstance(state, dict) or state.get("format") != checkpoint_format:
        raise ValueError(f"{str(path)!r} is not a decomp {what} checkpoint.")
    if state["fingerprint"] != fingerprint:
        differing = sorted(key for key in set(fingerprint) | set(state["fingerprint"])
                           if state["fingerprint"].get(key) != fingerprint.get(key))
        raise ValueError(
            f"checkpoint {str(path)!r} was written for other data or settings (differs in "
            f"{differing}); delete it or pass another checkpoint path."
        )
    return state
