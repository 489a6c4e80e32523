"""RALA's inference forward as three Triton kernels (the math of ``rala_fast``, fewer passes).

For each (image, head) with n tokens of d channels, phi(x) = elu(x) + 1 and R the stage's 2-D
RoPE, RALA is

    alpha = softmax_n(scale * mean_n(phi(q)) . phi(k_n))
    kv    = sum_n R(phi(k_n))^T (alpha_n v_n)           (d x d)
    z_n   = 1 / (phi(q_n) . sum_m alpha_m phi(k_m) + 1e-6)
    out_n = (R(phi(q_n)) kv) z_n

The PyTorch path spends a kernel (and a fp32 copy of the map) on every step of it. Here:

1. ``_query_sum_kernel`` sums phi(q) over the tokens (partial sums per chunk of tokens);
2. ``_key_value_kernel`` reads k and v once: the softmax over all tokens is accumulated online
   (running max, rescaled sums, as flash attention does) into kv and sum alpha phi(k), again
   per chunk; the chunks are merged with their max-rescaled weights in PyTorch (tiny tensors);
3. ``_output_kernel`` reads q again and writes the output.

Everything is computed in fp32 whatever the input dtype (as ``rala_fast``: the normaliser and
the sums over all tokens overflow or lose precision in half precision). The d x d products run
on tensor cores in TF32 for half inputs (fp32 accumulation; far inside the autocast tolerance)
and in full fp32 for fp32 inputs. RoPE reads the cos / sin of each token from the stage's cached
rotation (``RoPE.cached``, the numbers the PyTorch path multiplies by), so any H x W works and
the release's checkpoints apply unchanged. q, k and v are read through their strides: the
channels-last head views of ``RALAttention`` need no copy. Optionally the output kernel also
applies the attention's next two steps, (lepe + RALA) * gate, where the PyTorch path spends two
more passes over the map (the second reading the gate, a channel slice of the qkvo map, strided).

Token counts are not specialised on (one compiled variant serves every image size; triton
would otherwise compile again for counts that are and are not multiples of 16). Only the
forward: training keeps the PyTorch path (autograd). ``TRITON_INTERPRET=1`` runs the
kernels on the CPU (slowly), which is how the tests check them without a GPU.
"""
import contextlib
import math
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.compiler.errors import CompilationError
from triton.runtime.errors import OutOfResources

# what a GPU the kernels do not fit raises at their first launch (ptxas errors included where
# this triton has a class for them)
KERNEL_ERRORS = (CompilationError, OutOfResources) + tuple(
    getattr(triton.runtime.errors, name) for name in ('PTXASError', )
    if hasattr(triton.runtime.errors, name))


