"""Tests for decomp.metrics.separation: SI-SDR(i) and bss_eval against hand values and mir_eval."""

import math
import warnings

import mir_eval
import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decomp.metrics import bss_eval, si_sdr, si_sdr_improvement

# Rows of a Hadamard matrix: zero-mean (except the first) and mutually orthogonal.
HADAMARD = scipy.linalg.hadamard(8).astype(float)
SIGNAL, NOISE, OTHER = HADAMARD[1], HADAMARD[2], HADAMARD[3]  # energy 8 each


def db(ratio):
    return 10 * math.log10(ratio)


# --- SI-SDR -------------------------------------------------------------------------------
EPS = np.finfo(np.float64).eps  # added to the energies by si_sdr


def test_si_sdr_orthogonal_noise_exact():
    # target = SIGNAL (energy 8), noise 0.5 * NOISE (energy 2)
    assert si_sdr(SIGNAL + 0.5 * NOISE, SIGNAL) == pytest.approx(db(8 / 2), abs=1e-9)
    # the scale of the estimate is projected out: 3 * SIGNAL + 0.5 * NOISE -> 72 / 2
    assert si_sdr(3 * SIGNAL + 0.5 * NOISE, SIGNAL) == pytest.approx(db(72 / 2), abs=1e-9)


def test_si_sdr_non_orthogonal_exact():
    # estimate = SIGNAL + NOISE against reference SIGNAL + NOISE / 2 (energy 8 + 2 = 10):
    # <e, r> = 8 + 4 = 12, target energy 12**2 / 10 = 14.4, noise energy 16 - 14.4 = 1.6
    reference = SIGNAL + 0.5 * NOISE
    assert si_sdr(SIGNAL + NOISE, reference) == pytest.approx(db(14.4 / 1.6), abs=1e-9)


def test_si_sdr_perfect_estimate_is_large_but_finite():
    value = si_sdr(2 * SIGNAL, SIGNAL)
    # capped by the constant: 10 log10((32 + eps) / eps), about 171.6 dB
    assert value == pytest.approx(db(32 / EPS + 1), abs=1e-9)
    assert math.isfinite(value) and value > 150


def test_si_sdr_zero_mean_switch():
    offset = np.ones(8)  # orthogonal to SIGNAL, removed by zero_mean
    assert si_sdr(SIGNAL + 0.5 * offset, SIGNAL, zero_mean=False) == pytest.approx(
        db(8 / 2), abs=1e-9
    )
    # with the offset removed the estimate is perfect: 10 log10((8 + eps) / eps)
    assert si_sdr(SIGNAL + 0.5 * offset, SIGNAL) == pytest.approx(db(8 / EPS + 1), abs=1e-9)


def test_si_sdr_silent_reference_is_finite_and_very_negative():
    # the scale is 0, so the estimate (energy 8) is all noise: 10 log10(eps / (8 + eps))
    assert si_sdr(SIGNAL, np.zeros(8)) == pytest.approx(db(EPS / 8), abs=1e-9)
    assert si_sdr(np.zeros(8), np.zeros(8)) == pytest.approx(0.0)


def test_si_sdr_batched_shapes_and_types():
    estimate = np.stack([SIGNAL + 0.5 * NOISE, SIGNAL + NOISE])  # (2, 8)
    batch = np.stack([estimate, estimate[::-1]])  # (2 items, 2 sources, 8)
    references = np.stack([SIGNAL, SIGNAL])
    result = si_sdr(batch, np.stack([references, references]))
    assert isinstance(result, np.ndarray) and result.shape == (2, 2)
    np.testing.assert_allclose(result, [[db(4), db(1)], [db(1), db(4)]], atol=1e-9)
    assert type(si_sdr(SIGNAL, SIGNAL + NOISE)) is float

    tensor = si_sdr(
        torch.tensor(batch, dtype=torch.float32), torch.tensor(np.stack([references] * 2))
    )
    assert isinstance(tensor, torch.Tensor)
    assert tensor.dtype == torch.float32 and tensor.device == torch.device("cpu")
    torch.testing.assert_close(tensor, torch.tensor(result, dtype=torch.float32))


