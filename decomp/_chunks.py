"""Chunked inference: the one policy for models that run on fixed-length chunks of frames.

The piano transcriber (a decomposer per chunk) and the amortized separators (a network per
chunk) both cut a long feature sequence into windows of ``chunk_frames`` frames, run them
in batches and join the results. They share :func:`run_in_windows`, so a recording held in
memory and the same recording streamed chunk by chunk give the same result, and the last
window is treated the same way everywhere. The transcriber's windows follow each other
(:func:`run_in_chunks`); the separators' overlap, and :func:`overlap_add` joins them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["feature_chunks", "overlap_add", "run_in_chunks", "run_in_windows", "window_starts"]


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


def window_starts(n_frames: int, chunk_frames: int, hop_frames: int) -> list[int]:
    """Where the windows of :func:`run_in_windows` start, for an input of known length.

    Every ``hop_frames`` frames while a window fits whole, then one more ending at the
    last frame if the last of those ends before it; a single window at 0 for an input
    of at most ``chunk_frames`` frames. :func:`run_in_windows` applies the same rule to
    a stream whose length it learns only at its end (a test holds the two together);
    this form is for callers that hold the whole input and carry state from window to
    window (training with :attr:`AudioSlots.training_windows`).
    """
    if n_frames <= chunk_frames:
        return [0]
    starts = list(range(0, n_frames - chunk_frames + 1, hop_frames))
    if starts[-1] + chunk_frames < n_frames:
        starts.append(n_frames - chunk_frames)
    return starts


def run_in_windows(
    chunks: Iterable[Any],
    run: Callable[[torch.Tensor], Any],
    *,
    chunk_frames: int,
    batch_size: int,
    hop_frames: int | None = None,
    pad_short: bool = True,
) -> Iterator[tuple[Any, int, int]]:
    """Run a model on windows of ``chunk_frames`` frames, in batches; yield each output.

    The policy, the same for every caller:

    - windows start every ``hop_frames`` frames (0, hop, 2 hop, ...) while they fit
      whole in the input; with ``hop_frames == chunk_frames`` they follow each other,
      with less they overlap;
    - where the last of them ends before the input does, one more window ends exactly at
      the last frame (it overlaps its predecessor more): the model always sees real
      signal, never padding (zero frames would change the statistics a network
      normalises its input with, and waste a decomposition's effort on silence);
    - an input shorter than one window is zero-padded at its end to ``chunk_frames``
      with ``pad_short`` (models trained on whole chunks), or run at its own length
      otherwise (models indifferent to the length, which then save the work).

    Only about ``chunk_frames + hop_frames`` frames are held at a time, so a stream of
    any length runs in bounded memory.

    Parameters
    ----------
    chunks : iterable of ndarray or Tensor of shape (n, ...)
        Consecutive pieces of the input, each of ``chunk_frames`` frames except the last
        (as :func:`feature_chunks` and :meth:`decomp.audio.Spectrogram.stream` yield them).
    run : callable
        ``run(batch)`` with ``batch`` a float32 CPU tensor of shape
        ``(n_batch, chunk_frames, ...)`` returns anything indexable by the batch position
        (a tensor or array of shape ``(n_batch, ...)``).
    chunk_frames : int
        Frames per window.
    batch_size : int
        Windows per call of ``run`` (the last call may hold fewer).
    hop_frames : int, optional
        Frames between window starts, in [1, ``chunk_frames``] (default: ``chunk_frames``).
    pad_short : bool, default=True
        How an input shorter than one window runs (see above).

    Yields
    ------
    output : Any
        ``run``'s output for one window (``result[i]``), in the windows' order.
    start : int
        The input frame the window starts at.
    n_real : int
        How many of the window's frames are input frames (``chunk_frames`` but for a
        padded short input).

    Raises
    ------
    ValueError
        If a chunk is longer than ``chunk_frames``, a chunk follows a shorter one, or
        ``hop_frames`` is out of range.
    """
    hop = chunk_frames if hop_frames is None else int(hop_frames)
    if not 1 <= hop <= chunk_frames:
        raise ValueError(f"hop_frames must be in [1, chunk_frames={chunk_frames}]; got {hop}.")
    pieces: list[torch.Tensor] = []
    places: list[tuple[int, int]] = []
    held: torch.Tensor | None = None  # input frames [held_start, total)
    held_start = total = next_start = 0
    last_end = 0  # where the last window taken ends
    ended = False

    def take(window: torch.Tensor, start: int, n_real: int) -> Iterator[tuple[Any, int, int]]:
        pieces.append(window)
        places.append((start, n_real))
        if len(pieces) == batch_size:
            yield from flush()

    def flush() -> Iterator[tuple[Any, int, int]]:
        # One length per batch: a short input runs alone, every other window is whole.
        result = run(torch.stack(pieces))
        for index, (start, n_real) in enumerate(places):
            yield result[index], start, n_real
        pieces.clear()
        places.clear()

    for chunk in chunks:
        if ended:
            raise ValueError("only the last chunk may be shorter than chunk_frames "
                             f"({chunk_frames}); a chunk followed a shorter one.")
        frames = torch.as_tensor(np.asarray(chunk, dtype=np.float32))
        count = frames.shape[0]
        if count > chunk_frames:
            raise ValueError(f"a chunk has {count} frames, more than chunk_frames "
                             f"({chunk_frames}).")
        ended = count < chunk_frames
        held = frames if held is None else torch.cat([held, frames])
        total += count
        while next_start + chunk_frames <= total:
            offset = next_start - held_start
            yield from take(held[offset:offset + chunk_frames], next_start, chunk_frames)
            last_end = next_start + chunk_frames
            next_start += hop
        # Keep what a later window, or a last one ending at the input's end, may need.
        keep_from = max(min(next_start, total - chunk_frames), held_start)
        held, held_start = held[keep_from - held_start:], keep_from
    if held is not None and total > 0 and last_end < total:
        if total >= chunk_frames:  # the last window ends at the last frame
            yield from take(held[held.shape[0] - chunk_frames:], total - chunk_frames,
                            chunk_frames)
        else:  # the whole input is shorter than one window
            window = held
            if pad_short:
                window = torch.cat([held, held.new_zeros(chunk_frames - total, *held.shape[1:])])
            yield from take(window, 0, total)
    if pieces:
        yield from flush()


def run_in_chunks(
    chunks: Iterable[Any],
    run: Callable[[torch.Tensor], Any],
    *,
    chunk_frames: int,
    batch_size: int,
    pad_short: bool = True,
) -> Iterator[tuple[Any, slice]]:
    """:func:`run_in_windows` with windows that follow each other; each chunk's new frames.

    A whole chunk runs as it is; the last chunk, when shorter, is extended backwards into
    its predecessor to a whole chunk, and only its new frames are kept; an input shorter
    than one chunk is zero-padded with ``pad_short`` (see :func:`run_in_windows`).

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
        As :func:`run_in_windows`.
    """
    covered = 0
    for output, start, n_real in run_in_windows(chunks, run, chunk_frames=chunk_frames,
                                                batch_size=batch_size, pad_short=pad_short):
        yield output, slice(covered - start, n_real)
        covered = start + n_real


def overlap_add(
    windows: Iterable[tuple[torch.Tensor, int, int]],
    chunk_frames: int,
    order: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
) -> Iterator[torch.Tensor]:
    """Join overlapping windows' outputs into one sequence by a cross-faded weighted mean.

    Each window's frames are weighted by a triangle (``min(i + 1, chunk_frames - i)``
    for frame ``i``), so every frame is mostly what the windows that see it in context
    say and consecutive windows fade into each other; the joined frame is the weighted
    mean of the windows that cover it. A weighted mean of masks that sum to one over
    the outputs sums to one too.

    Parameters
    ----------
    windows : iterable of (Tensor of shape (n_outputs, chunk_frames, ...), int, int)
        Each window's outputs, its first frame and its count of real frames, in order of
        start (as :func:`run_in_windows` yields them, with the outputs on axis 0).
    chunk_frames : int
        Frames per window.
    order : callable, optional
        ``order(joined, new)``, given the joined outputs and a window's new outputs on
        the frames they share (both ``(n_outputs, n_shared, ...)``), returns the order of
        the new outputs that continues the joined ones (for unordered outputs, e.g.
        permutation-invariant heads); ``None`` keeps the windows' order.

    Yields
    ------
    joined : Tensor of shape (n_outputs, n, ...)
        Consecutive frames, each yielded once no later window can cover it.
    """
    ramp = torch.minimum(torch.arange(1, chunk_frames + 1),
                         torch.arange(chunk_frames, 0, -1)).float()

    def per_frame(frame_weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(n,) weights shaped to broadcast over ``like`` (n_outputs, n, ...)."""
        return frame_weights.view((-1,) + (1,) * (like.dim() - 2))

    total: torch.Tensor | None = None  # weighted sums over frames [first, end)
    weight = torch.zeros(0)
    first = end = 0
    for values, start, n_real in windows:
        if total is not None and start > first:  # frames before this window are final
            done = min(start, end) - first
            yield total[:, :done] / per_frame(weight[:done], total)
            total, weight, first = total[:, done:], weight[done:], first + done
        values = values[:, :n_real]
        if total is not None and order is not None and start < end:
            joined = total[:, start - first:] / per_frame(weight[start - first:], total)
            values = values[torch.as_tensor(order(joined, values[:, :end - start]))]
        window_weight = ramp[:n_real].to(values.device)
        if total is None:
            total = values * per_frame(window_weight, values)
            weight, first = window_weight.clone(), start
        else:
            grow = start + n_real - end
            if grow > 0:
                total = torch.cat([total, total.new_zeros(total.shape[0], grow,
                                                          *total.shape[2:])], dim=1)
                weight = torch.cat([weight, weight.new_zeros(grow)])
            offset = start - first
            total[:, offset:offset + n_real] += values * per_frame(window_weight, values)
            weight[offset:offset + n_real] += window_weight
        end = max(end, start + n_real)
    if total is not None and total.shape[1]:
        yield total / per_frame(weight, total)