@triton.jit
def _phi_and_rope(base, stride_n, stride_d, offs_n, offs_d, n_tokens, rotation_ptr,
                  HEAD_DIM: tl.constexpr, ROTATE: tl.constexpr):
    """phi(x) = elu(x) + 1 of a (BLOCK_N, BLOCK_D) tile of tokens and, if ROTATE, R(phi(x)).

    Tokens past ``n_tokens`` and channels past HEAD_DIM are zero in both results.
    """
    mask = (offs_n < n_tokens)[:, None] & (offs_d < HEAD_DIM)[None, :]
    rows = base + offs_n[:, None] * stride_n
    x = tl.load(rows + offs_d[None, :] * stride_d, mask=mask, other=0.).to(tl.float32)
    phi = tl.where(mask, tl.where(x > 0, x + 1, tl.exp(x)), 0.)  # elu(x) + 1 = e^x for x <= 0
    if ROTATE:
        # RoPE turns channel pairs (2i, 2i+1) by the token's angle theta_i: rotated_c =
        # phi_c cos - phi_{c+1} sin for even c, phi_c cos + phi_{c-1} sin for odd c (partner
        # c ^ 1). cos and sin come from the cached (n_tokens, HEAD_DIM/2) complex rotation
        # of RoPE.cached, read as interleaved (cos, sin) floats.
        x_pair = tl.load(rows + (offs_d ^ 1)[None, :] * stride_d, mask=mask,
                         other=0.).to(tl.float32)
        phi_pair = tl.where(mask, tl.where(x_pair > 0, x_pair + 1, tl.exp(x_pair)), 0.)
        table = rotation_ptr + offs_n[:, None] * HEAD_DIM + (offs_d // 2 * 2)[None, :]
        cos = tl.load(table, mask=mask, other=0.)
        sin = tl.load(table + 1, mask=mask, other=0.)
        sign = tl.where(offs_d % 2 == 0, -1., 1.)
        rotated = phi * cos + sign[None, :] * phi_pair * sin
        return phi, rotated
    return phi, phi


@triton.jit(do_not_specialize=['n_tokens', 'tokens_per_chunk'])
def _query_sum_kernel(q_ptr, sum_ptr, n_tokens, tokens_per_chunk, num_heads,
                      sq_b, sq_h, sq_n, sq_d,
                      HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """sum_ptr[bh, chunk, :] = sum of phi(q) over the chunk's tokens."""
    bh, chunk = tl.program_id(0), tl.program_id(1)
    q_base = q_ptr + (bh // num_heads) * sq_b + (bh % num_heads) * sq_h
    offs_d = tl.arange(0, BLOCK_D)
    total = tl.zeros((BLOCK_D, ), dtype=tl.float32)
    start = chunk * tokens_per_chunk
    end = tl.minimum(start + tokens_per_chunk, n_tokens)
    for offset in range(0, tokens_per_chunk, BLOCK_N):
        offs_n = start + offset + tl.arange(0, BLOCK_N)
        phi, _ = _phi_and_rope(q_base, sq_n, sq_d, offs_n, offs_d, end, q_ptr, HEAD_DIM, False)
        total += tl.sum(phi, axis=0)
    num_chunks = tl.num_programs(1)
    tl.store(sum_ptr + (bh * num_chunks + chunk) * HEAD_DIM + offs_d, total,
             mask=offs_d < HEAD_DIM)


@triton.jit(do_not_specialize=['n_tokens', 'tokens_per_chunk'])
def _key_value_kernel(k_ptr, v_ptr, q_global_ptr, rotation_ptr, max_ptr, denom_ptr, ksum_ptr,
                      kv_ptr, n_tokens, tokens_per_chunk, num_heads, scale,
                      sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                      HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      PRECISION: tl.constexpr):
    """One chunk's share of the softmax over the tokens: its max logit, sum of exp(logit - max),
    sum of exp(.) phi(k) and sum of exp(.) R(phi(k))^T v."""
    bh, chunk = tl.program_id(0), tl.program_id(1)
    b, h = bh // num_heads, bh % num_heads
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q_global = tl.load(q_global_ptr + bh * HEAD_DIM + offs_d, mask=d_mask, other=0.)

    running_max = float('-inf')
    denom = 0.
    ksum = tl.zeros((BLOCK_D, ), dtype=tl.float32)
    kv = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    start = chunk * tokens_per_chunk
    end = tl.minimum(start + tokens_per_chunk, n_tokens)
    for offset in range(0, tokens_per_chunk, BLOCK_N):
        offs_n = start + offset + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        phi, rotated = _phi_and_rope(k_base, sk_n, sk_d, offs_n, offs_d, end, rotation_ptr,
                                     HEAD_DIM, True)
        logits = scale * tl.sum(phi * q_global[None, :], axis=1)
        logits = tl.where(n_mask, logits, float('-inf'))
        new_max = tl.maximum(running_max, tl.max(logits, axis=0))
        rescale = tl.exp(running_max - new_max)  # 0 on the first block (exp(-inf))
        weights = tl.exp(logits - new_max)  # 0 for padding tokens
        v = tl.load(v_base + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d,
                    mask=n_mask[:, None] & d_mask[None, :], other=0.).to(tl.float32)
        denom = denom * rescale + tl.sum(weights, axis=0)
        ksum = ksum * rescale + tl.sum(weights[:, None] * phi, axis=0)
        kv = kv * rescale + tl.dot(tl.trans(rotated), weights[:, None] * v,
                                   input_precision=PRECISION)
        running_max = new_max

    out = bh * tl.num_programs(1) + chunk
    tl.store(max_ptr + out, running_max)
    tl.store(denom_ptr + out, denom)
    tl.store(ksum_ptr + out * HEAD_DIM + offs_d, ksum, mask=d_mask)
    kv_offs = offs_d[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(kv_ptr + out * HEAD_DIM * HEAD_DIM + kv_offs, kv,
             mask=d_mask[:, None] & d_mask[None, :])


@triton.jit(do_not_specialize=['n_tokens'])
def _output_kernel(q_ptr, rotation_ptr, ksum_ptr, kv_ptr, out_ptr, lepe_ptr, gate_ptr,
                   n_tokens, num_heads, sq_b, sq_h, sq_n, sq_d, so_b, so_h, so_n, so_d,
                   sl_b, sl_h, sl_n, sl_d, sg_b, sg_h, sg_n, sg_d,
                   HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   PRECISION: tl.constexpr, GATED: tl.constexpr):
    """out_n = (R(phi(q_n)) kv) / (phi(q_n) . ksum + eps) for one block of tokens; GATED:
    out_n = (lepe_n + that) * gate_n, RALAttention's next two steps, in the same pass."""
    bh, block = tl.program_id(0), tl.program_id(1)
    b, h = bh // num_heads, bh % num_heads
    offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    mask = (offs_n < n_tokens)[:, None] & d_mask[None, :]
    phi, rotated = _phi_and_rope(q_ptr + b * sq_b + h * sq_h, sq_n, sq_d, offs_n, offs_d,
                                 n_tokens, rotation_ptr, HEAD_DIM, True)
    ksum = tl.load(ksum_ptr + bh * HEAD_DIM + offs_d, mask=d_mask, other=0.)
    kv = tl.load(kv_ptr + bh * HEAD_DIM * HEAD_DIM + offs_d[:, None] * HEAD_DIM
                 + offs_d[None, :], mask=d_mask[:, None] & d_mask[None, :], other=0.)
    z = 1. / (tl.sum(phi * ksum[None, :], axis=1) + 1e-6)  # the eps of rala_terms / rala_fast
    out = tl.dot(rotated, kv, input_precision=PRECISION) * z[:, None]
    if GATED:
        # rounded to the map's dtype first, as the PyTorch path adds the attention's output
        out = out.to(out_ptr.dtype.element_ty).to(tl.float32)
        lepe = tl.load(lepe_ptr + b * sl_b + h * sl_h + offs_n[:, None] * sl_n
                       + offs_d[None, :] * sl_d, mask=mask, other=0.).to(tl.float32)
        gate = tl.load(gate_ptr + b * sg_b + h * sg_h + offs_n[:, None] * sg_n
                       + offs_d[None, :] * sg_d, mask=mask, other=0.).to(tl.float32)
        out = (lepe + out) * gate
    out_base = out_ptr + b * so_b + h * so_h
    tl.store(out_base + offs_n[:, None] * so_n + offs_d[None, :] * so_d,
             out.to(out_ptr.dtype.element_ty), mask=mask)


def _chunking(n_tokens: int, batch_heads: int, block: int, programs: int):
    """Split the tokens into chunks (multiples of ``block``) so that about ``programs`` programs
    run in all: the sums over the tokens need parallelism beyond batch x heads."""
    chunks = max(1, min(math.ceil(programs / batch_heads), math.ceil(n_tokens / block)))
    per_chunk = math.ceil(math.ceil(n_tokens / chunks) / block) * block
    return math.ceil(n_tokens / per_chunk), per_chunk


def rala_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotation: torch.Tensor,
                scale: float, lepe: Optional[torch.Tensor] = None,
                gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """RALA forward through the kernels; the inputs and result of ``rala_fast``.

    Args:
        q, k, v (Tensor): (B, heads, N, d) in any strides and one float dtype; d divisible by 4.
        rotation (Tensor): (N, d/2) complex64 RoPE rotation of the map (``RoPE.cached``).
        scale (float): The softmax scale of the global query (head_dim ** -0.5).
        lepe, gate (Tensor, optional): (B, heads, N, d) head views of RALAttention's local
            branch and output gate. Given both, the result is (lepe + RALA) * gate, written into
            ``lepe`` (no new map; for inference: autograd does not see the kernels).

    Returns:
        Tensor: (B, heads, N, d) in q's dtype, laid out as ``RALAttention``'s head views of a
        channels-last map (so adding it into one reads both in the same order); ``lepe`` when
        gated.
    """
    batch, heads, n_tokens, head_dim = q.shape
    if head_dim % 4:
        raise ValueError(f'RALA needs a head dim divisible by 4 (2-D RoPE), got {head_dim}')
    if rotation.shape != (n_tokens, head_dim // 2) or rotation.dtype != torch.complex64:
        raise ValueError(f'rotation must be ({n_tokens}, {head_dim // 2}) complex64 (RoPE.cached '
                         f'of the map), got {tuple(rotation.shape)} {rotation.dtype}')
    if (lepe is None) != (gate is None):
        raise ValueError('lepe and gate go together: the fused epilogue computes '
                         '(lepe + RALA) * gate')
    precision = 'ieee' if q.dtype == torch.float32 else 'tf32'
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_n = 64 if block_d <= 64 else 32
    num_warps = 4 if block_d <= 64 else 8
    device = q.device
    table = torch.view_as_real(rotation.to(device)).reshape(n_tokens, head_dim)  # cos, sin, ...
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        programs = 4 * props.multi_processor_count
        # software pipelining of the key-value loop: 2 stages need ~64 kB (half) / ~99 kB (fp32)
        # of shared memory per program, which A100/H100-class GPUs have room for
        stages = 2 if getattr(props, 'shared_memory_per_multiprocessor', 0) >= 160 * 1024 else 1
    else:
        programs, stages = 4, 1
    chunks, per_chunk = _chunking(n_tokens, batch * heads, block_n, programs)
    with torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext():
        return _launch(q, k, v, table, scale, lepe, gate, chunks, per_chunk, block_n, block_d,
                       num_warps, stages, precision)


def _launch(q, k, v, table, scale, lepe, gate, chunks, per_chunk, block_n, block_d, num_warps,
            stages, precision):
    """The three kernels and the merge of the chunks, on the current device (q's)."""
    batch, heads, n_tokens, head_dim = q.shape
    batch_heads = batch * heads

    partial = q.new_empty((batch_heads, chunks, head_dim), dtype=torch.float32)
    _query_sum_kernel[(batch_heads, chunks)](
        q, partial, n_tokens, per_chunk, heads, *q.stride(),
        HEAD_DIM=head_dim, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps)
    q_global = (partial.sum(dim=1) / n_tokens).contiguous()

    maxes = q.new_empty((batch_heads, chunks), dtype=torch.float32)
    denoms = torch.empty_like(maxes)
    ksums = torch.empty_like(partial)
    kvs = q.new_empty((batch_heads, chunks, head_dim, head_dim), dtype=torch.float32)
    _key_value_kernel[(batch_heads, chunks)](
        k, v, q_global, table, maxes, denoms, ksums, kvs, n_tokens, per_chunk, heads,
        scale, *k.stride(), *v.stride(),
        HEAD_DIM=head_dim, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=precision,
        num_warps=num_warps, num_stages=stages)
    # merge the chunks: each chunk's sums were taken relative to its own max logit
    weights = torch.exp(maxes - maxes.amax(dim=1, keepdim=True))
    denom = (weights * denoms).sum(dim=1)
    ksum = ((weights[..., None] * ksums).sum(dim=1) / denom[:, None]).contiguous()
    kv = ((weights[..., None, None] * kvs).sum(dim=1) / denom[:, None, None]).contiguous()

    if lepe is None:
        # (B, H*W, heads, d) memory, seen as (B, heads, H*W, d): the layout of the head views
        out = q.new_empty((batch, n_tokens, heads, head_dim)).transpose(1, 2)
        lepe = gate = out  # not read (GATED=False)
    else:
        out = lepe
    _output_kernel[(batch_heads, triton.cdiv(n_tokens, block_n))](
        q, table, ksum, kv, out, lepe, gate, n_tokens, heads, *q.stride(), *out.stride(),
        *lepe.stride(), *gate.stride(),
        HEAD_DIM=head_dim, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=precision,
        GATED=gate is not out, num_warps=num_warps)
    return out