def test_si_sdr_is_differentiable_on_tensors():
    estimate = torch.tensor(SIGNAL + 0.5 * NOISE, requires_grad=True)
    value = si_sdr(estimate, torch.tensor(SIGNAL))
    value.backward()
    assert estimate.grad is not None
    # moving the estimate towards the reference raises SI-SDR
    assert float((estimate.grad * torch.tensor(-NOISE)).sum()) > 0


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
    st.booleans(),
)
def test_si_sdr_invariant_to_scaling_the_estimate(seed, scale, zero_mean):
    rng = np.random.default_rng(seed)
    reference, estimate = rng.standard_normal((2, 64))
    estimate = estimate + reference
    base = si_sdr(estimate, reference, zero_mean)
    assert si_sdr(scale * estimate, reference, zero_mean) == pytest.approx(base, abs=1e-9)
    # and to scaling the reference by a positive factor
    assert si_sdr(estimate, abs(scale) * reference, zero_mean) == pytest.approx(base, abs=1e-9)


def test_si_sdr_improvement_exact():
    # estimate: db(8 / 0.5) = 12.04; mixture SIGNAL + NOISE: db(8 / 8) = 0
    improvement = si_sdr_improvement(SIGNAL + 0.25 * NOISE, SIGNAL, SIGNAL + NOISE)
    assert improvement == pytest.approx(db(16), abs=1e-9)


def test_si_sdr_improvement_broadcasts_the_mixture():
    mixture = SIGNAL + NOISE
    references = np.stack([SIGNAL, NOISE])  # (2 sources, 8)
    estimates = np.stack([SIGNAL + 0.25 * NOISE, NOISE + 0.5 * SIGNAL])
    result = si_sdr_improvement(estimates, references, mixture)
    np.testing.assert_allclose(result, [db(16), db(4)], atol=1e-9)
    batch = si_sdr_improvement(
        torch.tensor(np.stack([estimates] * 3)),
        torch.tensor(np.stack([references] * 3)),
        torch.tensor(mixture).expand(3, 1, 8),
    )
    assert batch.shape == (3, 2)
    torch.testing.assert_close(batch, torch.tensor([[db(16), db(4)]] * 3, dtype=torch.float64))


def test_si_sdr_shape_mismatch_message():
    with pytest.raises(
        ValueError, match=r"reference has shape \(7,\) but estimate has shape \(8,\); they must"
    ):
        si_sdr(np.ones(8), np.ones(7))


def test_si_sdr_nan_message():
    with pytest.raises(ValueError, match=r"estimate contains NaN or infinity \(1 entries\)"):
        si_sdr(np.array([1.0, np.nan]), np.ones(2))


def test_si_sdr_empty_message():
    with pytest.raises(ValueError, match=r"estimate is empty: got an array of shape \(2, 0\)"):
        si_sdr(np.ones((2, 0)), np.ones((2, 0)))


def test_si_sdr_zero_mean_type_message():
    with pytest.raises(TypeError, match=r"'zero_mean' parameter of si_sdr .* Got 'yes'"):
        si_sdr(np.ones(4), np.ones(4), zero_mean="yes")


def test_si_sdr_improvement_mixture_shape_message():
    with pytest.raises(ValueError, match=r"mixture has shape \(5,\), which does not broadcast"):
        si_sdr_improvement(np.ones((2, 8)), np.ones((2, 8)), np.ones(5))


# --- bss_eval -----------------------------------------------------------------------------


def _mixed_case(seed, n_sources, n_samples=8000):
    """References, and estimates that leak the other sources, are filtered and noisy."""
    rng = np.random.default_rng(seed)
    references = rng.standard_normal((n_sources, n_samples))
    mixing = rng.uniform(0.05, 0.4, (n_sources, n_sources))
    np.fill_diagonal(mixing, 1.0)
    taps = rng.standard_normal(16) * np.exp(-np.arange(16) / 3)
    estimates = scipy.signal.lfilter(taps, [1.0], mixing @ references, axis=-1)
    estimates += 0.1 * rng.standard_normal(estimates.shape)
    return references, estimates


