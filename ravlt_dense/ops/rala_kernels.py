"""RALA's forward and backward as Triton kernels (the math of ``rala_fast``, fewer passes).

For each (image, head) with n tokens of d channels, phi(x) = elu(x) + 1 and R the stage's 2-D
RoPE, RALA is

    alpha = softmax_n(scale * mean_n(phi(q)) . phi(k_n))
    kv    = sum_n R(phi(k_n))^T (alpha_n v_n)           (d x d)
    z_n   = 1 / (phi(q_n) . sum_m alpha_m phi(k_m) + 1e-6)
    out_n = (R(phi(q_n)) kv) z_n

The PyTorch path spends a kernel (and a fp32 copy of the map) on every step of it. Here the
forward is three passes over the tokens:

1. ``_query_sum_kernel`` sums phi(q) over the tokens (partial sums per chunk of tokens);
2. ``_key_value_kernel`` reads k and v once: the softmax over all tokens is accumulated online
   (running max, rescaled sums, as flash attention does) into kv and sum alpha phi(k), again
   per chunk; the chunks are merged with their max-rescaled weights in PyTorch (tiny tensors);
3. ``_output_kernel`` reads q again and writes the output.

The backward (derivation above ``_grad_sums_kernel``) is three more: q and dout, then k and v
(writing dk, dv), then q and dout again (writing dq). The forward keeps only per-head tensors
for it (global query, kv, sum alpha phi(k), the softmax's max and denominator); phi, R and
alpha of each token are recomputed, which costs less than storing and reading them.

Everything is computed in fp32 whatever the input dtype (as ``rala_fast``: the normaliser and
the sums over all tokens overflow or lose precision in half precision), in fp64 for fp64 inputs
(the tests' gradcheck). The d x d products run on tensor cores in TF32 for half inputs (fp32
accumulation; far inside the autocast tolerance) and in full fp32 for fp32 inputs. RoPE reads
the cos / sin of each token from the stage's rotation (``RoPE.cached`` as an (N, d) table of
interleaved cos, sin), so any H x W works and the release's checkpoints apply unchanged. Maps
are read and written through their strides: the channels-last head views of ``RALAttention``
need no copy. For inference the output kernel can also apply the attention's next two steps,
(lepe + RALA) * gate (``rala_gated_``), where the PyTorch path spends two more passes.

``ravlt::rala_forward`` and ``ravlt::rala_backward`` wrap the passes as PyTorch operators
(``torch.library.triton_op``, autograd registered), so ``torch.compile`` and ``torch.export``
keep them in the graph. Token counts are not specialised on (one compiled variant serves every
image size). ``TRITON_INTERPRET=1`` runs the kernels on the CPU (slowly), which is how the
tests check them without a GPU.
"""
import contextlib
import threading
from typing import Callable, NamedTuple, Tuple

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources
from triton.runtime.interpreter import InterpretedFunction

# what a GPU the kernels do not fit raises at their first launch: too little shared memory, or
# ptxas refusing them (where this triton has a class for that). Anything else is a bug.
UNSUPPORTED_ERRORS = (OutOfResources, ) + tuple(
    getattr(triton.runtime.errors, name) for name in ('PTXASError', )
    if hasattr(triton.runtime.errors, name))


