"""Fused kernels for RAVLT's attention (Triton), loaded only where they can run.

``rala_kernel_applies(x)`` says whether the kernels can take the tensor: a CUDA tensor on an
Ampere or newer GPU (TF32 tensor cores; the forward kernels were checked on an H200) and a
triton they import with. The kernel module is imported on first use. ``rala_triton`` is RALA
through the kernels: differentiable (a custom operator ``ravlt::rala_forward`` whose registered
autograd runs the backward kernels), or for inference with the attention's epilogue fused in.
``rala`` is the differentiable form RAVLT trains through: its gradients from the backward
kernels, or from PyTorch's autograd of the same math (``RALAKernelForward``).

What a failure means:
  * a triton the kernels cannot be imported with (too old, changed language: ImportError),
    a GPU they do not fit (too little shared memory, ptxas refusing them): warned once, and
    that configuration (device, head dim, dtype, forward / epilogue / backward) keeps the
    PyTorch path from then on; other configurations still try the kernels;
  * anything else is a bug in the kernels: it raises where ``STRICT`` is set (the tests set
    it), else it is warned and handled as above, so that a user's run still computes.
Triton's interpreter (``TRITON_INTERPRET=1`` while ``ravlt_dense.ops.rala_kernels`` is first
imported) runs the kernels on CPU tensors, slowly: the tests check them that way, with
``KERNEL_DEVICE_TYPES`` widened to the CPU.
"""
import functools
import importlib
import importlib.util
import warnings
from typing import Dict, Optional, Tuple

import torch

MIN_CAPABILITY = (8, 0)
MIN_TRITON = (3, 0)  # tl.dot(input_precision=...), tl.trans of 2-D tiles
KERNEL_DEVICE_TYPES = ('cuda', )  # the tests add 'cpu' (Triton's interpreter)
STRICT = False  # raise a kernel's bugs instead of warning and falling back (the tests)
_failed: Dict[tuple, str] = {}  # configuration (or 'import') -> why its kernels cannot run


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot run for this configuration; use the PyTorch path."""


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Triton installed in a version the kernels are written for."""
    if importlib.util.find_spec('triton') is None:
        return False
    from importlib.metadata import version
    try:
        release = tuple(int(p) for p in version('triton').split('.')[:2])
    except (ValueError, ImportError):  # a build without metadata: let the import decide
        return True
    return release >= MIN_TRITON


@functools.lru_cache(maxsize=None)
def _capable(device: torch.device) -> bool:
    return device.type != 'cuda' or torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


@torch.compiler.assume_constant_result  # torch.compile: evaluated once while tracing
def _supported(device: torch.device) -> bool:
    return triton_available() and _capable(device)


def rala_kernel_applies(x: torch.Tensor) -> bool:
    """Whether the fused RALA kernels can run on ``x``'s device here."""
    return (x.device.type in KERNEL_DEVICE_TYPES and 'import' not in _failed
            and _supported(x.device))


def _kernels():
    """The kernel module; ``KernelUnavailable`` where it cannot be imported."""
    if 'import' in _failed:
        raise KernelUnavailable(_failed['import'])
    try:
        rala_kernels = importlib.import_module(f'{__name__}.rala_kernels')
    except ImportError as exc:  # a triton whose language these kernels do not fit
        _give_up('import', 'every device', exc)
    except Exception as exc:  # a bug in the kernel module
        if STRICT:
            raise
        _give_up('import', 'every device', exc)
    rala_kernels.set_backward(rala_backward_or_fallback)  # failures handled as said above
    return rala_kernels


def _attempt(key: tuple, launch, *args):
    """``launch(*args)`` unless ``key`` failed before; a failure is handled as the module
    docstring says."""
    if key in _failed:
        raise KernelUnavailable(_failed[key])
    kernels = _kernels()
    try:
        return launch(*args)
    except torch.OutOfMemoryError:  # the run's, not the kernels': no reason to give them up
        raise
    except Exception as exc:
        if STRICT and not isinstance(exc, kernels.UNSUPPORTED_ERRORS):
            raise
        _give_up(key, f'{key[0]}, head dim {key[1]}, {key[2]}, {key[3]}', exc)


def _key(q: torch.Tensor, what: str) -> tuple:
    return (q.device, q.shape[-1], q.dtype, what)


def rala_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotation: torch.Tensor,
                scale: float, lepe: Optional[torch.Tensor] = None,
                gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """RALA through the fused kernels; the inputs and result of ``rala_fast``.

    Args:
        q, k, v (Tensor): (B, heads, N, d) in any strides and one float dtype; d divisible by 4.
        rotation (Tensor): (N, d/2) complex64 RoPE rotation of the map (``RoPE.cached``), or
            its (N, d) float32 table of interleaved (cos, sin) (``rope_table``: traceable).
        scale (float): The softmax scale of the global query (head_dim ** -0.5).
        lepe, gate (Tensor, optional): (B, heads, N, d) head views of RALAttention's local
            branch and output gate. Given both, the result is (lepe + RALA) * gate, written into
            ``lepe`` (inference: autograd does not see it). Without them the result is
            differentiable (the backward kernels) and traceable (``torch.compile``,
            ``torch.export`` keep ``ravlt::rala_forward`` in the graph).

    Returns:
        Tensor: (B, heads, N, d) in q's dtype (computed in fp32, fp64 for fp64 inputs), laid
        out as ``RALAttention``'s head views of a channels-last map; ``lepe`` when gated.

    Raises:
        KernelUnavailable: The kernels cannot run for this configuration (warned once).
    """
    compiling = torch.compiler.is_compiling()  # then no fallback: the graph holds the op
    if compiling:
        from . import rala_kernels as kernels  # (dynamo does not trace importlib)
    else:
        kernels = _kernels()
    kernels.check_inputs(q, k, v, rotation, lepe, gate)
    table = rotation_table(rotation, q.device)
    if lepe is not None:
        if compiling:
            raise ValueError('the fused epilogue writes into lepe, which compiled graphs do not '
                             'follow: call rala_triton without lepe and gate there and compute '
                             '(lepe + out) * gate (the compiler fuses it)')
        return _attempt(_key(q, 'forward + epilogue'), kernels.rala_gated_, q, k, v, table,
                        scale, lepe, gate)
    if compiling:
        return kernels.rala_forward(q, k, v, table, scale)[0]
    return _attempt(_key(q, 'forward'), kernels.rala_forward, q, k, v, table, scale)[0]