def _mir_eval_bss(references, estimates, compute_permutation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval.separation is deprecated since 0.8
        return mir_eval.separation.bss_eval_sources(
            references, estimates, compute_permutation=compute_permutation
        )


@pytest.mark.parametrize("seed, n_sources", [(0, 2), (1, 3)])
def test_bss_eval_matches_mir_eval(seed, n_sources):
    references, estimates = _mixed_case(seed, n_sources)
    expected = _mir_eval_bss(references, estimates, compute_permutation=False)
    result = bss_eval(estimates, references)
    for ours, theirs in zip(result, expected[:3], strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    # the case is not trivial: finite, distinct values in a plausible range
    assert np.all(np.isfinite(result)) and 0 < result[0].min() < result[0].max() < 40


def test_bss_eval_permutation_matches_mir_eval():
    references, estimates = _mixed_case(2, 3)
    shuffled = estimates[[2, 0, 1]]
    expected = _mir_eval_bss(references, shuffled, compute_permutation=True)
    sdr, sir, sar, permutation = bss_eval(shuffled, references, compute_permutation=True)
    np.testing.assert_array_equal(permutation, expected[3])
    np.testing.assert_array_equal(permutation, [1, 2, 0])  # shuffled[1] is estimate 0, ...
    for ours, theirs in zip((sdr, sir, sar), expected[:3], strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    # without the search, the same order scores much worse
    assert bss_eval(shuffled, references)[1].mean() < sir.mean() - 10


def test_bss_eval_orthogonal_hand_computed():
    # filter_length=1 allows only a gain, so orthogonal parts separate exactly:
    # target SIGNAL (energy 8), interference 0.5 NOISE (2), artifacts 0.25 OTHER (0.5)
    references = np.stack([SIGNAL, NOISE])
    estimates = np.stack([SIGNAL + 0.5 * NOISE + 0.25 * OTHER, 2 * NOISE])
    sdr, sir, sar = bss_eval(estimates, references, filter_length=1)
    assert sdr[0] == pytest.approx(db(8 / 2.5), abs=1e-9)
    assert sir[0] == pytest.approx(db(8 / 2), abs=1e-9)
    assert sar[0] == pytest.approx(db(10 / 0.5), abs=1e-9)
    # the second estimate is a scaled reference: no interference nor artifacts
    assert min(sdr[1], sir[1], sar[1]) > 200


def test_bss_eval_allows_a_filter_of_filter_length_taps():
    rng = np.random.default_rng(3)
    length, n_samples = 32, 1000
    references = rng.standard_normal((2, n_samples))
    references[:, -length:] = 0  # so that the filtered copy fits in n_samples
    taps = rng.standard_normal(length)
    estimates = np.stack([np.convolve(taps, ref)[:n_samples] for ref in references])
    sdr, sir, sar = bss_eval(estimates, references, filter_length=length)
    assert sdr.min() > 100 and sir.min() > 100 and sar.min() > 100
    # one tap fewer cannot undo the filter
    assert bss_eval(estimates, references, filter_length=length - 1)[0].max() < 40


def test_bss_eval_batch_matches_items_and_tensor_round_trip():
    cases = [_mixed_case(seed, 2, n_samples=2000) for seed in (4, 5)]
    references = np.stack([case[0] for case in cases])  # (2 items, 2 sources, 2000)
    estimates = np.stack([case[1] for case in cases])
    batch = bss_eval(estimates, references, filter_length=64)
    assert all(isinstance(value, np.ndarray) and value.shape == (2, 2) for value in batch)
    for item in range(2):
        single = bss_eval(estimates[item], references[item], filter_length=64)
        for ours, alone in zip(batch, single, strict=True):
            np.testing.assert_allclose(ours[item], alone, atol=1e-9)
    tensors = bss_eval(
        torch.tensor(estimates, dtype=torch.float32),
        torch.tensor(references, dtype=torch.float32),
        filter_length=64,
        compute_permutation=True,
    )
    assert all(isinstance(value, torch.Tensor) for value in tensors)
    assert tensors[0].dtype == torch.float32 and tensors[3].dtype == torch.int64
    torch.testing.assert_close(tensors[3], torch.tensor([[0, 1], [0, 1]]))
    # float32 input only rounds the signals; the computation stays in float64
    for ours, reference in zip(tensors[:3], batch, strict=True):
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-3)


def test_bss_eval_permutation_of_four_sources_per_item():
    rng = np.random.default_rng(6)
    references = rng.standard_normal((2, 4, 600))
    estimates = references + 0.05 * rng.standard_normal(references.shape)
    orders = [(3, 0, 1, 2), (1, 3, 2, 0)]
    shuffled = np.stack([estimates[item][list(order)] for item, order in enumerate(orders)])
    sdr, sir, sar, permutation = bss_eval(
        shuffled, references, filter_length=16, compute_permutation=True
    )
    # estimate permutation[j] matches reference j: the inverse of each shuffle
    expected = [np.argsort(order) for order in orders]
    np.testing.assert_array_equal(permutation, expected)
    unshuffled = np.stack([shuffled[item][expected[item]] for item in range(2)])
    plain = bss_eval(unshuffled, references, filter_length=16)
    for ours, unpermuted in zip((sdr, sir, sar), plain, strict=True):
        np.testing.assert_allclose(ours, unpermuted, atol=1e-9)


def test_bss_eval_shape_mismatch_message():
    with pytest.raises(
        ValueError,
        match=r"estimates has shape \(3, 1000\) but references has shape \(2, 1000\); they must",
    ):
        bss_eval(np.ones((3, 1000)), np.ones((2, 1000)))


def test_bss_eval_rank_message():
    with pytest.raises(ValueError, match=r"estimates must have shape \(\.\.\., n_sources, n_"):
        bss_eval(np.ones(1000), np.ones(1000))


def test_bss_eval_too_short_message():
    with pytest.raises(ValueError, match=r"The signals have 100 samples, fewer than filter_len"):
        bss_eval(np.ones((2, 100)), np.ones((2, 100)))


def test_bss_eval_nan_message():
    estimates = np.ones((2, 600))
    estimates[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"estimates contains NaN or infinity \(1 entries\)"):
        bss_eval(estimates, np.ones((2, 600)))


def test_bss_eval_silent_reference_message():
    references = np.ones((2, 600))
    references[1] = 0
    with pytest.raises(ValueError, match=r"references holds a silent \(all-zero\) source at index"):
        bss_eval(np.ones((2, 600)), references)


def test_bss_eval_silent_estimate_message():
    estimates = np.ones((2, 2, 600))
    estimates[1, 0] = 0
    with pytest.raises(ValueError, match=r"estimates holds a silent .* at index \(1, 0\)"):
        bss_eval(estimates, np.ones((2, 2, 600)))


def test_bss_eval_filter_length_messages():
    with pytest.raises(TypeError, match=r"'filter_length' parameter of bss_eval .* Got 8.0"):
        bss_eval(np.ones((2, 600)), np.ones((2, 600)), filter_length=8.0)
    with pytest.raises(ValueError, match=r"'filter_length' .* \[1, inf\). Got 0 instead"):
        bss_eval(np.ones((2, 600)), np.ones((2, 600)), filter_length=0)


def test_bss_eval_compute_permutation_messages():
    with pytest.raises(TypeError, match=r"'compute_permutation' parameter .* Got 1 instead"):
        bss_eval(np.ones((2, 600)), np.ones((2, 600)), compute_permutation=1)
    with pytest.raises(ValueError, match=r"limited to 8 sources; got 9"):
        bss_eval(np.ones((9, 600)), np.ones((9, 600)), compute_permutation=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bss_eval_and_si_sdr_on_cuda_match_cpu():
    references, estimates = _mixed_case(7, 3, n_samples=4000)
    on_cpu = bss_eval(torch.tensor(estimates), torch.tensor(references))
    on_gpu = bss_eval(torch.tensor(estimates).cuda(), torch.tensor(references).cuda())
    for cpu_value, gpu_value in zip(on_cpu, on_gpu, strict=True):
        assert gpu_value.device.type == "cuda"
        torch.testing.assert_close(gpu_value.cpu(), cpu_value, atol=1e-6, rtol=0)
    value = si_sdr(torch.tensor(estimates).cuda(), torch.tensor(references).cuda())
    assert value.device.type == "cuda"
    expected = si_sdr(torch.tensor(estimates), torch.tensor(references))
    torch.testing.assert_close(value.cpu(), expected)


def test_si_sdr_rank_message():
    with pytest.raises(ValueError, match=r"estimate must have shape \(\.\.\., n_samples\); got"):
        si_sdr(np.float64(1.0), np.float64(1.0))


def test_complex_input_message():
    with pytest.raises(TypeError, match=r"reference must hold real numbers; got dtype complex128"):
        si_sdr(np.ones(8), np.ones(8, dtype=complex))
    with pytest.raises(TypeError, match=r"estimates must hold real numbers; got dtype torch.compl"):
        bss_eval(torch.ones(2, 600, dtype=torch.complex64), torch.ones(2, 600))


def test_bss_eval_survives_set_num_threads():
    # torch 2.13's CPU batched LU failed (oneMKL DLASWP errors, then a hang) once
    # set_num_threads had been called; run in a child so this process keeps its threads.
    import subprocess
    import sys

    script = (
        "import torch; torch.set_num_threads(2)\n"
        "from decomp.metrics import bss_eval\n"
        "g = torch.Generator().manual_seed(0)\n"
        "refs = torch.randn(3, 2, 4000, generator=g, dtype=torch.float64)\n"
        "est = refs + 0.1 * torch.randn(3, 2, 4000, generator=g, dtype=torch.float64)\n"
        "sdr, sir, sar = bss_eval(est, refs, filter_length=512)\n"
        "assert torch.isfinite(sdr).all() and sdr.min() > 15, sdr\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "oneMKL ERROR" not in completed.stdout + completed.stderr
