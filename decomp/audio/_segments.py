"""Separating a long waveform segment by segment, and writing the stems as they come.

Shared by every separator's ``separate_stream`` / ``separate_file`` (the amortized
separators and :class:`decomp.separation.NMFSeparator`): :func:`stream_segments` cuts a
waveform given block by block into segments with enough context for an exact STFT
round trip, and :func:`write_stems` writes the separated segments to one file per
source, atomically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decomp._files import atomic_write, suffix_format
from decomp.audio.spectrogram import Spectrogram

__all__ = ["STREAM_SEGMENT_FRAMES", "checked_blocks", "separate_file", "stream_segments",
           "write_stems"]

STREAM_SEGMENT_FRAMES = 2048


def checked_blocks(blocks: Iterable[Any]) -> Iterator[np.ndarray]:
    """Blocks of samples -> 1-d float32 NumPy blocks; NaN/inf is refused."""
    for index, block in enumerate(blocks):
        if isinstance(block, torch.Tensor):
            block = block.detach().cpu().numpy()
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"blocks must be 1-d arrays of samples; block {index} has shape "
                             f"{block.shape}.")
        if not np.isfinite(block).all():
            raise ValueError(f"block {index} of the audio holds NaN or inf samples.")
        yield block


def stream_segments(blocks: Iterable[Any], separate: Callable[[np.ndarray, int], np.ndarray],
                     front_end: Spectrogram, segment_frames: int | None = None
                     ) -> Iterator[np.ndarray]:
    """Separate a waveform given block by block, one segment at a time.

    Each segment owns ``segment_frames`` hops of samples and is passed to ``separate``
    (``(samples, first) -> (n_outputs, n)``, ``first`` the global index of the first
    sample, always a whole number of hops) with a margin of more than one window on both
    sides, so every STFT frame whose window touches the samples it owns lies wholly
    inside it. A waveform of at most one segment is passed whole. Only a segment and its
    margins are held, so memory does not grow with the recording.

    Yields (n_outputs, n_owned) float32 arrays whose concatenation covers every sample.
    """
    hop = front_end.hop_length
    step = (segment_frames or STREAM_SEGMENT_FRAMES) * hop
    margin = (-(-front_end.n_fft // hop) + 1) * hop  # samples of context, whole hops
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start, start = 0, 0  # global index of buffer[0]; first sample not yet yielded
    pending: list[np.ndarray] = []
    n_samples = 0

    def segment(stop: int, last: int) -> np.ndarray:
        nonlocal buffer, buffer_start
        first = max(0, start - margin)
        samples = buffer[first - buffer_start:last - buffer_start]
        output = np.asarray(separate(samples, first), dtype=np.float32)
        return output[:, start - first:stop - first]

    def drop() -> None:  # keep only the samples the next segment's left margin needs
        nonlocal buffer, buffer_start
        keep = max(0, start - margin)
        buffer, buffer_start = buffer[keep - buffer_start:], keep

    for block in checked_blocks(blocks):
        pending.append(block)
        n_samples += block.size
        if n_samples < start + step + margin:
            continue
        buffer = np.concatenate([buffer, *pending])
        pending = []
        while n_samples >= start + step + margin:
            yield segment(start + step, start + step + margin)
            start += step
            drop()
    if n_samples == 0:
        raise ValueError("blocks holds no samples; there is nothing to separate.")
    buffer = np.concatenate([buffer, *pending])
    if start == 0 and n_samples <= step:
        yield np.asarray(separate(buffer, 0), dtype=np.float32)
        return
    while start < n_samples:
        stop = min(start + step, n_samples)
        yield segment(stop, min(n_samples, stop + margin))
        start = stop
        drop()


def write_stems(segments: Iterable[np.ndarray],
                 out_paths: Sequence[str | Path] | Callable[[int], Sequence[str | Path]],
                 sample_rate: int) -> list[Path]:
    """Write streamed (n_sources, n) segments to one audio file per source, atomically.

    Every file is opened through :func:`decomp._files.atomic_write` (nested, one per
    stem), so an error at any point leaves none of the new stems (earlier files keep
    their old content). ``out_paths`` is a sequence of paths, or a function of the number
    of sources that returns them (when that number is known only from the first segment).
    WAV files are written as 32-bit float, like :func:`decomp.audio.write_audio`.
    """
    import soundfile

    with contextlib.ExitStack() as stack:
        files: list[Any] = []
        paths: list[Path] = []
        for segment in segments:
            if not files:
                paths = [Path(path) for path in
                         (out_paths(segment.shape[0]) if callable(out_paths) else out_paths)]
                if len(paths) != segment.shape[0]:
                    raise ValueError(f"{len(paths)} output paths given for "
                                     f"{segment.shape[0]} separated sources.")
                for path in paths:
                    raw = stack.enter_context(atomic_write(path))
                    file_format = (suffix_format(path, upper=True) or "WAV")
                    subtype = "FLOAT" if file_format == "WAV" else None
                    files.append(stack.enter_context(soundfile.SoundFile(
                        raw, "w", samplerate=int(sample_rate), channels=1,
                        format=file_format, subtype=subtype)))
            for file, source in zip(files, segment, strict=True):
                file.write(np.ascontiguousarray(source, dtype=np.float32))
        if not files:
            raise ValueError("the separation yielded no samples.")
    return paths


def separate_file(
    separate_stream: Callable[[Iterable[np.ndarray]], Iterable[np.ndarray]],
    path: Any,
    out_paths: Sequence[str | Path] | Callable[[int], Sequence[str | Path]],
    sample_rate: int,
    *,
    block_frames: int,
) -> list[Path]:
    """Read a file block by block, separate it as it streams, write one file per source.

    The file is read by :class:`decomp.audio.AudioStream` at ``sample_rate`` (resampled,
    with one :class:`~decomp.exceptions.AudioWarning` naming both rates, when the file's
    rate differs); ``separate_stream(blocks)`` yields ``(n_sources, n)`` segments, which
    :func:`write_stems` writes atomically. Every separator's ``separate_file`` is this.
    """
    from decomp.audio.io import AudioStream

    stream = AudioStream(path, sample_rate, block_frames=block_frames, warn_resampling=True)
    return write_stems(separate_stream(stream), out_paths, sample_rate)
