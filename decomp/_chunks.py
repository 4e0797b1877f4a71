"""Chunked inference: the one policy for models that run on fixed-length chunks of frames.

The piano transcriber (a decomposer per chunk) and the amortized separators (a network per
chunk) both cut a long feature sequence into chunks of ``chunk_frames`` frames, run them
in batches and join the results. They share :func:`run_in_chunks`, so a recording held in
memory and the same recording streamed chunk by chunk give the same result, and the last
chunk is treated the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["feature_chunks", "run_in_chunks"]


def feature_chunks(features: Any, chunk_frames: int) -> Iterator[Any]:
    """Consecutive chunks of ``chunk_frames`` frames (views; the last one holds the rest).

    Parameters
    ----------
    features : ndarray or Tensor of shape (n_frames, ...)
    chunk_frames : int

    Yields
    ------
    chunk : ndarray or Tensor of shape (<= chunk_frames, ...)
        The same kind of array as ``features``, the same way
        :meth:`decomp.audio.Spectrogram.stream` yields the chunks of a stream.
    """
    for start in range(0, features.shape[0], chunk_frames):
        yield features[start:start + chunk_frames]


def run_in_chunks(
    chunks: Iterable[Any],
    run: Callable[[torch.Tensor], Any],
    *,
    chunk_frames: int,
    batch_size: int,
    pad_short: bool = True,
) -> Iterator[tuple[Any, slice]]:
    """Run a model on consecutive chunks of frames, in batches; yield each chunk's output.

    The policy, the same for every caller:

    - a whole chunk (``chunk_frames`` frames) runs as it is;
    - the last chunk, when shorter, is extended backwards into its predecessor to a whole
      chunk, and only its new frames are kept: the model always sees real signal, never
      padding (zero frames would change the statistics a network normalises its input
      with, and waste a decomposition's effort on silence);
    - an input shorter than one chunk (a single short chunk) is zero-padded at its end to
      ``chunk_frames`` with ``pad_short`` (models trained on whole chunks), or run at its
      own length otherwise (models indifferent to the length, which then save the work).

    Parameters
    ----------
    chunks : iterable of ndarray or Tensor of shape (n, ...)
        Consecutive chunks, each of ``chunk_frames`` frames except the last (as
        :func:`feature_chunks` and :meth:`decomp.audio.Spectrogram.stream` yield them).
    run : callable
        ``run(batch)`` with ``batch`` a float32 CPU tensor of shape
        ``(n_batch, chunk_frames, ...)`` returns anything indexable by the batch position
        (a tensor or array of shape ``(n_batch, ...)``).
    chunk_frames : int
        Frames per chunk.
    batch_size : int
        Chunks per call of ``run`` (the last call may hold fewer).
    pad_short : bool, default=True
        How an input shorter than one chunk runs (see above).

    Yields
    ------
    output : Any
        ``run``'s output for one chunk (``result[i]``), in the chunks' order.
    keep : slice
        The positions along that chunk's frame axis that belong to it (all of a whole
        chunk; the new frames of an extended last chunk; the real frames of a padded one).

    Raises
    ------
    ValueError
        If a chunk is longer than ``chunk_frames``, or a chunk follows a shorter one.
    """
    pieces: list[torch.Tensor] = []
    keeps: list[slice] = []
    previous: torch.Tensor | None = None
    ended = False

    def flush() -> Iterator[tuple[Any, slice]]:
        # One length per batch: a short input runs alone, every other piece is whole.
        result = run(torch.stack(pieces))
        for index, keep in enumerate(keeps):
            yield result[index], keep
        pieces.clear()
        keeps.clear()

    for chunk in chunks:
        if ended:
            raise ValueError("only the last chunk may be shorter than chunk_frames "
                             f"({chunk_frames}); a chunk followed a shorter one.")
        frames = torch.as_tensor(np.asarray(chunk, dtype=np.float32))
        count = frames.shape[0]
        if count > chunk_frames:
            raise ValueError(f"a chunk has {count} frames, more than chunk_frames "
                             f"({chunk_frames}).")
        if count == chunk_frames:
            pieces.append(frames)
            keeps.append(slice(0, count))
            previous = frames
        elif previous is not None:  # the last chunk overlaps its predecessor
            pieces.append(torch.cat([previous[count:], frames]))
            keeps.append(slice(chunk_frames - count, chunk_frames))
            ended = True
        else:  # the whole input is shorter than one chunk
            if pad_short:
                padding = torch.zeros(chunk_frames - count, *frames.shape[1:])
                frames = torch.cat([frames, padding])
            pieces.append(frames)
            keeps.append(slice(0, count))
            ended = True
        if len(pieces) == batch_size:
            yield from flush()
    if pieces:
        yield from flush()
