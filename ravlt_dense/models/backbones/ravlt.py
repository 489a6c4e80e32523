"""RAVLT: Rank-Augmented Vision Linear Transformer ("Breaking the Low-Rank Dilemma of Linear
Attention", CVPR 2025) as an OpenMMLab dense-prediction backbone.

Read top to bottom: how the fast path runs (tracing, CUDA forms, CPU inference in bands),
2-D RoPE, the two attentions (RALA and softmax), the convolutional FFN, the block, the stage,
the stem and finally the backbone. Module and attribute names follow the authors' release, so
their checkpoints load key for key (``layers.0.RoPE.angle``, ``blocks.0.attn.qkvo``...).

Every attention has two implementations of the same math:
  * ``reference``: the paper's formulas written out directly (token-major tensors, an explicit
    N x N matrix for softmax attention, RoPE tables rebuilt on every call);
  * ``fast``: channels-last maps, RALA with the key re-weighting folded into the values and its
    sums in fp32, softmax attention through ``F.scaled_dot_product_attention``, RoPE as one
    complex product with the rotation cached per (size, device), and sums added in place into
    tensors made just before. The tests hold the two to 1e-5, outputs and gradients.

The fast path takes other forms where they pay (each held to the same math by the tests):
  * traced (``torch.compile``, ``torch.export``, ``torch.jit.trace``, the ONNX exporters: see
    ``is_tracing``): RoPE in real arithmetic on tables built from the ``angle`` buffer inside
    the graph (no complex numbers, which ONNX lacks; no cache keyed on storage), its sums out
    of place (exporters that trace do not follow writes through views);
  * on CUDA (``cuda_forms``): 1x1 convs as matrix products with the bias inside, the norms of
    the blocks in half precision under autocast; with triton installed RALA runs in fused
    Triton kernels (``ravlt_dense.ops``; the operator ``ravlt::rala_forward`` in compiled and
    exported graphs, PyTorch ops in ONNX and TorchScript exports; ``rala_kernel=False`` keeps
    the PyTorch ops). In training PyTorch's autograd gives its gradients, or with
    ``rala_kernel_backward=True`` three backward kernels (not yet run on a GPU);
  * in CPU inference (``runs_in_bands``): each stage runs its blocks in bands of rows through
    buffers it reuses, so that no block makes a map of its input's size.
"""
import math
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule, constant_init, trunc_normal_init
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ravlt_dense import ops
from ravlt_dense.checkpoint import load_backbone_checkpoint

ATTN_TYPES = ('rala', 'softmax')
ATTN_IMPLS = ('fast', 'reference')
MIN_INPUT_SIZE = 32  # four stride-2 reductions (stem x2, three downsamples) need at least this


# --------------------------------------------------------------------------------------------
# How the fast path runs: traced, on CUDA, in bands of rows in CPU inference
# --------------------------------------------------------------------------------------------
def is_tracing() -> bool:
    """Whether the model is being traced rather than run: ``torch.compile`` and ``torch.export``
    (dynamo), ``torch.jit.trace`` or either ONNX exporter."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export())


def cuda_forms(x: torch.Tensor) -> bool:
    """Whether the fast path takes its CUDA forms for ``x``: on a CUDA device, not traced.

    Where cuDNN or PyTorch's CUDA kernels make the portable spelling cost extra passes over the
    map (a conv's bias added in a pass of its own, LayerNorm's fp32 round trip under autocast),
    the fast path writes the same math another way on CUDA. The tests run these forms on the
    CPU too (by patching this function).
    """
    return x.is_cuda and not is_tracing()


# The largest map a band makes. glibc serves blocks under 32 MB from its heap once blocks that
# large have been freed, and gives the heap back where more than twice that much lies free
# at its top: a band's few maps stay under that at this size (measured: docs/analysis).
BAND_BYTES = 16 << 20


def runs_in_bands(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``module`` computes ``x`` band by band, in buffers it reuses (the CPU inference
    form of the fast path): in eval mode, fp32 on the CPU, no autocast, no tracer, no gradient
    to record.

    glibc's allocator gives a tensor of more than 32 MB a fresh mapping, and every page of it
    costs a fault on its first write (on a VM a costly one): made whole, the maps of a block
    cost all-RALA RAVLT-S at 1536x1536 nearly as much CPU time in page faults as in arithmetic
    (docs/analysis/linear_speed.md). In bands of rows every
    intermediate is under ``BAND_BYTES`` and reused from the allocator's heap; the maps a
    block keeps whole are the stage's buffers, made once per stage.
    """
    return (not module.training and x.device.type == 'cpu' and x.dtype == torch.float32
            and not is_tracing()
            and not torch.is_autocast_enabled('cpu')
            and not (torch.is_grad_enabled()
                     and (x.requires_grad or any(p.requires_grad for p in module.parameters())))
            and not has_hooks(module))


def has_hooks(module: nn.Module) -> bool:
    """Whether a forward hook watches a module inside ``module`` (or every module).

    The bands call the blocks' layers' kernels, not the layers, and work in place: a hook (a
    CAM, a feature probe) would neither fire nor see the maps it saw, so such a module runs
    whole. A hook on ``module`` itself sees its input and output as ever (a stage's timer).
    """
    hooks = nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks
               for m in module.modules() if m is not module)


