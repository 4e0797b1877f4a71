"""The chunked-inference policy shared by the transcriber and the separators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp._chunks import feature_chunks, run_in_chunks


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
