"""Fused kernels for RAVLT's attention (Triton), loaded only where they can run.

``rala_kernel_applies(x)`` says whether ``rala_triton`` can take the tensor: a CUDA tensor on an
Ampere or newer GPU (TF32 tensor cores; the kernels are checked on Hopper), triton installed, and
no earlier failure on that device. The kernel module is imported on first use. If the kernels
cannot be imported, compiled or launched on a device (a triton too old for them, too little
shared memory, a triton that does not know the GPU, ...), ``rala_triton`` warns once, raises
``KernelUnavailable`` and the device keeps the PyTorch path from then on. Triton's interpreter
(``TRITON_INTERPRET=1`` before triton is first imported) also runs the kernels on CPU tensors,
slowly: the tests check them that way.
"""
import functools
import importlib.util
import warnings
from typing import Dict

import torch

MIN_CAPABILITY = (8, 0)
_failed: Dict[torch.device, str] = {}  # device -> why its kernels could not run


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot run on this device; use the PyTorch path."""


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    return importlib.util.find_spec('triton') is not None


@functools.lru_cache(maxsize=None)
def _capable(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


def rala_kernel_applies(x: torch.Tensor) -> bool:
    """Whether the fused RALA kernel can run on ``x``'s device here."""
    return (x.is_cuda and triton_available() and x.device not in _failed
            and _capable(x.device))


def rala_triton(q: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``ravlt_dense.ops.rala_kernels.rala_triton`` (see there), imported on first call.

    Raises:
        KernelUnavailable: The kernels failed to compile or launch on q's device (warned once;
            later calls for that device raise at once).
    """
    if q.device in _failed:
        raise KernelUnavailable(_failed[q.device])
    try:
        from .rala_kernels import KERNEL_ERRORS, rala_triton as kernel
    except Exception as exc:  # a triton whose language these kernels do not fit
        _give_up(q.device, exc)
    try:
        return kernel(q, *args, **kwargs)
    except KERNEL_ERRORS as exc:
        _give_up(q.device, exc)


def _give_up(device: torch.device, exc: Exception) -> None:
    """Warn once, remember the device and raise ``KernelUnavailable``."""
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else str(device)
    text = str(exc).strip().splitlines()
    reason = f'{type(exc).__name__}: {text[0][:200] if text else ""}'
    _failed[device] = reason
    warnings.warn(f"RALA's fused Triton kernel cannot run on {device} ({name}): {reason}. "
                  f'RAVLT computes RALA with PyTorch ops on this device from now on (same '
                  f'results, slower); RAVLT(rala_kernel=False) skips the kernel altogether.')
    raise KernelUnavailable(reason) from exc


__all__ = ['KernelUnavailable', 'rala_kernel_applies', 'rala_triton', 'triton_available']