def band_rows(width: int, channels: int, reach: int = 0, itemsize: int = 4) -> int:
    """Rows of a band whose ``channels`` x ``width`` map, with the ``reach`` rows a conv reads
    beyond it on either side, fits in ``BAND_BYTES`` (at least one row)."""
    return max(1, BAND_BYTES // (width * channels * itemsize) - 2 * reach)


def row_bands(height: int, rows: int):
    """(first, end) of each band of ``rows`` rows covering ``height`` rows."""
    for first in range(0, height, rows):
        yield first, min(first + rows, height)


def conv_rows(conv: nn.Conv2d, x: torch.Tensor, first: int, end: int) -> torch.Tensor:
    """A stride-1 'same' conv of ``x`` (1, C, H, W), output rows first..end only: the conv of
    the band with the rows its kernel reaches beyond it (the outputs at those rows, lacking
    their own neighbours, are dropped)."""
    reach = conv.padding[0]
    top, bottom = max(first - reach, 0), min(end + reach, x.shape[-2])
    return conv(x[:, :, top:bottom])[:, :, first - top:end - top]


def batch_norm_(norm: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """An eval-mode BatchNorm written into ``x`` (x * scale + shift): no fresh map."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    return torch.addcmul(shift[:, None, None], x, scale[:, None, None], out=x)


class PointwiseConv(nn.Conv2d):
    """A 1x1 conv (an ``nn.Conv2d``: the release's keys and shapes) that runs on CUDA as one
    matrix product with its bias in the product's epilogue.

    PyTorch's cuDNN convolution returns the product without the bias and adds the bias in a
    second pass over the output, a broadcast add that does not vectorise: by the bytes it moves,
    these adds after all the block's convs are the 11.7 ms ``elementwise_kernel<128, 4,
    gpu_kernel_impl_nocast>`` of a batch-8 RAVLT-S forward on the H200 (docs/gpu.md).
    ``F.linear`` on the (B*H*W, C) view of a channels-last map is the same product, and
    cuBLASLt adds the bias while it writes the result.

    On the CPU in fp32 it is oneDNN's convolution whatever the thread count: with one thread
    (and fewer than 16 images) PyTorch takes the 1x1 conv to its own im2col-free product
    instead, which runs in MKL's sgemm at half oneDNN's speed on the AMD EPYC this project is
    measured on (docs/analysis/linear_speed.md). Other dtypes, autocast, traced graphs: the
    plain conv.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``bias`` replaces the layer's own (``ConvFFN`` folds the depth-wise conv's into it)."""
        bias = self.bias if bias is None else bias
        if cuda_forms(x) and x.is_contiguous(memory_format=torch.channels_last):
            B, C, H, W = x.shape
            # 2-D input: F.linear of a 4-D one adds the bias in a separate broadcast pass again
            out = F.linear(x.permute(0, 2, 3, 1).reshape(B * H * W, C), self.weight.flatten(1),
                           bias)
            return out.view(B, H, W, -1).permute(0, 3, 1, 2)
        if (not is_tracing() and x.device.type == 'cpu'
                and x.dtype == self.weight.dtype == torch.float32
                and not torch.is_autocast_enabled('cpu')
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return torch.mkldnn_convolution(x, self.weight, bias, self.padding, self.stride,
                                            self.dilation, self.groups)
        return self._conv_forward(x, self.weight, bias)


# --------------------------------------------------------------------------------------------
# 2-D rotary position embedding
# --------------------------------------------------------------------------------------------
def rope_angles(head_dim: int) -> torch.Tensor:
    """Frequencies 1 / 10000^linspace(0, 1, d/4), each repeated twice: d/2 values."""
    angle = 1.0 / (10000**torch.linspace(0, 1, head_dim // 4))
    return angle.repeat_interleave(2)


def rope_tables(angle: torch.Tensor, height: int,
                width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """sin/cos tables of shape (H*W, d): token (i, j) gets [f(i * angle), f(j * angle)]."""
    rows = torch.arange(height, device=angle.device, dtype=angle.dtype)[:, None] * angle
    cols = torch.arange(width, device=angle.device, dtype=angle.dtype)[:, None] * angle
    half = angle.numel()
    theta = torch.cat([
        rows[:, None, :].expand(height, width, half),
        cols[None, :, :].expand(height, width, half)
    ], dim=-1).reshape(height * width, 2 * half)
    return theta.sin(), theta.cos()


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last dim."""
    x_even, x_odd = x[..., ::2], x[..., 1::2]
    return torch.stack((-x_odd, x_even), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """RoPE(x) = x * cos + rotate_every_two(x) * sin, x of shape (..., N, d)."""
    return x * cos + rotate_every_two(x) * sin


def apply_rope_complex(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` as one complex product: pair (x0, x1) is x0 + i x1, times e^(i theta).

    (x0 + i x1)(cos + i sin) = (x0 cos - x1 sin) + i (x1 cos + x0 sin), the rotation that
    ``apply_rope`` spells out. ``rotation``: (N, d/2) complex. Half inputs are rotated in fp32
    (there are no complex bf16 kernels) and cast back.
    """
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(s % 2 for s in x.stride()[:-1]):
        x = x.contiguous()  # view_as_complex needs (re, im) pairs side by side in memory
    rotated = torch.view_as_complex(x.unflatten(-1, (-1, 2))) * rotation
    return torch.view_as_real(rotated).flatten(-2).to(dtype)


class RoPE(nn.Module):
    """2-D RoPE of one stage: holds its frequencies (the ``angle`` buffer, part of the release's
    checkpoints) and makes the sin/cos tables (reference path) or the complex rotation (fast
    path, cached per size and device) for an H x W map.

    Args:
        head_dim (int): Channels per attention head (divisible by 4: rows and columns each
            rotate half of them in pairs).
        cache_size (int): Sizes whose rotation is kept (least recently used dropped).
    """

    def __init__(self, head_dim: int, cache_size: int = 8):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f'2-D RoPE needs a head dim divisible by 4, got {head_dim}')
        self.register_buffer('angle', rope_angles(head_dim))
        self.cache_size = cache_size
        self._cache: 'OrderedDict[tuple, torch.Tensor]' = OrderedDict()

    def forward(self, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Token-major (sin, cos), each (H*W, d), built anew on every call."""
        return rope_tables(self.angle, height, width)

    def rotary(self, height: int, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """RoPE for (..., H*W, d) tensors as the fast path applies it, in the input's dtype.

        Eager: one complex product with the cached rotation. Traced: the written-out rotation
        on tables computed in the graph, in fp32 as the complex product is.
        """
        if is_tracing():
            sin, cos = rope_tables(self.angle.float(), height, width)
            return lambda x: apply_rope(x.float(), sin, cos).to(x.dtype)
        rotation = self.cached(height, width)
        return lambda x: apply_rope_complex(x, rotation)

    def cached(self, height: int, width: int) -> torch.Tensor:
        """(H*W, d/2) complex64 e^(i theta) for ``apply_rope_complex``, cached per size/device.

        The key holds the buffer's version counter, so loading new weights invalidates the cache.
        """
        angle = self.angle
        key = (height, width, angle.device, angle._version, angle.data_ptr())
        rotation = self._cache.get(key)
        if rotation is None:
            # not an inference tensor even when first built under torch.inference_mode():
            # training after such an evaluation must be able to use it
            with torch.inference_mode(False), torch.no_grad():
                sin, cos = rope_tables(angle.float(), height, width)
                rotation = torch.complex(cos[:, ::2], sin[:, ::2])  # pairs share their angle
            self._cache[key] = rotation
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return rotation


# --------------------------------------------------------------------------------------------
# Attention: rank-augmented linear attention (RALA) and softmax attention, same parameters
# --------------------------------------------------------------------------------------------
def rala_terms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sin: torch.Tensor,
               cos: torch.Tensor, scale: float
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pieces of RALA as the paper writes them, for ``rala_reference`` and the rank analysis.

    Args:
        q, k, v (Tensor): (B, heads, N, d) queries, keys and values.
        sin, cos (Tensor): (N, d) RoPE tables of the stage.
        scale (float): head_dim ** -0.5.

    Returns:
        tuple: phi(q) = elu(q) + 1 (B, h, N, d); the key weights alpha (B, h, 1, N) from the
        global query; the KV buffer RoPE(k * alpha * N)^T v / N (B, h, d, d); the normaliser
        z (B, h, N, 1).
    """
    num_tokens = q.shape[-2]
    q = F.elu(q) + 1
    k = F.elu(k) + 1
    q_global = q.mean(dim=-2, keepdim=True)  # (B, h, 1, d)
    alpha = torch.softmax(scale * q_global @ k.transpose(-1, -2), dim=-1)  # (B, h, 1, N)
    k = k * alpha.transpose(-1, -2) * num_tokens  # query-aware key re-weighting
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-1, -2) + 1e-6)  # (B, h, N, 1)
    k_rope = apply_rope(k, sin, cos)
    kv = (k_rope.transpose(-1, -2) / math.sqrt(num_tokens)) @ (v / math.sqrt(num_tokens))
    return q, alpha, kv, z


def rala_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sin: torch.Tensor,
                   cos: torch.Tensor, scale: float) -> torch.Tensor:
    """RALA as the paper writes it. q, k, v: (B, heads, N, d); returns (B, heads, N, d)."""
    q, _, kv, z = rala_terms(q, k, v, sin, cos, scale)
    return (apply_rope(q, sin, cos) @ kv) * z


def rala_fast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              rotate: Callable[[torch.Tensor], torch.Tensor], scale: float) -> torch.Tensor:
    """RALA with the same inputs and result as ``rala_reference``, computed in fewer steps.

    RoPE acts per token, so the re-weighting alpha * N commutes with it and cancels against the
    1/N of the kv product: kv = RoPE(k)^T (alpha * v) and mean(k * alpha * N) = alpha^T k.
    ``rotate`` applies RoPE (``RoPE.rotary``). Runs in fp32: the normaliser z and the sum over
    all tokens in kv lose precision or overflow in fp16/bf16. In-place steps only touch tensors
    made here (autograd-safe).
    """
    out_dtype = q.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = q.float(), k.float(), v.float()
        q = F.elu(q).add_(1)
        k = F.elu(k).add_(1)
        q_global = q.mean(dim=-2, keepdim=True)  # (B, h, 1, d)
        alpha = torch.softmax(scale * q_global @ k.transpose(-1, -2), dim=-1)  # (B, h, 1, N)
        z = 1 / (q @ (alpha @ k).transpose(-1, -2) + 1e-6)  # (B, h, N, 1)
        kv = rotate(k).transpose(-1, -2) @ (v * alpha.transpose(-1, -2))
        out = (rotate(q) @ kv).mul_(z)
    return out.to(out_dtype)


def softmax_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                sin: torch.Tensor, cos: torch.Tensor, scale: float
                                ) -> torch.Tensor:
    """Global softmax attention with RoPE on q and k; (B, heads, N, d) in and out."""
    q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    attn = torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1)
    return attn @ v


class RALAttention(nn.Module):
    """One attention layer of RAVLT; ``attn_type`` picks RALA or softmax over the same weights.

    qkvo = Conv1x1(C -> 4C) gives q, k, v and the output gate o; a 5x5 depth-wise conv on v
    (``lepe``) adds a local branch; y = proj((attention + lepe) * o). ``forward`` computes the
    attention by one of three paths (``path``):
      * 'reference': the formulas as written (``attn_impl='reference'``);
      * 'kernel': RALA's fused Triton kernels (``ravlt_dense.ops``) where ``use_kernel``
        (``RAVLT``'s ``rala_kernel``) and they run; where no gradient is recorded they apply
        the two steps after the attention too. Gradients: PyTorch's autograd of the same math,
        or with ``kernel_backward`` (``RAVLT``'s ``rala_kernel_backward``) the backward
        kernels. A case the kernels cannot run (warned once) takes the fast path;
      * 'fast': the same math in fewer PyTorch ops (``rala_fast``, SDPA).
    In CPU inference a stage runs its blocks in bands of rows instead (``attend_all`` and
    ``output_rows`` here, ``RAVLTStage``).

    Args:
        dim (int): Channels C of the input map.
        num_heads (int): Attention heads (C must be divisible by it).
        attn_type (str): 'rala' (linear in the number of tokens) or 'softmax' (global).
        attn_impl (str): 'fast' or 'reference' (the formulas written out, for checks).
    """

    def __init__(self, dim: int, num_heads: int, attn_type: str = 'rala',
                 attn_impl: str = 'fast'):
        super().__init__()
        if attn_type not in ATTN_TYPES:
            raise ValueError(f'attn_type must be one of {ATTN_TYPES}, got {attn_type!r}')
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_type, self.attn_impl = attn_type, attn_impl
        self.use_kernel = True  # RALA's fused kernel where it applies (RAVLT's rala_kernel)
        self.kernel_backward = False  # and its backward kernels (RAVLT's rala_kernel_backward)
        self.qkvo = PointwiseConv(dim, 4 * dim)
        self.lepe = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.proj = PointwiseConv(dim, dim)

    def forward(self, x: torch.Tensor, rope: RoPE) -> torch.Tensor:
        qkvo = self.qkvo(x)
        lepe = self.lepe(qkvo[:, 2 * self.dim:3 * self.dim])
        path = self.path(qkvo)
        if path == 'reference':
            mixed = self._reference(qkvo, lepe, rope)
        elif path == 'kernel':
            mixed = self._kernel(qkvo, lepe, rope)
        else:
            mixed = self._fast(qkvo, lepe, rope)
        return self.proj(mixed)

    def path(self, x: torch.Tensor) -> str:
        """'reference', 'kernel' or 'fast': how ``forward`` computes the attention of ``x``
        (a map on the attention's device; its ``requires_grad`` tells whether gradients are
        recorded). The kernels are left out of the ONNX and TorchScript exports (plain ops
        there) and of compiled training graphs without ``kernel_backward`` (the compiler
        derives the PyTorch ops' backward); ``torch.export`` keeps them (inference programs).
        """
        if self.attn_impl == 'reference':
            return 'reference'
        if not (self.attn_type == 'rala' and self.use_kernel and ops.rala_kernel_applies(x)):
            return 'fast'
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return 'fast'
        if (torch.compiler.is_compiling() and self._records_grad(x)
                and not (self.kernel_backward or torch.compiler.is_exporting())):
            return 'fast'
        return 'kernel'

    def _reference(self, qkvo: torch.Tensor, lepe: torch.Tensor, rope: RoPE) -> torch.Tensor:
        """(attention + lepe) * o by the paper's formulas, token-major tensors."""
        B, _, H, W = qkvo.shape
        q, k, v, o = qkvo.chunk(4, dim=1)
        # (B, C, H, W) -> (B, heads, N, d); channels are head-major (c = head * d + i)
        q, k, v = (t.reshape(B, self.num_heads, self.head_dim, H * W).transpose(-1, -2)
                   for t in (q, k, v))
        attend = rala_reference if self.attn_type == 'rala' else softmax_attention_reference
        out = attend(q, k, v, *rope(H, W), self.scale)
        return (self._merge_heads(out, H, W) + lepe) * o

    def _fast(self, qkvo: torch.Tensor, lepe: torch.Tensor, rope: RoPE) -> torch.Tensor:
        """(attention + lepe) * o in PyTorch ops: RALA as ``rala_fast``, softmax through SDPA,
        on head views of the map (no copies of a channels-last one)."""
        height, width = qkvo.shape[-2:]
        q, k, v, o = qkvo.chunk(4, dim=1)
        if self.attn_type == 'rala':
            out = rala_fast(*map(self._split_heads, (q, k, v)), rope.rotary(height, width),
                            self.scale)
        else:
            # q and k are adjacent channels of the qkvo map: one rotation (one cast to fp32 and
            # back) for both, as 2 x heads heads
            qk = rope.rotary(height, width)(
                self._split_heads(qkvo[:, :2 * self.dim], 2 * self.num_heads))
            out = F.scaled_dot_product_attention(*qk.chunk(2, dim=1), self._split_heads(v))
        return self._gated(out, lepe, o)

    def _kernel(self, qkvo: torch.Tensor, lepe: torch.Tensor, rope: RoPE) -> torch.Tensor:
        """(RALA + lepe) * o through the fused kernels: where no gradient is recorded (eager),
        their epilogue writes it into ``lepe``; otherwise ``ops.rala`` gives RALA. The fast
        path where the kernels cannot run for this case (``ops.KernelUnavailable``)."""
        height, width = qkvo.shape[-2:]
        q, k, v, o = map(self._split_heads, qkvo.chunk(4, dim=1))
        try:
            if torch.compiler.is_compiling():  # the rotation from the angle buffer, in the graph
                out = ops.rala_triton(q, k, v, ops.rope_table(*rope(height, width)), self.scale)
            elif self._records_grad(qkvo):
                out = ops.rala(q, k, v, rope.cached(height, width), self.scale,
                               backward_kernels=self.kernel_backward)
            else:
                ops.rala_triton(q, k, v, rope.cached(height, width), self.scale,
                                lepe=self._split_heads(lepe), gate=o)
                return lepe
        except ops.KernelUnavailable:
            return self._fast(qkvo, lepe, rope)
        return self._gated(out, lepe, qkvo[:, 3 * self.dim:])

    def _gated(self, out: torch.Tensor, lepe: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """(lepe + out) * o as a map, ``out`` (B, heads, N, d): added into lepe through its
        token-major view (a conv's fresh output, which its backward does not read: neither
        ``out`` nor a sum gets a copy), or while traced out of place (exporters that trace do
        not follow writes through views)."""
        if is_tracing():
            return (lepe + self._merge_heads(out, *lepe.shape[-2:])) * o
        self._split_heads(lepe).add_(out)
        return lepe.mul_(o)

    @staticmethod
    def _records_grad(x: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and x.requires_grad

    def attend_all(self, qkvo: torch.Tensor,
                   rope: RoPE) -> Callable[[slice], torch.Tensor]:
        """The attention over every token of the qkvo map (1, 4C, H, W) of one image, for
        ``output_rows``: a function that gives its (1, heads, n, d) output at a range of
        tokens. Overwrites q and k in ``qkvo`` (v and o stay as they are, for ``output_rows``).

        RALA: phi(q) and phi(k) in place; the KV buffer RoPE(phi(k))^T (alpha v) summed as
        (RoPE(phi(k)) alpha)^T v, and q turned into RoPE(phi(q)) z, so that a token's output
        is one product with the buffer. Softmax: RoPE on q and k in place, its output whole.
        """
        channels, (height, width) = self.dim, qkvo.shape[-2:]
        rotation = rope.cached(height, width)
        if self.attn_type == 'softmax':
            qk = self._split_heads(qkvo[:, :2 * channels], 2 * self.num_heads)
            torch.view_as_complex(qk.unflatten(-1, (-1, 2))).mul_(rotation)
            out = F.scaled_dot_product_attention(
                *map(self._split_heads, qkvo[:, :3 * channels].chunk(3, dim=1)))
            return lambda tokens: out[:, :, tokens]
        F.elu(qkvo[:, :2 * channels], inplace=True).add_(1)
        q, k, v = map(self._split_heads, qkvo[:, :3 * channels].chunk(3, dim=1))
        alpha = torch.softmax(self.scale * q.mean(dim=-2, keepdim=True) @ k.transpose(-1, -2),
                              dim=-1)  # (1, h, 1, N)
        z = torch.reciprocal_((q @ (alpha @ k).transpose(-1, -2)).add_(1e-6))  # (1, h, N, 1)
        for x in (q, k):
            torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(rotation)
        kv = k.mul_(alpha.transpose(-1, -2)).transpose(-1, -2) @ v  # (1, h, d, d)
        q.mul_(z)
        return lambda tokens: q[:, :, tokens] @ kv

    def output_rows(self, qkvo: torch.Tensor, attention: Callable[[slice], torch.Tensor],
                    first: int, end: int) -> torch.Tensor:
        """proj((attention + lepe) * o) at rows first..end of the qkvo map that ``attend_all``
        made ``attention`` from: (1, C, end - first, W)."""
        channels, width = self.dim, qkvo.shape[-1]
        lepe = conv_rows(self.lepe, qkvo[:, 2 * channels:3 * channels], first, end)
        self._split_heads(lepe).add_(attention(slice(first * width, end * width)))
        return self.proj(lepe.mul_(qkvo[:, 3 * channels:, first:end]))

    def _split_heads(self, x: torch.Tensor, num_heads: Optional[int] = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, heads, N, d) as a view; contiguous per head for channels-last."""
        return x.flatten(2).transpose(1, 2).unflatten(
            -1, (num_heads or self.num_heads, -1)).transpose(1, 2)

    @staticmethod
    def _merge_heads(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, heads, N, d) -> (B, C, H, W), the inverse of ``_split_heads``."""
        return x.transpose(1, 2).flatten(2).transpose(1, 2).unflatten(-1, (height, width))


# --------------------------------------------------------------------------------------------
# Block and stage
# --------------------------------------------------------------------------------------------
def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (kept samples rescaled by 1 / keep_prob)."""
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with ``drop_prob``.

    Args:
        drop_prob (float): Probability of dropping the branch in training.
    """

    def __init__(self, drop_prob: float = 0.):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f'drop_prob={self.drop_prob:.3f}'


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (wraps ``norm`` to keep the release's keys).

    Args:
        dim (int): Channels.
        eps (float): The release's 1e-6.
        keep_half (bool): Under CUDA autocast, normalise a half-precision map in its own dtype
            (the kernel keeps its statistics in fp32) instead of autocast's fp32 round trip
            (cast in, fp32 norm, cast out: 16 instead of 4 bytes moved per element). For the
            norms inside the blocks, whose output feeds a half-precision conv anyway; the
            backbone's output norms keep their fp32 outputs.
    """

    def __init__(self, dim: int, eps: float = 1e-6, keep_half: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.keep_half = keep_half

    def forward(self, x):
        if torch.compiler.is_compiling():
            # The same normalisation written over dim 1: torch 2.13's inductor fails to lower
            # layer_norm of the permuted map behind a strided conv under dynamic shapes
            # (ValueRangeError); this form lowers, and fuses as well.
            mean = x.mean(dim=1, keepdim=True)
            centred = x - mean
            var = centred.square().mean(dim=1, keepdim=True)
            return torch.addcmul(self.norm.bias[:, None, None], centred * torch.rsqrt(
                var + self.norm.eps), self.norm.weight[:, None, None])
        x = x.permute(0, 2, 3, 1)
        norm = self.norm
        if (self.keep_half and x.dtype in (torch.float16, torch.bfloat16) and cuda_forms(x)
                and torch.is_autocast_enabled(x.device.type)):
            # CUDA's layer_norm wants its weights in the input's dtype
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x, norm.normalized_shape, norm.weight.to(x.dtype),
                                    norm.bias.to(x.dtype), norm.eps).permute(0, 3, 1, 2)
        return norm(x).permute(0, 3, 1, 2)


class ConvFFN(nn.Module):
    """1x1 expand, GELU, residual 3x3 depth-wise conv, 1x1 project.

    Args:
        dim (int): Input and output channels.
        hidden_dim (int): Expanded channels (dim x mlp_ratio, 3.5 in every variant).
    """

    release_order = ('fc1', 'act', 'fc2', 'dwconv')  # the release's registration order

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = PointwiseConv(dim, hidden_dim)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.fc2 = PointwiseConv(hidden_dim, dim)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        x = self.act(self.fc1(x))
        if inplace and cuda_forms(x):
            # cuDNN would add the depth-wise conv's bias in a pass of its own (PointwiseConv);
            # fc2 is linear, so it goes into fc2's bias instead (a matrix-vector product):
            # fc2(x + dw(x) + b) = fc2(x + dw(x)) + W2 b.
            dw = self.dwconv
            hidden = F.conv2d(x, dw.weight, None, dw.stride, dw.padding, dw.dilation, dw.groups)
            return self.fc2(hidden.add_(x), bias=self._fc2_bias_with_dwconv_bias())
        if inplace:  # the sum lands in the conv's fresh output (conv backward never reads it)
            return self.fc2(self.dwconv(x).add_(x))
        return self.fc2(x + self.dwconv(x))

    def _fc2_bias_with_dwconv_bias(self) -> torch.Tensor:
        """b2 + W2 b_dw, in fp32 (autocast would take the product to half precision)."""
        with torch.autocast(self.fc2.weight.device.type, enabled=False):
            return torch.addmv(self.fc2.bias, self.fc2.weight.flatten(1), self.dwconv.bias)


class RAVLTBlock(nn.Module):
    """Conditional position encoding, then pre-norm attention and FFN with layer scale.

    Args:
        dim (int): Channels.
        num_heads (int): Attention heads.
        mlp_ratio (float): FFN expansion.
        attn_type (str): 'rala' or 'softmax'.
        drop_path_rate (float): Stochastic depth of both residual branches.
        layer_scale_init (float): Initial value of gamma_1 and gamma_2.
        attn_impl (str): 'fast' or 'reference'.
    """

    # The release registers the position encoding last (initialisation visits it last)
    release_order = ('norm1', 'attn', 'drop_path', 'norm2', 'ffn', 'pos')

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attn_type: str,
                 drop_path_rate: float = 0., layer_scale_init: float = 1.0,
                 attn_impl: str = 'fast'):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim, keep_half=True)
        self.attn = RALAttention(dim, num_heads, attn_type, attn_impl)
        self.norm2 = LayerNorm2d(dim, keep_half=True)
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path_rate)
        self.gamma_1 = nn.Parameter(layer_scale_init * torch.ones(1, dim, 1, 1))
        self.gamma_2 = nn.Parameter(layer_scale_init * torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor, rope: RoPE) -> torch.Tensor:
        if self.attn.attn_impl == 'reference' or is_tracing():
            x = x + self.pos(x)
            x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x), rope))
            x = x + self.drop_path(self.gamma_2 * self.ffn(self.norm2(x)))
            return x
        # The same sums, each added into a tensor made just before (whose creator's backward
        # does not read it): a fresh large tensor costs page faults on CPU.
        x = self.pos(x).add_(x)
        x = self._add_scaled(x, self.gamma_1, self.attn(self.norm1(x), rope))
        return self._add_scaled(x, self.gamma_2, self.ffn(self.norm2(x), inplace=True))

    def forward_into(self, x: torch.Tensor, mid: torch.Tensor, out: torch.Tensor,
                     qkvo: torch.Tensor, rope: RoPE) -> torch.Tensor:
        """``out`` = block(``x``) for one image (1, C, H, W), channels-last, band by band in
        the stage's buffers: ``mid`` (the stream after the position encoding and attention)
        and ``qkvo`` (1, 4C, H, W). ``out`` may be ``x``. No gradient (``runs_in_bands``)."""
        attn, ffn = self.attn, self.ffn
        height, width = x.shape[-2:]
        for first, end in row_bands(height, band_rows(width, 4 * attn.dim)):
            rows = mid[:, :, first:end]
            torch.add(conv_rows(self.pos, x, first, end), x[:, :, first:end], out=rows)
            qkvo[:, :, first:end] = attn.qkvo(self.norm1(rows))
        attention = attn.attend_all(qkvo, rope)
        for first, end in row_bands(height, band_rows(width, attn.dim, reach=2)):
            mid[:, :, first:end].addcmul_(self.gamma_1,
                                          attn.output_rows(qkvo, attention, first, end))
        # The FFN's depth-wise conv reads its hidden map one row beyond the band on either
        # side: those rows are computed for both bands they border. Its residual sum
        # h + dw(h) is the conv whose centre taps are one larger: one pass over h, not two.
        dw = ffn.dwconv
        centre = dw.padding
        weight = dw.weight.clone()
        weight[:, :, centre[0], centre[1]] += 1
        for first, end in row_bands(height, band_rows(width, ffn.fc1.out_channels, reach=1)):
            top, bottom = max(first - 1, 0), min(end + 1, height)
            hidden = torch._C._nn.gelu_(ffn.fc1(self.norm2(mid[:, :, top:bottom])))
            mixed = F.conv2d(hidden, weight, dw.bias, padding=dw.padding, groups=dw.groups)
            torch.addcmul(mid[:, :, first:end], self.gamma_2,
                          ffn.fc2(mixed[:, :, first - top:end - top]), out=out[:, :, first:end])
        return out

    def _add_scaled(self, x: torch.Tensor, gamma: torch.Tensor,
                    branch: torch.Tensor) -> torch.Tensor:
        """x + drop_path(gamma * branch), the layer scale in the branch's dtype: an fp32 gamma
        times a half-precision branch would turn the residual stream fp32 under autocast (and
        back at the next block's depth-wise conv). One pass where no path is dropped."""
        gamma = gamma.to(branch.dtype)
        if self.training and self.drop_path.drop_prob > 0:
            return self.drop_path(gamma * branch).add_(x)
        return torch.addcmul(x, gamma, branch)


class Downsample(nn.Module):
    """Conv3x3 stride 2 + BN between stages.

    Args:
        in_dim (int): Channels of the stage before.
        out_dim (int): Channels of the stage after.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x):
        x = self.reduction(x)
        # inference on the CPU: the norm in place
        return batch_norm_(self.norm, x) if runs_in_bands(x, self) else self.norm(x)


class RAVLTStage(nn.Module):
    """Blocks sharing one RoPE, then (except in the last stage) the downsampling.

    Returns the stage's feature map (for the dense outputs) and the input of the next stage.

    Args:
        dim (int): Channels.
        depth (int): Blocks.
        num_heads (int): Attention heads.
        mlp_ratio (float): FFN expansion.
        attn_type (str): 'rala' or 'softmax', for every block of the stage.
        drop_path_rates (Sequence[float]): One stochastic depth rate per block.
        layer_scale_init (float): Initial layer-scale value of the stage.
        out_dim (int, optional): Channels of the next stage; None: no downsampling (last stage).
        attn_impl (str): 'fast' or 'reference'.
        with_cp (bool): Activation checkpointing per block.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, attn_type: str,
                 drop_path_rates: Sequence[float], layer_scale_init: float,
                 out_dim: Optional[int] = None, attn_impl: str = 'fast', with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.RoPE = RoPE(dim // num_heads)  # attribute name as in the release's checkpoints
        self.blocks = nn.ModuleList([
            RAVLTBlock(dim, num_heads, mlp_ratio, attn_type, drop_path_rates[i],
                       layer_scale_init, attn_impl) for i in range(depth)
        ])
        self.downsample = Downsample(dim, out_dim) if out_dim else None

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.blocks and runs_in_bands(x, self) and self.blocks[0].attn.path(x) == 'fast':
            x = self._blocks_in_bands(x)
        else:
            for block in self.blocks:
                if self.with_cp and x.requires_grad:
                    x = cp.checkpoint(block, x, self.RoPE, use_reentrant=False)
                else:
                    x = block(x, self.RoPE)
        return x, (self.downsample(x) if self.downsample is not None else x)

    def _blocks_in_bands(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks in inference on the CPU (``runs_in_bands``), image by image, through
        three buffers that every block reuses: the blocks' intermediates are made a band of
        rows at a time (``RAVLTBlock.forward_into``)."""
        x = x.contiguous(memory_format=torch.channels_last)
        out = torch.empty_like(x)
        mid = torch.empty((1, ) + x.shape[1:], dtype=x.dtype, memory_format=torch.channels_last)
        qkvo = torch.empty((1, 4 * x.shape[1]) + x.shape[2:], dtype=x.dtype,
                           memory_format=torch.channels_last)
        for i in range(x.shape[0]):
            image, result = x[i:i + 1], out[i:i + 1]
            for block in self.blocks:
                image = block.forward_into(image, mid, result, qkvo, self.RoPE)
        return out


class ConvStem(nn.Module):
    """Stride-4 stem: four 3x3 convs (stride 2, 1, 1, 2) with BN, GELU after the first three.

    Args:
        in_channels (int): Image channels.
        dim (int): Channels of the first stage (the convs before the last have dim / 2).
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        half = dim // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, 2, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, dim, 3, 2, 1), nn.BatchNorm2d(dim))

    def forward(self, x):
        if not runs_in_bands(x, self):
            return self.proj(x)
        for layer in self.proj:  # inference on the CPU: the norms and GELUs in place
            if isinstance(layer, _BatchNorm) and not layer.training and layer.affine:
                x = batch_norm_(layer, x)
            elif isinstance(layer, nn.GELU) and layer.approximate == 'none':
                x = torch._C._nn.gelu_(x)
            else:
                x = layer(x)
        return x


# --------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------
def modules_in_release_order(module: nn.Module):
    """``module``'s submodules in the order ``module.apply`` visits them (each one's children,
    then itself) had they been registered as in the authors' release: a class's
    ``release_order`` names its children in that order where ours differs (the blocks, the
    FFN). The order decides which weights the random stream of an initialisation fills first.
    """
    names = getattr(module, 'release_order', None)
    children = [getattr(module, name) for name in names] if names else module.children()
    for child in children:
        yield from modules_in_release_order(child)
    yield module


@MODELS.register_module()
class RAVLT(BaseModule):
    """RAVLT backbone with four multi-scale outputs (strides 4, 8, 16, 32).

    Args:
        arch (str | dict): 't'/'tiny', 's'/'small', 'b'/'base', 'l'/'large', or a dict with keys
            embed_dims, depths, num_heads, mlp_ratio, layer_scale_init (and optionally
            drop_path_rate). Defaults to 's'.
        in_channels (int): Input channels. Defaults to 3.
        attn_types (Sequence[str]): 'rala' or 'softmax' per stage. Defaults to the release's
            ('rala', 'rala', 'softmax', 'softmax'); all-RALA makes the model linear in pixels.
        drop_path_rate (float, optional): Stochastic depth rate; ``None`` takes the variant's.
        out_indices (Sequence[int]): Stages whose (normed) outputs are returned.
        frozen_stages (int): Stem plus the first ``frozen_stages`` stages are frozen (no grad,
            eval mode); -1 freezes nothing.
        norm_eval (bool): Keep BatchNorm layers in eval mode while training. Defaults to True.
        with_cp (bool): Activation checkpointing per block (saves memory, costs a re-forward).
        attn_impl (str): 'fast' (default) or 'reference' (the formulas as written, for checks).
        rala_kernel (bool): Let the fast path run RALA's forward through the fused Triton
            kernels (``ravlt_dense.ops``) on CUDA GPUs of compute capability 8.0 or newer where
            triton is installed, in inference and in training (where PyTorch's autograd gives
            the gradients, from a recomputation in the backward, unless
            ``rala_kernel_backward``). Checked against the PyTorch ops on an NVIDIA H200.
            Defaults to True.
        rala_kernel_backward (bool): In training, compute RALA's gradients in the fused
            Triton backward kernels too (where ``rala_kernel`` runs the forward; compiled
            training graphs keep the kernels only with it). These have run only in Triton's
            interpreter (CPU) and been compiled for sm_80 / sm_90, never on a GPU: opt in to
            try them. Defaults to False.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)`` loads the
            authors' ImageNet checkpoints or ours, strictly, reporting any key that does not fit.
            ``None`` (default, training from scratch): the release's initialisation
            (``init_from_scratch``: convs truncated normal with std 0.02 and zero bias,
            LayerNorms 1 and 0). Other ``init_cfg`` s go to mmengine's initialisers.
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(
            embed_dims=[64, 128, 256, 512], depths=[2, 2, 6, 2], num_heads=[1, 2, 4, 8],
            mlp_ratio=3.5, layer_scale_init=[1., 1., 1., 1.], drop_path_rate=0.1)),
        **dict.fromkeys(['s', 'small'], dict(
            embed_dims=[64, 128, 320, 512], depths=[3, 5, 9, 3], num_heads=[1, 2, 5, 8],
            mlp_ratio=3.5, layer_scale_init=[1., 1., 1., 1.], drop_path_rate=0.15)),
        **dict.fromkeys(['b', 'base', 'm'], dict(
            embed_dims=[96, 192, 384, 512], depths=[4, 6, 12, 6], num_heads=[1, 2, 6, 8],
            mlp_ratio=3.5, layer_scale_init=[1., 1., 1e-6, 1e-6], drop_path_rate=0.4)),
        **dict.fromkeys(['l', 'large'], dict(
            embed_dims=[96, 192, 448, 640], depths=[4, 7, 19, 8], num_heads=[1, 2, 7, 10],
            mlp_ratio=3.5, layer_scale_init=[1e-6] * 4, drop_path_rate=0.55)),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratio', 'layer_scale_init')
    num_stages = 4

    def __init__(self,
                 arch: Union[str, Dict] = 's',
                 in_channels: int = 3,
                 attn_types: Sequence[str] = ('rala', 'rala', 'softmax', 'softmax'),
                 drop_path_rate: Optional[float] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = True,
                 with_cp: bool = False,
                 attn_impl: str = 'fast',
                 rala_kernel: bool = True,
                 rala_kernel_backward: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        arch = self._resolve_arch(arch)
        dims, depths = arch['embed_dims'], arch['depths']
        if drop_path_rate is None:
            drop_path_rate = arch.get('drop_path_rate', 0.)
        attn_types = tuple(attn_types)
        if len(attn_types) != self.num_stages or any(t not in ATTN_TYPES for t in attn_types):
            raise ValueError(f'attn_types must give one of {ATTN_TYPES} for each of the '
                             f'{self.num_stages} stages, got {attn_types}')
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < self.num_stages for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of 0..{self.num_stages - 1}'
                             f', got {out_indices}')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in -1..{self.num_stages}, got {frozen_stages}')
        self.arch = arch
        self.embed_dims, self.attn_types = dims, attn_types
        self.out_indices, self.frozen_stages = out_indices, frozen_stages
        self.norm_eval, self.with_cp = norm_eval, with_cp

        self.patch_embed = ConvStem(in_channels, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(self.num_stages):
            start = sum(depths[:i])
            self.layers.append(RAVLTStage(
                dims[i], depths[i], arch['num_heads'][i], arch['mlp_ratio'], attn_types[i],
                rates[start:start + depths[i]], arch['layer_scale_init'][i],
                out_dim=dims[i + 1] if i + 1 < self.num_stages else None,
                attn_impl=attn_impl, with_cp=with_cp))
        # Stages that are not returned get no output norm (their weights would go unused).
        self.extra_norms = nn.ModuleList(
            LayerNorm2d(dims[i]) if i in out_indices else nn.Identity()
            for i in range(self.num_stages))
        self.set_rala_kernel(rala_kernel, backward=rala_kernel_backward)
        self._freeze_stages()

    @classmethod
    def _resolve_arch(cls, arch: Union[str, Dict]) -> Dict:
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ValueError(f'Unknown RAVLT arch {arch!r}; choose one of '
                                 f'{sorted(cls.arch_zoo)} or pass a dict with {cls.arch_keys}')
            return dict(cls.arch_zoo[arch.lower()])
        missing = set(cls.arch_keys) - set(arch)
        if missing:
            raise ValueError(f'Custom RAVLT arch is missing {sorted(missing)}; it needs '
                             f'{cls.arch_keys}')
        arch = dict(arch)
        for key in ('embed_dims', 'depths', 'num_heads', 'layer_scale_init'):
            if len(arch[key]) != cls.num_stages:
                raise ValueError(f'arch[{key!r}] needs {cls.num_stages} values, got {arch[key]}')
        return arch

    @property
    def attn_impl(self) -> str:
        return self.layers[0].blocks[0].attn.attn_impl

    def set_attn_impl(self, attn_impl: str) -> 'RAVLT':
        """Switch every attention between 'fast' and 'reference' (same weights)."""
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
        for m in self.modules():
            if isinstance(m, RALAttention):
                m.attn_impl = attn_impl
        return self

    def set_rala_kernel(self, enabled: bool, backward: Optional[bool] = None) -> 'RAVLT':
        """Allow (True) or forbid (False) the fused RALA kernels in the fast path, as
        ``rala_kernel`` does; ``backward`` sets ``rala_kernel_backward`` (None: unchanged)."""
        for m in self.modules():
            if isinstance(m, RALAttention):
                m.use_kernel = bool(enabled)
                if backward is not None:
                    m.kernel_backward = bool(backward)
        return self

    def init_weights(self):
        """``init_cfg=None``: the release's initialisation (``init_from_scratch``);
        ``Pretrained``: the checkpoint, which gives every weight; any other ``init_cfg``:
        mmengine's initialisers."""
        if self.init_cfg is None:
            self.init_from_scratch()
            self._is_init = True
        elif isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            load_backbone_checkpoint(self, self.init_cfg['checkpoint'],
                                     prefix=self.init_cfg.get('prefix'))
            self._is_init = True
        else:
            super().init_weights()

    def init_from_scratch(self) -> 'RAVLT':
        """The authors' initialisation of their dense backbone without pretrained weights.

        The release fills its layers in two passes over the modules, in the order ``apply``
        visits them (``modules_in_release_order``: its registration order), which this repeats:
          1. (in the release's ``__init__``) every ``nn.Conv2d`` (the 1x1 ``PointwiseConv`` s
             too): weight ``trunc_normal_(std=.02)``, bias 0; every ``nn.LayerNorm``: weight 1,
             bias 0;
          2. (its ``init_weights(pretrained=None)``) every ``nn.Linear`` (RAVLT has none):
             weight ``trunc_normal_(std=.02)``, bias 0; every ``nn.LayerNorm``: weight 1,
             bias 0.
        ``trunc_normal_`` is timm's, which the release imports: its bounds are absolute
        (-2, 2), i.e. 100 std, a plain normal in practice, drawn as the inverse normal CDF of
        one uniform value each; mmengine's ``trunc_normal_init`` draws the same (torch 2.13's
        ``nn.init.trunc_normal_`` does not). BatchNorm (PyTorch's weight 1, bias 0), the layer
        scales (``layer_scale_init``) and the RoPE angles are left as they are: the release
        sets none of them here.

        The release runs pass 1 while it builds the backbone; here ``init_weights()`` runs it
        (mmengine's convention: the runner calls it). A backbone built and initialised right
        after seeding gets the release's weights bit for bit (inside a detector the modules
        built in between draw from the random stream first).
        """
        for linear_pass in (False, True):
            for m in modules_in_release_order(self):
                if isinstance(m, nn.Linear if linear_pass else nn.Conv2d):
                    trunc_normal_init(m, std=.02, bias=0.)
                elif isinstance(m, nn.LayerNorm):
                    constant_init(m, 1., bias=0.)
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'RAVLT expects a B x C x H x W tensor, got shape {tuple(x.shape)}')
        # (jit.trace records sizes as tensors: the check would be frozen into the trace)
        if not torch.jit.is_tracing() and min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f'RAVLT needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} '
                             f'pixels, got {x.shape[-2]}x{x.shape[-1]}; resize or pad the input')
        if self.attn_impl == 'fast':
            # Channels-last keeps each head's q, k, v contiguous, so the attention's head split
            # is a view that SDPA and the matmuls read without a copy (convs measured the same
            # in both layouts on CPU).
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            feat, x = stage(x)
            if i in self.out_indices:
                outs.append(self.extra_norms[i](feat).contiguous())
        return tuple(outs)

    def _freeze_stages(self):
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        for i in range(self.frozen_stages):
            frozen += [self.layers[i], self.extra_norms[i]]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'RAVLT':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
