"""Fused kernels for RAVLT's attention (Triton), loaded only where they can run.

``rala_kernel_applies(x)`` says whether ``rala_triton`` can take the tensor (a CUDA tensor, triton
installed). The kernel module is imported on first use. Triton's interpreter
(``TRITON_INTERPRET=1`` before triton is first imported) also runs the kernels on CPU tensors,
slowly: the tests check them that way.
"""
import functools
import importlib.util

import torch


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    return importlib.util.find_spec('triton') is not None


def rala_kernel_applies(x: torch.Tensor) -> bool:
    """Whether the fused RALA kernel can run on ``x``'s device here."""
    return x.is_cuda and triton_available()


def rala_triton(*args, **kwargs) -> torch.Tensor:
    """``ravlt_dense.ops.rala_kernels.rala_triton`` (see there), imported on first call."""
    from .rala_kernels import rala_triton as kernel
    return kernel(*args, **kwargs)


__all__ = ['rala_kernel_applies', 'rala_triton', 'triton_available']
