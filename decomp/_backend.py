"""Conversions between NumPy and torch, and device/dtype resolution.

Every estimator accepts NumPy arrays or torch tensors; NumPy in gives NumPy out,
a tensor in gives a tensor out on the same device.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import InvalidParameterError

__all__ = [
    "DEVICE_OPTIONS",
    "MATMUL_PRECISIONS",
    "available_memory",
    "check_memory",
    "is_device",
    "native_bfloat16",
    "resolve_device",
    "resolve_dtype",
    "resolve_matmul_precision",
    "to_tensor",
    "like_input",
    "is_tensor",
    "torch_threads",
]

#: The ``device`` values every estimator accepts, as error messages spell them.
DEVICE_OPTIONS = (
    "'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index) or a torch.device of type 'cpu' or "
    "'cuda'"
)
_DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    np.float32: torch.float32,
    np.float64: torch.float64,
}


def is_device(device: Any) -> bool:
    """Whether ``device`` is one of :data:`DEVICE_OPTIONS` (its form only, not availability)."""
    if isinstance(device, torch.device):
        return device.type in ("cpu", "cuda")
    return isinstance(device, str) and (
        device == "auto" or _DEVICE_NAME.fullmatch(device) is not None
    )


def resolve_device(
    device: str | torch.device | None, *, owner: str | None = None, name: str = "device"
) -> torch.device:
    """Check ``device`` and turn ``"auto"``/``None``/a name into a :class:`torch.device`.

    The one place device values are checked: every estimator calls it (through its
    ``_parameter_constraints`` and again when it resolves the device), so all refuse the
    same values with the same message. ``"auto"`` (and ``None``) picks CUDA when it is
    available, the CPU otherwise.

    Parameters
    ----------
    device : str, torch.device or None
        One of :data:`DEVICE_OPTIONS`.
    owner : str, optional
        The estimator or function whose parameter it is, named in messages.
    name : str, default="device"
        The parameter's name, used in messages.

    Returns
    -------
    torch.device

    Raises
    ------
    InvalidParameterError
        (a ``ValueError`` and ``TypeError``) If ``device`` is not of an accepted form.
    ValueError
        If it names CUDA and CUDA is not available, or a GPU index that does not exist.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    of_owner = f" of {owner}" if owner else ""
    if not is_device(device):
        raise InvalidParameterError(
            f"The {name!r} parameter{of_owner} must be {DEVICE_OPTIONS}. "
            f"Got {device!r} instead."
        )
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            reason = ("this torch was built without CUDA" if torch.version.cuda is None
                      else "no CUDA GPU is visible")
            raise ValueError(
                f"The {name!r} parameter{of_owner} is {device!r}, but CUDA is not available "
                f"({reason}); use device='cpu' or 'auto'."
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"The {name!r} parameter{of_owner} is {device!r}, but only {count} CUDA "
                f"device(s) are visible (indices 0 to {count - 1})."
            )
    return resolved


#: The ``flow_precision`` values of the DDS estimators.
MATMUL_PRECISIONS = ("float32", "bfloat16", "auto")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices faster than float32 ones.

    CUDA: :func:`torch.cuda.is_bf16_supported`. CPU: Intel AMX tiles that oneDNN may use
    (not barred by ``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``) and oneDNN's bfloat16
    kernels. Without AMX, bfloat16 products are emulated or run on AVX-512 BF16
    instructions: one DDS-3 search iteration on the 2-core reference machine, one thread,
    oneDNN restricted through ``ONEDNN_MAX_CPU_ISA``, took 1.3x (AVX-512 BF16), 2.5x
    (AVX-512) and 21x (AVX2) the time of float32, against 0.59x with AMX
    (``benchmarks/dds_speed.py --threads 1``). Private torch helpers are probed
    defensively: where they are missing, the answer is False (float32, the safe choice).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        limit = os.environ.get(variable, "").upper()
        if limit and limit != "ALL" and "AMX" not in limit:
            return False
    try:
        return bool(torch.cpu._is_amx_tile_supported()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_matmul_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a ``flow_precision`` on ``device``; None for float32.

    ``"auto"`` is bfloat16 where :func:`native_bfloat16` holds, float32 elsewhere.
    """
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"precision must be one of {MATMUL_PRECISIONS}; got {precision!r}.")
    if precision == "bfloat16" or (precision == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    return None


def _cgroup_memory() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit; None if there is none."""
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        used = (cgroup / "memory.current").read_text().strip()
        return None if limit == "max" else max(int(limit) - int(used), 0)
    except (OSError, ValueError):
        return None


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``; None when that cannot be known.

    CUDA: the free memory the driver reports. CPU (Linux): ``MemAvailable`` of
    ``/proc/meminfo`` (free memory plus what the kernel can reclaim), bounded by the
    cgroup limit of a container, else ``os.sysconf``'s free pages.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024  # the file counts kB
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    cgroup = _cgroup_memory()
    return available if cgroup is None else min(available, cgroup)


def check_memory(n_bytes: int, *, device: torch.device, who: str, what: str, hint: str) -> None:
    """Refuse, before allocating, a computation that needs more memory than ``device`` has.

    Parameters
    ----------
    n_bytes : int
        A lower bound on what the computation allocates (so a refusal is never wrong).
    device : torch.device
        Where it would run.
    who : str
        The method that needs it, e.g. ``"NMF.fit"``.
    what : str
        What it needs the memory for and how that was counted, e.g. ``"its factors
        (n_components=10 x (n_frames=40 + n_bins=12) x 4 bytes x 2 copies)"``.
    hint : str
        What to change.

    Raises
    ------
    MemoryError
        If ``n_bytes`` exceeds :func:`available_memory`; nothing is allocated.
    """
    available = available_memory(device)
    if available is not None and n_bytes > available:
        raise MemoryError(
            f"{who} needs at least {n_bytes / 1e9:,.1f} GB for {what}, but only "
            f"{available / 1e9:,.1f} GB of memory is available on {device}. {hint}"
        )


def resolve_dtype(dtype: Any) -> torch.dtype:
    """Map ``"float32"``/``"float64"`` (or the NumPy/torch types) to a torch dtype."""
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.") from None


def is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def to_tensor(value: Any, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Convert an array-like to a tensor on ``device`` with ``dtype`` (no copy when possible)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=dtype)
    array = np.asarray(value)
    if not array.flags.writeable or any(stride < 0 for stride in array.strides):
        # torch cannot wrap read-only memory (e.g. a memmap) without a warning, nor a
        # reversed view (X[::-1]) at all.
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


def like_input(result: torch.Tensor, reference: Any) -> Any:
    """Return ``result`` as the same kind of object as ``reference``.

    A tensor reference gives a tensor on the reference's device; anything else gives
    a NumPy array.
    """
    if isinstance(reference, torch.Tensor):
        return result.detach().to(reference.device)
    return result.detach().cpu().numpy()


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with ``n_threads`` torch intra-op threads, then restore the count.

    ``None`` leaves the process's setting alone. The count is process-wide in torch, so
    code running in other Python threads meanwhile sees it too.
    """
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    if previous != n_threads:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
