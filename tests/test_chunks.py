"""The chunked-inference policy shared by the transcriber and the separators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp._chunks import (
    feature_chunks,
    overlap_add,
    run_in_chunks,
    run_in_windows,
    window_starts,
)


def _join(features: np.ndarray, chunk: int, batch: int, pad_short: bool = True):
    """Run a frame-wise function and a recorder through the chunking; return both."""
    seen: list[tuple[int, ...]] = []

    def run(pieces: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(pieces.shape))
        return pieces * 2 + 1  # frame-wise, so the joined output must be exact

    outputs = list(run_in_chunks(feature_chunks(features, chunk), run, chunk_frames=chunk,
                                 batch_size=batch, pad_short=pad_short))
    joined = np.concatenate([output[keep].numpy() for output, keep in outputs])
    return joined, seen, outputs


@settings(max_examples=60, deadline=None)
@given(n_frames=st.integers(1, 70), chunk=st.integers(1, 16), batch=st.integers(1, 5))
def test_every_frame_is_kept_exactly_once_in_order(n_frames, chunk, batch):
    features = np.arange(n_frames * 3, dtype=np.float32).reshape(n_frames, 3)
    joined, seen, outputs = _join(features, chunk, batch)
    np.testing.assert_array_equal(joined, features * 2 + 1)
    assert len(outputs) == -(-n_frames // chunk)
    # The model only ever sees whole chunks, at most `batch` at a time.
    assert all(shape[1] == chunk and 1 <= shape[0] <= batch for shape in seen)


def test_the_last_chunk_overlaps_its_predecessor_and_a_short_input_is_padded_or_not():
    features = np.arange(10, dtype=np.float32)[:, None]  # frames 0..9, chunks of 4
    _, _, outputs = _join(features, 4, 8)
    last, keep = outputs[-1]
    np.testing.assert_array_equal(last[:, 0].numpy(), np.array([6, 7, 8, 9]) * 2 + 1)
    assert keep == slice(2, 4)
    _, seen, outputs = _join(features[:3], 4, 8)
    assert seen == [(1, 4, 1)] and outputs[0][1] == slice(0, 3)
    np.testing.assert_array_equal(outputs[0][0][3].numpy(), [1.0])  # a zero frame, run
    _, seen, _ = _join(features[:3], 4, 8, pad_short=False)
    assert seen == [(1, 3, 1)]  # run at its own length


def test_malformed_chunk_sequences_are_refused():
    run = lambda batch: batch  # noqa: E731
    with pytest.raises(ValueError, match="more than chunk_frames"):
        list(run_in_chunks([np.zeros((5, 2))], run, chunk_frames=4, batch_size=1))
    with pytest.raises(ValueError, match="only the last chunk"):
        list(run_in_chunks([np.zeros((4, 2)), np.zeros((2, 2)), np.zeros((4, 2))], run,
                           chunk_frames=4, batch_size=1))


def _windows(n_frames: int, chunk: int, hop: int, batch: int, piece: int):
    """The windows run_in_windows takes of frames 0..n-1 given in pieces of `piece`."""
    features = np.arange(n_frames, dtype=np.float32)[:, None]
    seen: list[tuple[int, ...]] = []

    def run(windows: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(windows.shape))
        return windows

    pieces = [features[start:start + piece] for start in range(0, n_frames, piece)]
    return list(run_in_windows(pieces, run, chunk_frames=chunk, batch_size=batch,
                               hop_frames=hop)), seen


@settings(max_examples=80, deadline=None)
@given(n_frames=st.integers(1, 70), chunk=st.integers(1, 16), data=st.data())
def test_windows_start_every_hop_and_the_last_one_ends_at_the_last_frame(n_frames, chunk,
                                                                         data):
    hop = data.draw(st.integers(1, chunk))
    batch = data.draw(st.integers(1, 4))
    windows, seen = _windows(n_frames, chunk, hop, batch, piece=chunk)
    starts = [start for _, start, _ in windows]
    assert all(shape[1] == chunk and 1 <= shape[0] <= batch for shape in seen)
    for output, start, n_real in windows:  # each window holds its own input frames
        np.testing.assert_array_equal(output[:n_real, 0].numpy(),
                                      np.arange(start, start + n_real))
    if n_frames < chunk:
        assert [(start, n_real) for _, start, n_real in windows] == [(0, n_frames)]
        assert window_starts(n_frames, chunk, hop) == [0]
        return
    regular = list(range(0, n_frames - chunk + 1, hop))
    assert starts[:len(regular)] == regular
    assert starts[-1] + chunk == n_frames and len(starts) - len(regular) <= 1
    # The rule for inputs of known length is the streaming one.
    assert window_starts(n_frames, chunk, hop) == starts


def test_a_hop_outside_one_to_chunk_frames_is_refused():
    for hop in (0, 5):
        with pytest.raises(ValueError, match="hop_frames must be in"):
            _windows(10, 4, hop, 1, piece=4)


@settings(max_examples=60, deadline=None)
@given(n_frames=st.integers(1, 70), chunk=st.integers(2, 16), data=st.data())
def test_overlap_add_of_a_frame_wise_model_is_exact(n_frames, chunk, data):
    hop = data.draw(st.integers(1, chunk))
    features = np.arange(n_frames * 2, dtype=np.float32).reshape(n_frames, 2)

    def run(windows: torch.Tensor) -> torch.Tensor:  # two outputs per frame, frame-wise
        return torch.stack([windows * 2 + 1, -windows], dim=1)

    windows = run_in_windows(feature_chunks(features, chunk), run, chunk_frames=chunk,
                             batch_size=3, hop_frames=hop)
    parts = list(overlap_add(windows, chunk))
    joined = torch.cat(parts, dim=1).numpy()
    np.testing.assert_allclose(joined[0], features * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(joined[1], -features, rtol=1e-6, atol=1e-6)


def test_overlap_add_matches_unordered_outputs_on_the_shared_frames():
    rng = np.random.default_rng(0)
    first, second = rng.random((28, 4)), rng.random((28, 4)) * 3
    truth = torch.as_tensor(np.stack([first, second]), dtype=torch.float32)  # (2, 28, 4)
    windows = []
    for index, start in enumerate(range(0, 21, 4)):  # windows of 8, hop 4, every other swapped
        values = truth[:, start:start + 8]
        windows.append((values.flip(0) if index % 2 else values, start, 8))

    def order(joined: torch.Tensor, new: torch.Tensor) -> list[int]:
        errors = [(joined - new[list(candidate)]).abs().sum() for candidate in ([0, 1], [1, 0])]
        return [0, 1] if errors[0] <= errors[1] else [1, 0]

    joined = torch.cat(list(overlap_add(windows, 8, order)), dim=1)
    torch.testing.assert_close(joined, truth)
    unmatched = torch.cat(list(overlap_add(windows, 8)), dim=1)
    assert not torch.allclose(unmatched, truth)
