"""Device resolution and the memory check shared by every estimator."""

from __future__ import annotations

import re

import pytest
import torch

from decomp import _backend
from decomp._backend import (
    DEVICE_OPTIONS,
    available_memory,
    check_memory,
    is_device,
    resolve_device,
    resolve_matmul_precision,
)

CPU = torch.device("cpu")


def test_auto_and_none_pick_cuda_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == CPU
    assert resolve_device(torch.device("cpu")) == CPU


@pytest.mark.parametrize("device", ["bogus", "meta", "cuda:x", "CPU", 3, torch.device("meta")])
def test_malformed_devices_get_the_parameter_message(device):
    assert not is_device(device)
    message = f"The 'device' parameter of NMF must be {DEVICE_OPTIONS}. Got {device!r} instead."
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_device(device, owner="NMF")
    with pytest.raises(TypeError, match=re.escape("The 'device' parameter must be")):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_without_cuda_is_a_clear_error(device):
    with pytest.raises(ValueError, match=re.escape(
            f"The 'device' parameter of DDS2 is {device!r}, but CUDA is not available (")):
        resolve_device(device, owner="DDS2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_missing_gpu_index_is_a_clear_error():
    count = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=re.escape(
            f"is 'cuda:{count}', but only {count} CUDA device(s) are visible")):
        resolve_device(f"cuda:{count}")


def test_available_memory_is_a_positive_byte_count():
    available = available_memory(CPU)
    assert available is None or available > 0
    if torch.cuda.is_available():
        assert available_memory(torch.device("cuda")) > 0


def test_check_memory_refuses_beyond_the_free_memory(monkeypatch):
    monkeypatch.setattr(_backend, "available_memory", lambda device: 8 * 10**9)
    check_memory(8 * 10**9, device=CPU, who="NMF.fit", what="its factors", hint="Lower it.")
    with pytest.raises(MemoryError, match=re.escape(
            "NMF.fit needs at least 12,345.7 GB for its factors, but only 8.0 GB of memory is "
            "available on cpu. Lower it.")):
        check_memory(12_345_678_901_234, device=CPU, who="NMF.fit", what="its factors",
                     hint="Lower it.")


def test_unknown_free_memory_never_refuses(monkeypatch):
    monkeypatch.setattr(_backend, "available_memory", lambda device: None)
    check_memory(10**18, device=CPU, who="NMF.fit", what="its factors", hint="")


def test_reversed_and_read_only_arrays_convert_to_tensors():
    import numpy as np

    from decomp import NMF

    X = np.random.default_rng(0).random((12, 6))
    reversed_view = X[::-1]
    tensor = _backend.to_tensor(reversed_view, device=torch.device("cpu"), dtype=torch.float64)
    assert torch.equal(tensor, torch.as_tensor(X[::-1].copy()))
    read_only = X.copy()
    read_only.flags.writeable = False
    assert torch.equal(_backend.to_tensor(read_only, device=torch.device("cpu"),
                                          dtype=torch.float64), torch.as_tensor(X))
    model = NMF(n_components=2, max_iter=20, random_state=0)
    np.testing.assert_allclose(model.fit_transform(reversed_view),
                               NMF(n_components=2, max_iter=20, random_state=0)
                               .fit_transform(X[::-1].copy()))


@pytest.mark.parametrize("inside", [1, 3])
def test_torch_threads_sets_the_count_inside_and_restores_it(inside):
    before = torch.get_num_threads()
    with _backend.torch_threads(inside):
        assert torch.get_num_threads() == inside
    assert torch.get_num_threads() == before


def test_torch_threads_restores_the_count_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), _backend.torch_threads(before + 1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_torch_threads_none_leaves_the_count_alone():
    before = torch.get_num_threads()
    with _backend.torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_matmul_precision_resolves_auto_by_the_device(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_matmul_precision("float32", cpu) is None
    assert resolve_matmul_precision("bfloat16", cpu) is torch.bfloat16
    monkeypatch.setattr(_backend, "native_bfloat16", lambda device: False)
    assert resolve_matmul_precision("auto", cpu) is None
    monkeypatch.setattr(_backend, "native_bfloat16", lambda device: True)
    assert resolve_matmul_precision("auto", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_matmul_precision("float16", cpu)


def test_native_bfloat16_is_false_where_torch_cannot_say(monkeypatch):
    def missing():
        raise AttributeError("no such helper in this torch")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", missing, raising=False)
    assert _backend.native_bfloat16(torch.device("cpu")) is False
    assert _backend.native_bfloat16(torch.device("meta")) is False


@pytest.mark.parametrize("limit, native", [("AVX2", False), ("avx512_core_bf16", False),
                                           ("AVX512_CORE_AMX", True), ("ALL", True)])
def test_native_bfloat16_respects_a_onednn_isa_limit(monkeypatch, limit, native):
    # A limit below AMX makes oneDNN emulate bfloat16 even on a CPU with AMX tiles;
    # otherwise the hardware decides.
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True,
                        raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    assert _backend.native_bfloat16(torch.device("cpu")) is native