@triton.jit
def _this_program(num_heads, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (image, head) pair bh = b * num_heads + h, its chunk or block of tokens
    (the grid's second axis), and a tile's channel offsets with their mask."""
    bh = tl.program_id(0)
    offs_d = tl.arange(0, BLOCK_D)
    return bh, tl.program_id(1), bh // num_heads, bh % num_heads, offs_d, offs_d < HEAD_DIM


@triton.jit
def _load_tile(base, stride_n, stride_d, offs_n, offs_d, mask, ACC: tl.constexpr):
    """A (BLOCK_N, BLOCK_D) tile of a strided (tokens, channels) map in ACC, zero outside
    ``mask``."""
    return tl.load(base + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d, mask=mask,
                   other=0.).to(ACC)


@triton.jit
def _store_tile(base, stride_n, stride_d, offs_n, offs_d, tile, mask):
    """Writes a tile into a strided map, rounded to the map's dtype."""
    tl.store(base + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d,
             tile.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _load_vector(ptr, row, offs_d, HEAD_DIM: tl.constexpr):
    """Row ``row`` of a contiguous (rows, HEAD_DIM) table of per-head vectors, zero-padded to
    BLOCK_D."""
    return tl.load(ptr + row * HEAD_DIM + offs_d, mask=offs_d < HEAD_DIM, other=0.)


@triton.jit
def _store_vector(ptr, row, offs_d, value, HEAD_DIM: tl.constexpr):
    tl.store(ptr + row * HEAD_DIM + offs_d, value, mask=offs_d < HEAD_DIM)


@triton.jit
def _square_pointers(ptr, row, offs_d, HEAD_DIM: tl.constexpr):
    """Pointers and mask of matrix ``row`` of a contiguous (rows, HEAD_DIM, HEAD_DIM) table."""
    d_mask = offs_d < HEAD_DIM
    matrix = ptr + row * HEAD_DIM * HEAD_DIM
    return (matrix + offs_d[:, None] * HEAD_DIM + offs_d[None, :],
            d_mask[:, None] & d_mask[None, :])


@triton.jit
def _load_square(ptr, row, offs_d, HEAD_DIM: tl.constexpr):
    """A (HEAD_DIM, HEAD_DIM) per-head matrix, zero-padded to (BLOCK_D, BLOCK_D)."""
    pointers, mask = _square_pointers(ptr, row, offs_d, HEAD_DIM)
    return tl.load(pointers, mask=mask, other=0.)


@triton.jit
def _store_square(ptr, row, offs_d, value, HEAD_DIM: tl.constexpr):
    pointers, mask = _square_pointers(ptr, row, offs_d, HEAD_DIM)
    tl.store(pointers, value, mask=mask)


@triton.jit
def _cos_sin(rotation_ptr, offs_n, offs_d, mask, HEAD_DIM: tl.constexpr, ACC: tl.constexpr):
    """cos and sin of each (token, channel) of a tile from the cached (n_tokens, HEAD_DIM/2)
    complex rotation of RoPE.cached, read as interleaved (cos, sin) floats; and the sign of the
    partner channel's term: R(x)_c = x_c cos - x_{c+1} sin (even c), x_c cos + x_{c-1} sin (odd c),
    so R(x) = x cos + sign x_pair sin and R^T(u) = u cos - sign u_pair sin."""
    table = rotation_ptr + offs_n[:, None] * HEAD_DIM + (offs_d // 2 * 2)[None, :]
    cos = tl.load(table, mask=mask, other=0.).to(ACC)
    sin = tl.load(table + 1, mask=mask, other=0.).to(ACC)
    sign = tl.where(offs_d % 2 == 0, -1., 1.).to(ACC)
    return cos, sin, sign


@triton.jit
def _phi_and_rope(base, stride_n, stride_d, offs_n, offs_d, n_tokens, rotation_ptr,
                  HEAD_DIM: tl.constexpr, ROTATE: tl.constexpr, ACC: tl.constexpr):
    """phi(x) = elu(x) + 1 of a (BLOCK_N, BLOCK_D) tile of tokens and, if ROTATE, R(phi(x)).

    Tokens past ``n_tokens`` and channels past HEAD_DIM are zero in both results.
    """
    mask = (offs_n < n_tokens)[:, None] & (offs_d < HEAD_DIM)[None, :]
    x = _load_tile(base, stride_n, stride_d, offs_n, offs_d, mask, ACC)
    phi = tl.where(mask, tl.where(x > 0, x + 1, tl.exp(x)), 0.)  # elu(x) + 1 = e^x for x <= 0
    if ROTATE:
        # RoPE turns channel pairs (2i, 2i+1) by the token's angle theta_i (partner c ^ 1)
        x_pair = _load_tile(base, stride_n, stride_d, offs_n, offs_d ^ 1, mask, ACC)
        phi_pair = tl.where(mask, tl.where(x_pair > 0, x_pair + 1, tl.exp(x_pair)), 0.)
        cos, sin, sign = _cos_sin(rotation_ptr, offs_n, offs_d, mask, HEAD_DIM, ACC)
        rotated = phi * cos + sign[None, :] * phi_pair * sin
        return phi, rotated
    return phi, phi


@triton.jit(do_not_specialize=['n_tokens', 'tokens_per_chunk'])
def _query_sum_kernel(q_ptr, sum_ptr, n_tokens, tokens_per_chunk, num_heads,
                      sq_b, sq_h, sq_n, sq_d, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_D: tl.constexpr, FP64: tl.constexpr):
    """sum_ptr[bh, chunk, :] = sum of phi(q) over the chunk's tokens."""
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    bh, chunk, b, h, offs_d, d_mask = _this_program(num_heads, HEAD_DIM, BLOCK_D)
    q_base = q_ptr + b * sq_b + h * sq_h
    total = tl.zeros((BLOCK_D, ), dtype=ACC)
    start = chunk * tokens_per_chunk
    end = tl.minimum(start + tokens_per_chunk, n_tokens)
    for offset in range(0, tokens_per_chunk, BLOCK_N):
        offs_n = start + offset + tl.arange(0, BLOCK_N)
        phi, _ = _phi_and_rope(q_base, sq_n, sq_d, offs_n, offs_d, end, q_ptr, HEAD_DIM, False,
                               ACC)
        total += tl.sum(phi, axis=0)
    _store_vector(sum_ptr, bh * tl.num_programs(1) + chunk, offs_d, total, HEAD_DIM)


@triton.jit(do_not_specialize=['n_tokens', 'tokens_per_chunk'])
def _key_value_kernel(k_ptr, v_ptr, q_global_ptr, rotation_ptr, max_ptr, denom_ptr, ksum_ptr,
                      kv_ptr, n_tokens, tokens_per_chunk, num_heads, scale,
                      sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                      HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      PRECISION: tl.constexpr, FP64: tl.constexpr):
    """One chunk's share of the softmax over the tokens: its max logit, sum of exp(logit - max),
    sum of exp(.) phi(k) and sum of exp(.) R(phi(k))^T v."""
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    bh, chunk, b, h, offs_d, d_mask = _this_program(num_heads, HEAD_DIM, BLOCK_D)
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    q_global = _load_vector(q_global_ptr, bh, offs_d, HEAD_DIM)

    running_max = tl.full((), float('-inf'), ACC)
    denom = tl.zeros((), dtype=ACC)
    ksum = tl.zeros((BLOCK_D, ), dtype=ACC)
    kv = tl.zeros((BLOCK_D, BLOCK_D), dtype=ACC)
    start = chunk * tokens_per_chunk
    end = tl.minimum(start + tokens_per_chunk, n_tokens)
    for offset in range(0, tokens_per_chunk, BLOCK_N):
        offs_n = start + offset + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        phi, rotated = _phi_and_rope(k_base, sk_n, sk_d, offs_n, offs_d, end, rotation_ptr,
                                     HEAD_DIM, True, ACC)
        logits = scale * tl.sum(phi * q_global[None, :], axis=1)
        logits = tl.where(n_mask, logits, float('-inf'))
        new_max = tl.maximum(running_max, tl.max(logits, axis=0))
        rescale = tl.exp(running_max - new_max)  # 0 on the first block (exp(-inf))
        weights = tl.exp(logits - new_max)  # 0 for padding tokens
        v = _load_tile(v_base, sv_n, sv_d, offs_n, offs_d, n_mask[:, None] & d_mask[None, :],
                       ACC)
        denom = denom * rescale + tl.sum(weights, axis=0)
        ksum = ksum * rescale + tl.sum(weights[:, None] * phi, axis=0)
        kv = kv * rescale + tl.dot(tl.trans(rotated), weights[:, None] * v,
                                   input_precision=PRECISION)
        running_max = new_max

    out = bh * tl.num_programs(1) + chunk
    tl.store(max_ptr + out, running_max)
    tl.store(denom_ptr + out, denom)
    _store_vector(ksum_ptr, out, offs_d, ksum, HEAD_DIM)
    _store_square(kv_ptr, out, offs_d, kv, HEAD_DIM)


@triton.jit(do_not_specialize=['n_tokens'])
def _output_kernel(q_ptr, rotation_ptr, ksum_ptr, kv_ptr, out_ptr, lepe_ptr, gate_ptr,
                   n_tokens, num_heads, sq_b, sq_h, sq_n, sq_d, so_b, so_h, so_n, so_d,
                   sl_b, sl_h, sl_n, sl_d, sg_b, sg_h, sg_n, sg_d,
                   HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   PRECISION: tl.constexpr, GATED: tl.constexpr, FP64: tl.constexpr):
    """out_n = (R(phi(q_n)) kv) / (phi(q_n) . ksum + eps) for one block of tokens; GATED:
    out_n = (lepe_n + that) * gate_n, RALAttention's next two steps, in the same pass."""
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    bh, block, b, h, offs_d, d_mask = _this_program(num_heads, HEAD_DIM, BLOCK_D)
    offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_n < n_tokens)[:, None] & d_mask[None, :]
    phi, rotated = _phi_and_rope(q_ptr + b * sq_b + h * sq_h, sq_n, sq_d, offs_n, offs_d,
                                 n_tokens, rotation_ptr, HEAD_DIM, True, ACC)
    ksum = _load_vector(ksum_ptr, bh, offs_d, HEAD_DIM)
    kv = _load_square(kv_ptr, bh, offs_d, HEAD_DIM)
    z = 1. / (tl.sum(phi * ksum[None, :], axis=1) + 1e-6)  # the eps of rala_terms / rala_fast
    out = tl.dot(rotated, kv, input_precision=PRECISION) * z[:, None]
    if GATED:
        # rounded to the map's dtype first, as the PyTorch path adds the attention's output
        out = out.to(out_ptr.dtype.element_ty).to(ACC)
        lepe = _load_tile(lepe_ptr + b * sl_b + h * sl_h, sl_n, sl_d, offs_n, offs_d, mask, ACC)
        gate = _load_tile(gate_ptr + b * sg_b + h * sg_h, sg_n, sg_d, offs_n, offs_d, mask, ACC)
        out = (lepe + out) * gate
    _store_tile(out_ptr + b * so_b + h * so_h, so_n, so_d, offs_n, offs_d, out, mask)


# --------------------------------------------------------------------------------------------
# Backward. With P = phi(q), K = phi(k), g = mean_n P_n, l_n = scale g.K_n, alpha = softmax(l),
# kv = sum alpha_n R(K_n)^T v_n, s = sum alpha_n K_n, z_n = 1 / (P_n.s + eps) and
# out_n = R(P_n) kv z_n, the gradients for dout are (per head, all sums over the tokens):
#   dz_n = dout_n . (R(P_n) kv),  dzinv_n = -z_n^2 dz_n
#   dkv = sum_n z_n R(P_n)^T dout_n,  ds = sum_n dzinv_n P_n              (pass 1: q, dout)
#   dalpha_n = R(K_n) dkv . v_n + K_n . ds,  c = sum_m alpha_m dalpha_m = <dkv, kv> + ds.s
#   dl_n = alpha_n (dalpha_n - c)  (softmax),  dg = scale sum_n dl_n K_n
#   dv_n = alpha_n R(K_n) dkv,  dK_n = alpha_n (R^T(dkv v_n) + ds) + scale dl_n g  (pass 2: k, v)
#   dP_n = z_n R^T(kv dout_n) + dzinv_n s + dg / N                             (pass 3: q, dout)
#   dq = dP phi'(q), dk = dK phi'(k),  phi'(x) = 1 for x > 0, e^x = phi(x) else: min(phi, 1)
# R^T needs a tile's partner channels c ^ 1: swapped in registers (split / join).
# --------------------------------------------------------------------------------------------
@triton.jit
def _rotate_back(u, cos, sin, sign, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """R^T(u) = u cos - sign u_pair sin of a (BLOCK_N, BLOCK_D) tile, u_pair its channels
    swapped in pairs (2i <-> 2i + 1) in registers."""
    even, odd = tl.split(tl.reshape(u, (BLOCK_N, BLOCK_D // 2, 2)))
    u_pair = tl.reshape(tl.join(odd, even), (BLOCK_N, BLOCK_D))
    return u * cos - sign[None, :] * u_pair * sin


@triton.jit(do_not_specialize=['n_tokens', 'tokens_per_chunk'])
def _grad_sums_kernel(q_ptr, dout_ptr, rotation_ptr, ksum_ptr, kv_ptr, dzinv_ptr, dkv_ptr,
                      dksum_ptr, n_tokens, tokens_per_chunk, num_heads,
                      sq_b, sq_h, sq_n, sq_d, sd_b, sd_h, sd_n, sd_d,
                      HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      PRECISION: tl.constexpr, FP64: tl.constexpr):
    """Pass 1 of the backward, one chunk of tokens: its share of dkv and ds, and dzinv_n of
    each token (kept for pass 3)."""
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    bh, chunk, b, h, offs_d, d_mask = _this_program(num_heads, HEAD_DIM, BLOCK_D)
    q_base = q_ptr + b * sq_b + h * sq_h
    d_base = dout_ptr + b * sd_b + h * sd_h
    ksum = _load_vector(ksum_ptr, bh, offs_d, HEAD_DIM)
    kv = _load_square(kv_ptr, bh, offs_d, HEAD_DIM)
    dkv = tl.zeros((BLOCK_D, BLOCK_D), dtype=ACC)
    dksum = tl.zeros((BLOCK_D, ), dtype=ACC)
    start = chunk * tokens_per_chunk
    end = tl.minimum(start + tokens_per_chunk, n_tokens)
    for offset in range(0, tokens_per_chunk, BLOCK_N):
        offs_n = start + offset + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        phi, rotated = _phi_and_rope(q_base, sq_n, sq_d, offs_n, offs_d, end, rotation_ptr,
                                     HEAD_DIM, True, ACC)
        dout = _load_tile(d_base, sd_n, sd_d, offs_n, offs_d, n_mask[:, None] & d_mask[None, :],
                          ACC)
        z = 1. / (tl.sum(phi * ksum[None, :], axis=1) + 1e-6)
        dz = tl.sum(dout * tl.dot(rotated, kv, input_precision=PRECISION), axis=1)
        dzinv = -dz * z * z  # 0 for padding tokens (dout = 0)
        tl.store(dzinv_ptr + bh * n_tokens + offs_n, dzinv, mask=n_mask)
        dkv += tl.dot(tl.trans(rotated), z[:, None] * dout, input_precision=PRECISION)
        dksum += tl.sum(dzinv[:, None] * phi, axis=0)
    out = bh * tl.num_programs(1) + chunk
    _store_vector(dksum_ptr, out, offs_d, dksum, HEAD_DIM)
    _store_square(dkv_ptr, out, offs_d, dkv, HEAD_DIM)


@triton.jit(do_not_specialize=['n_tokens', 'tokens_per_chunk'])
def _grad_key_value_kernel(k_ptr, v_ptr, rotation_ptr, q_global_ptr, max_ptr, denom_ptr,
                           dkv_ptr, dksum_ptr, c_ptr, dk_ptr, dv_ptr, dq_global_ptr,
                           n_tokens, tokens_per_chunk, num_heads, scale,
                           sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                           sdk_b, sdk_h, sdk_n, sdk_d, sdv_b, sdv_h, sdv_n, sdv_d,
                           HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, FP64: tl.constexpr):
    """Pass 2 of the backward, one chunk of tokens: dk and dv of its tokens and its share of
    sum_n dl_n phi(k_n) (for the global query's gradient)."""
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    bh, chunk, b, h, offs_d, d_mask = _this_program(num_heads, HEAD_DIM, BLOCK_D)
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    q_global = _load_vector(q_global_ptr, bh, offs_d, HEAD_DIM)
    dksum = _load_vector(dksum_ptr, bh, offs_d, HEAD_DIM)
    max_logit = tl.load(max_ptr + bh)
    denom = tl.load(denom_ptr + bh)
    c = tl.load(c_ptr + bh)
    dkv = _load_square(dkv_ptr, bh, offs_d, HEAD_DIM)
    dq_global = tl.zeros((BLOCK_D, ), dtype=ACC)
    start = chunk * tokens_per_chunk
    end = tl.minimum(start + tokens_per_chunk, n_tokens)
    for offset in range(0, tokens_per_chunk, BLOCK_N):
        offs_n = start + offset + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        mask = n_mask[:, None] & d_mask[None, :]
        phi, rotated = _phi_and_rope(k_base, sk_n, sk_d, offs_n, offs_d, end, rotation_ptr,
                                     HEAD_DIM, True, ACC)
        logits = scale * tl.sum(phi * q_global[None, :], axis=1)
        alpha = tl.where(n_mask, tl.exp(logits - max_logit) / denom, 0.)
        v = _load_tile(v_base, sv_n, sv_d, offs_n, offs_d, mask, ACC)
        kv_v = tl.dot(rotated, dkv, input_precision=PRECISION)  # R(K_n) dkv
        dalpha = tl.sum(kv_v * v, axis=1) + tl.sum(phi * dksum[None, :], axis=1)
        dlogit = alpha * (dalpha - c)
        cos, sin, sign = _cos_sin(rotation_ptr, offs_n, offs_d, mask, HEAD_DIM, ACC)
        u = _rotate_back(tl.dot(v, tl.trans(dkv), input_precision=PRECISION), cos, sin, sign,
                         BLOCK_N, BLOCK_D)  # R^T(dkv v_n)
        dphi = (alpha[:, None] * (u + dksum[None, :])
                + (scale * dlogit)[:, None] * q_global[None, :])
        dk = dphi * tl.minimum(phi, 1.)
        dv = alpha[:, None] * kv_v
        _store_tile(dk_ptr + b * sdk_b + h * sdk_h, sdk_n, sdk_d, offs_n, offs_d, dk, mask)
        _store_tile(dv_ptr + b * sdv_b + h * sdv_h, sdv_n, sdv_d, offs_n, offs_d, dv, mask)
        dq_global += tl.sum(dlogit[:, None] * phi, axis=0)
    _store_vector(dq_global_ptr, bh * tl.num_programs(1) + chunk, offs_d, scale * dq_global,
                  HEAD_DIM)


@triton.jit(do_not_specialize=['n_tokens'])
def _grad_query_kernel(q_ptr, dout_ptr, rotation_ptr, ksum_ptr, kv_ptr, dzinv_ptr,
                       dq_global_ptr, dq_ptr, n_tokens, num_heads,
                       sq_b, sq_h, sq_n, sq_d, sd_b, sd_h, sd_n, sd_d,
                       sdq_b, sdq_h, sdq_n, sdq_d,
                       HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       PRECISION: tl.constexpr, FP64: tl.constexpr):
    """Pass 3 of the backward, one block of tokens: dq (dq_global: the global query's gradient
    already divided by the token count)."""
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    bh, block, b, h, offs_d, d_mask = _this_program(num_heads, HEAD_DIM, BLOCK_D)
    offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < n_tokens
    mask = n_mask[:, None] & d_mask[None, :]
    phi, _ = _phi_and_rope(q_ptr + b * sq_b + h * sq_h, sq_n, sq_d, offs_n, offs_d, n_tokens,
                           rotation_ptr, HEAD_DIM, False, ACC)
    dout = _load_tile(dout_ptr + b * sd_b + h * sd_h, sd_n, sd_d, offs_n, offs_d, mask, ACC)
    ksum = _load_vector(ksum_ptr, bh, offs_d, HEAD_DIM)
    dq_global = _load_vector(dq_global_ptr, bh, offs_d, HEAD_DIM)
    dzinv = tl.load(dzinv_ptr + bh * n_tokens + offs_n, mask=n_mask, other=0.)
    z = 1. / (tl.sum(phi * ksum[None, :], axis=1) + 1e-6)
    kv = _load_square(kv_ptr, bh, offs_d, HEAD_DIM)
    cos, sin, sign = _cos_sin(rotation_ptr, offs_n, offs_d, mask, HEAD_DIM, ACC)
    grad = z[:, None] * _rotate_back(tl.dot(dout, tl.trans(kv), input_precision=PRECISION),
                                     cos, sin, sign, BLOCK_N, BLOCK_D)  # z_n R^T(kv dout_n)
    dphi = grad + dzinv[:, None] * ksum[None, :] + dq_global[None, :]
    dq = dphi * tl.minimum(phi, 1.)
    _store_tile(dq_ptr + b * sdq_b + h * sdq_h, sdq_n, sdq_d, offs_n, offs_d, dq, mask)


# --------------------------------------------------------------------------------------------
# Host side: launch configuration, the two custom operators and their autograd
# --------------------------------------------------------------------------------------------
# Under TRITON_INTERPRET=1 (set when this module is imported) @triton.jit gives interpreted
# kernels, which run on CPU tensors (the tests) but cannot be traced: the operators are then
# opaque custom ops (their fake implementation skips the launches) instead of triton_ops.
INTERPRETED = isinstance(_output_kernel, InterpretedFunction)


class _Tracing(threading.local):
    shapes_only = False  # inside an interpreted op's fake implementation: no launches


_tracing = _Tracing()


def _run(kernel, grid, *args, **meta) -> None:
    """Launch ``kernel`` as triton_op wants it (``wrap_triton``: traced by torch.compile);
    an interpreted one directly (never traced, and torch < 2.13's wrap_triton refuses it)."""
    if not _tracing.shapes_only:
        (kernel if INTERPRETED else torch.library.wrap_triton(kernel))[grid](*args, **meta)


def _define(name: str, fn: Callable) -> 'torch.library.CustomOpDef':
    """``ravlt::name`` with ``fn`` as its implementation (see INTERPRETED)."""
    if not INTERPRETED:
        return torch.library.triton_op(f'ravlt::{name}', fn, mutates_args=())

    def shapes_only(*args, **kwargs):
        _tracing.shapes_only = True
        try:
            return fn(*args, **kwargs)
        finally:
            _tracing.shapes_only = False

    op = torch.library.custom_op(f'ravlt::{name}', fn, mutates_args=())
    op.register_fake(shapes_only)
    return op


class _Config(NamedTuple):
    head_dim: int
    block_d: int
    block_n: int  # tokens per block in the forward
    grad_block_n: int  # and in the backward (more tiles live at once)
    num_warps: int
    stages: int  # software pipelining of the key-value loop
    programs: int  # programs to aim at for the sums over the tokens
    precision: str  # of tl.dot
    acc: torch.dtype  # the dtype everything is computed in


def _config(q: torch.Tensor) -> _Config:
    head_dim = q.shape[-1]
    block_d = max(16, triton.next_power_of_2(head_dim))
    if q.device.type == 'cuda':
        props = torch.cuda.get_device_properties(q.device)
        programs = 4 * props.multi_processor_count
        # 2 stages need ~64 kB (half) / ~99 kB (fp32) of shared memory per program, which
        # A100/H100-class GPUs have room for
        stages = 2 if getattr(props, 'shared_memory_per_multiprocessor', 0) >= 160 * 1024 else 1
    else:
        programs, stages = 4, 1
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    precision = 'ieee' if q.dtype in (torch.float32, torch.float64) else 'tf32'
    return _Config(head_dim, block_d, 64 if block_d <= 64 else 32, 32 if block_d <= 64 else 16,
                   4 if block_d <= 64 else 8, stages, programs, precision, acc)


def _constexprs(cfg: _Config, block_n: int) -> dict:
    return dict(HEAD_DIM=cfg.head_dim, BLOCK_N=block_n, BLOCK_D=cfg.block_d,
                FP64=cfg.acc == torch.float64,
                num_warps=cfg.num_warps)


def _chunking(n_tokens: int, batch_heads: int, block: int, programs: int):
    """Split the tokens into chunks (multiples of ``block``) so that about ``programs`` programs
    run in all: the sums over the tokens need parallelism beyond batch x heads."""
    chunks = max(1, min(-(-programs // batch_heads), -(-n_tokens // block)))
    per_chunk = -(-(-(-n_tokens // chunks)) // block) * block
    return -(-n_tokens // per_chunk), per_chunk


def _head_map(q: torch.Tensor) -> torch.Tensor:
    """A new (B, heads, N, d) tensor laid out as RALAttention's head views of a channels-last
    map ((B, N, heads, d) memory), so that adding it into one reads both in the same order."""
    batch, heads, n_tokens, head_dim = q.shape
    return q.new_empty((batch, n_tokens, heads, head_dim)).transpose(1, 2)


def _device(q: torch.Tensor):
    return torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext()


def _forward_sums(q, k, v, table, scale, cfg):
    """Kernels 1-2 and the merge of their chunks: the per-head statistics of the forward."""
    batch, heads, n_tokens, head_dim = q.shape
    batch_heads = batch * heads
    chunks, per_chunk = _chunking(n_tokens, batch_heads, cfg.block_n, cfg.programs)
    meta = _constexprs(cfg, cfg.block_n)
    partial = q.new_empty((batch_heads, chunks, head_dim), dtype=cfg.acc)
    _run(_query_sum_kernel, (batch_heads, chunks), q, partial, n_tokens, per_chunk, heads,
         *q.stride(), **meta)
    q_global = (partial.sum(dim=1) / n_tokens).contiguous()

    maxes = q.new_empty((batch_heads, chunks), dtype=cfg.acc)
    denoms = torch.empty_like(maxes)
    ksums = torch.empty_like(partial)
    kvs = q.new_empty((batch_heads, chunks, head_dim, head_dim), dtype=cfg.acc)
    _run(_key_value_kernel, (batch_heads, chunks), k, v, q_global, table, maxes, denoms, ksums,
         kvs, n_tokens, per_chunk, heads, scale, *k.stride(), *v.stride(),
         PRECISION=cfg.precision, num_stages=cfg.stages, **meta)
    # merge the chunks: each chunk's sums were taken relative to its own max logit
    max_logit = maxes.amax(dim=1)
    weights = torch.exp(maxes - max_logit[:, None])
    denom = (weights * denoms).sum(dim=1)
    ksum = ((weights[..., None] * ksums).sum(dim=1) / denom[:, None]).contiguous()
    kv = ((weights[..., None, None] * kvs).sum(dim=1) / denom[:, None, None]).contiguous()
    return q_global, kv, ksum, max_logit, denom


def _output(q, table, ksum, kv, out, lepe, gate, cfg):
    batch, heads, n_tokens, _ = q.shape
    _run(_output_kernel, (batch * heads, triton.cdiv(n_tokens, cfg.block_n)), q, table, ksum, kv,
         out, lepe, gate, n_tokens, heads, *q.stride(), *out.stride(), *lepe.stride(),
         *gate.stride(), PRECISION=cfg.precision, GATED=gate is not out,
         **_constexprs(cfg, cfg.block_n))


def _rala_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                  scale: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                         torch.Tensor, torch.Tensor]:
    """RALA's output and what its backward needs: the global query, kv, sum alpha phi(k) and
    the softmax's max logit and denominator per head (alpha_n = exp(l_n - max) / denom)."""
    cfg = _config(q)
    with _device(q):
        q_global, kv, ksum, max_logit, denom = _forward_sums(q, k, v, table, scale, cfg)
        out = _head_map(q)
        _output(q, table, ksum, kv, out, out, out, cfg)
    return out, q_global, kv, ksum, max_logit, denom


def _rala_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   table: torch.Tensor, q_global: torch.Tensor, kv: torch.Tensor,
                   ksum: torch.Tensor, max_logit: torch.Tensor, denom: torch.Tensor,
                   scale: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv for the output's gradient ``grad`` (the three passes above)."""
    cfg = _config(q)
    batch, heads, n_tokens, head_dim = q.shape
    batch_heads = batch * heads
    chunks, per_chunk = _chunking(n_tokens, batch_heads, cfg.grad_block_n, cfg.programs)
    meta = dict(PRECISION=cfg.precision, **_constexprs(cfg, cfg.grad_block_n))
    with _device(q):
        dzinv = q.new_empty((batch_heads, n_tokens), dtype=cfg.acc)
        dkvs = q.new_empty((batch_heads, chunks, head_dim, head_dim), dtype=cfg.acc)
        dksums = q.new_empty((batch_heads, chunks, head_dim), dtype=cfg.acc)
        _run(_grad_sums_kernel, (batch_heads, chunks), q, grad, table, ksum, kv, dzinv, dkvs,
             dksums, n_tokens, per_chunk, heads, *q.stride(), *grad.stride(), **meta)
        dkv = dkvs.sum(dim=1).contiguous()
        dksum = dksums.sum(dim=1).contiguous()
        c = ((dkv * kv).sum(dim=(-2, -1)) + (dksum * ksum).sum(dim=-1)).contiguous()

        dk, dv = _head_map(k), _head_map(v)
        dq_globals = torch.empty_like(dksums)
        _run(_grad_key_value_kernel, (batch_heads, chunks), k, v, table, q_global, max_logit,
             denom, dkv, dksum, c, dk, dv, dq_globals, n_tokens, per_chunk, heads, scale,
             *k.stride(), *v.stride(), *dk.stride(), *dv.stride(), **meta)
        dq_global = (dq_globals.sum(dim=1) / n_tokens).contiguous()

        dq = _head_map(q)
        _run(_grad_query_kernel, (batch_heads, triton.cdiv(n_tokens, cfg.grad_block_n)), q, grad,
             table, ksum, kv, dzinv, dq_global, dq, n_tokens, heads, *q.stride(), *grad.stride(),
             *dq.stride(), **meta)
    return dq, dk, dv


rala_forward = _define('rala_forward', _rala_forward)
rala_backward = _define('rala_backward', _rala_backward)


def _setup_context(ctx, inputs, output):
    q, k, v, table, scale = inputs
    _, q_global, kv, ksum, max_logit, denom = output
    ctx.save_for_backward(q, k, v, table, q_global, kv, ksum, max_logit, denom)
    ctx.scale = scale
    ctx.mark_non_differentiable(q_global, kv, ksum, max_logit, denom)


# The backward of ``rala_forward``'s autograd: the kernels themselves, until the package
# (ravlt_dense.ops) installs its version that decides what a kernel failure means
# (``set_backward``); compiled graphs keep the kernels either way.
_backward_impl = None


def set_backward(impl: Callable) -> None:
    """Make ``impl`` (``rala_backward``'s signature) compute ``rala_forward``'s gradients."""
    global _backward_impl
    _backward_impl = impl


def _backward(ctx, grad, *_):
    q, k, v, table, q_global, kv, ksum, max_logit, denom = ctx.saved_tensors
    dq, dk, dv = (_backward_impl or rala_backward)(grad, q, k, v, table, q_global, kv, ksum,
                                                   max_logit, denom, ctx.scale)
    return dq, dk, dv, None, None


rala_forward.register_autograd(_backward, setup_context=_setup_context)


def check_inputs(q, k, v, rotation, lepe=None, gate=None) -> None:
    """ValueError for inputs the kernels do not take."""
    n_tokens, head_dim = q.shape[-2:]
    if head_dim % 4:
        raise ValueError(f'RALA needs a head dim divisible by 4 (2-D RoPE), got {head_dim}')
    if not ((rotation.shape == (n_tokens, head_dim // 2) and rotation.dtype == torch.complex64)
            or (rotation.shape == (n_tokens, head_dim) and rotation.dtype == torch.float32)):
        raise ValueError(f'rotation must be ({n_tokens}, {head_dim // 2}) complex64 (RoPE.cached '
                         f'of the map) or its ({n_tokens}, {head_dim}) float32 table (rope_table)'
                         f', got {tuple(rotation.shape)} {rotation.dtype}')
    if (lepe is None) != (gate is None):
        raise ValueError('lepe and gate go together: the fused epilogue computes '
                         '(lepe + RALA) * gate')


def rala_gated_(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                scale: float, lepe: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Inference: (lepe + RALA) * gate written into ``lepe`` by the output kernel (no new map;
    autograd does not see it)."""
    cfg = _config(q)
    with _device(q):
        _, kv, ksum, _, _ = _forward_sums(q, k, v, table, scale, cfg)
        _output(q, table, ksum, kv, lepe, lepe, gate, cfg)
    return lepe