class RALAKernelForward(torch.autograd.Function):
    """RALA with the fused forward kernels and PyTorch's autograd for the gradients: the
    backward recomputes the same math in PyTorch ops (``rala_pytorch``) from the saved q, k, v
    (the kernels keep no activations) and differentiates it. What RAVLT trains through on
    CUDA unless ``rala_kernel_backward`` opts in to the backward kernels (``rala``).

    ``apply(q, k, v, rotation, scale)``: the arguments of ``rala_triton`` without the epilogue;
    raises ``KernelUnavailable`` where the forward kernels cannot run.
    """

    @staticmethod
    def forward(ctx, q, k, v, rotation, scale):
        ctx.save_for_backward(q, k, v)
        ctx.rotation, ctx.scale = rotation, scale
        return rala_triton(q, k, v, rotation, scale)  # (no gradient recorded in here)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        table = rotation_table(ctx.rotation, grad.device)
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in ctx.saved_tensors]
            out = rala_pytorch(*inputs, table, ctx.scale)
            return (*torch.autograd.grad(out, inputs, grad), None, None)


def rala(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotation: torch.Tensor,
         scale: float, backward_kernels: bool = False) -> torch.Tensor:
    """RALA through the fused forward kernels, differentiable: ``rala_triton``'s arguments
    without the epilogue. The gradients come from the backward kernels where
    ``backward_kernels`` (the operator's registered autograd; compiled graphs always keep the
    operator), else from PyTorch's autograd of the same math (``RALAKernelForward``).

    Raises:
        KernelUnavailable: The kernels cannot run for this configuration (warned once).
    """
    if backward_kernels or torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return rala_triton(q, k, v, rotation, scale)
    return RALAKernelForward.apply(q, k, v, rotation, scale)


def rotation_table(rotation: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The (N, d) float32 table of interleaved (cos, sin) the kernels read, on ``device``, from
    ``RoPE.cached``'s complex rotation or from such a table (``rope_table``)."""
    table = rotation.to(device)
    return torch.view_as_real(table).flatten(-2) if table.is_complex() else table


def rope_table(sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """The (N, d) float32 table of interleaved (cos, sin) the kernels read, from RoPE's (N, d)
    sin / cos tables (channel pairs share their angle), in traceable ops."""
    return torch.stack((cos[:, ::2], sin[:, ::2]), dim=-1).flatten(-2).float()


def rala_backward_or_fallback(grad, q, k, v, table, q_global, kv, ksum, max_logit, denom,
                              scale: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward kernels, or where they cannot run (see above) PyTorch's autograd of the
    same math (recomputed from q, k, v)."""
    from .rala_kernels import rala_backward
    saved = (q_global, kv, ksum, max_logit, denom, scale)
    if torch.compiler.is_compiling():
        return rala_backward(grad, q, k, v, table, *saved)
    try:
        return _attempt(_key(q, 'backward'), rala_backward, grad, q, k, v, table, *saved)
    except KernelUnavailable:
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (q, k, v)]
            out = rala_pytorch(*inputs, table, scale)
            return torch.autograd.grad(out, inputs, grad)


def rala_pytorch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                 scale: float) -> torch.Tensor:
    """The kernels' math in PyTorch ops (fp32), on their inputs: the backward's fallback."""
    cos, sin = (table[:, i::2].repeat_interleave(2, dim=-1) for i in (0, 1))

    def rotate(x):  # (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)
        pairs = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
        return x * cos + pairs * sin

    dtype = q.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    q, k = (torch.nn.functional.elu(t.to(acc)) + 1 for t in (q, k))
    v = v.to(acc)
    alpha = torch.softmax(scale * q.mean(dim=-2, keepdim=True) @ k.transpose(-1, -2), dim=-1)
    z = 1 / (q @ (alpha @ k).transpose(-1, -2) + 1e-6)
    kv = rotate(k).transpose(-1, -2) @ (v * alpha.transpose(-1, -2))
    return ((rotate(q) @ kv) * z).to(dtype)


def _give_up(key, what: str, exc: Exception) -> None:
    """Warn once, remember ``key`` and raise ``KernelUnavailable``."""
    text = str(exc).strip().splitlines()
    reason = f'{type(exc).__name__}: {text[0][:200] if text else ""}'
    _failed[key] = reason
    warnings.warn(f"RALA's fused Triton kernel cannot run for {what}: {reason}. RAVLT computes "
                  f'that case with PyTorch ops from now on (same results, slower); '
                  f'RAVLT(rala_kernel=False) skips the kernel altogether.')
    raise KernelUnavailable(reason) from exc


__all__ = ['KernelUnavailable', 'RALAKernelForward', 'rala', 'rala_kernel_applies',
           'rala_triton', 'rope_table', 'rotation_table', 'triton_available']
