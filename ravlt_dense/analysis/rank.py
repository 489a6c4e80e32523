"""Rank measures for the paper's analysis: KV buffer and output feature map of plain linear
attention, RALA and softmax attention, all computed from the same q, k, v of one RAVLT layer.

Two notions of rank, reported side by side:
* numerical rank: singular values above ``rtol`` (default 1e-3) times the largest one;
* energy rank: the fewest singular values holding ``energy`` (default 99 %) of sum(s^2), which
  ignores a long tail of tiny directions a 1e-3 threshold still counts.
SVDs run in float64 so the 1e-3 threshold sits far above round-off.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ravlt_dense.models.backbones.ravlt import RALAttention, apply_rope, rala_terms

DEFAULT_RTOL = 1e-3
DEFAULT_ENERGY = 0.99
VARIANTS = ('linear', 'linear_rope', 'rala', 'softmax')


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of the last two dims, in float64."""
    return torch.linalg.svdvals(matrix.double())


def numerical_rank(matrix: torch.Tensor, rtol: float = DEFAULT_RTOL) -> torch.Tensor:
    """Number of singular values > rtol * largest (per matrix of a batch)."""
    s = singular_values(matrix)
    return (s > rtol * s[..., :1]).sum(-1)


def energy_rank(matrix: torch.Tensor, energy: float = DEFAULT_ENERGY) -> torch.Tensor:
    """Fewest singular values whose squares hold ``energy`` of the total."""
    s2 = singular_values(matrix)**2
    frac = s2.cumsum(-1) / s2.sum(-1, keepdim=True).clamp_min(1e-300)
    # small tolerance so that an exact split (e.g. 0.99 of equal values) is not lost to rounding
    return (frac < energy - 1e-12).sum(-1) + 1


def attention_variants(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sin: torch.Tensor,
                       cos: torch.Tensor, scale: float) -> Dict[str, Dict[str, torch.Tensor]]:
    """Buffers and outputs of the three attentions from one (B, heads, N, d) set of q, k, v.

    * linear: phi = elu + 1, buffer phi(k)^T v / N, out = phi(q) buffer / (phi(q) mean phi(k)^T);
      no RoPE, as in the paper's plain linear-attention baseline.
    * linear_rope: the same with RoPE on phi(q), phi(k) - RALA without the key re-weighting, to
      tell how much of RALA's rank comes from RoPE and how much from the re-weighting.
    * rala: the paper's formulas (``rala_reference`` with its buffer exposed): global-query key
      re-weighting, RoPE, buffer RoPE(k)^T v / N.
    * softmax: RoPE on q and k; its 'buffer' is the N x N attention matrix (there is no d x d one).
    Each entry: {'buffer': (B, h, ., .), 'out': (B, h, N, d)}; 'rala' also holds 'alpha'
    (B, h, 1, N), the key weights (uniform = 1/N: no re-weighting at all).

    Args:
        q, k, v (Tensor): (B, heads, N, d) queries, keys and values of one layer.
        sin, cos (Tensor): The RoPE tables of its stage for the N tokens.
        scale (float): The layer's softmax scale (head_dim ** -0.5).
    """
    n = q.shape[-2]
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    kv = phi_k.transpose(-1, -2) @ v / n
    z = 1 / (phi_q @ phi_k.mean(-2, keepdim=True).transpose(-1, -2) + 1e-6)
    linear = dict(buffer=kv, out=(phi_q @ kv) * z)
    kv = apply_rope(phi_k, sin, cos).transpose(-1, -2) @ v / n
    linear_rope = dict(buffer=kv, out=(apply_rope(phi_q, sin, cos) @ kv) * z)

    # The model's own RALA (rala_terms is what rala_reference computes), its buffer exposed.
    _, alpha, kv, z_rala = rala_terms(q, k, v, sin, cos, scale)
    rala = dict(buffer=kv, out=(apply_rope(phi_q, sin, cos) @ kv) * z_rala, alpha=alpha)

    q_rope, k_rope = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    attn = torch.softmax(scale * q_rope @ k_rope.transpose(-1, -2), dim=-1)
    softmax = dict(buffer=attn, out=attn @ v)
    return dict(linear=linear, linear_rope=linear_rope, rala=rala, softmax=softmax)


def capture_attention_inputs(model: torch.nn.Module, images: torch.Tensor,
                             stages: Optional[List[int]] = None) -> List[dict]:
    """Run ``model`` on ``images`` and keep the input of every RALAttention (after norm1).

    Returns one dict per layer: name, stage, block, the layer's native attention type, its module
    and the captured input (B, C, H, W).
    """
    records, handles = [], []
    for name, module in model.named_modules():
        if not isinstance(module, RALAttention):
            continue
        stage, block = int(name.split('.')[1]), int(name.split('.')[3])
        if stages is not None and stage not in stages:
            continue
        rec = dict(name=name, stage=stage, block=block, attn_type=module.attn_type,
                   module=module, rope=model.layers[stage].RoPE)

        def hook(mod, args, output, rec=rec):
            rec['input'] = args[0].detach().contiguous()

        handles.append(module.register_forward_hook(hook))
        records.append(rec)
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return records


def layer_ranks(record: dict, rtol: float = DEFAULT_RTOL, energy: float = DEFAULT_ENERGY,
                attn_matrix_rank: bool = False) -> List[dict]:
    """Per image and head: buffer ranks; per image: output-map ranks (N x C); for each variant.

    The output map is measured twice: the attention output alone (heads merged, N x C) and the
    gated output (attention + lepe) * o that RAVLT feeds to its projection - the gate is the
    paper's second rank-raising device. The softmax N x N matrix rank is optional (slow for big N).
    """
    attn, x = record['module'], record['input']
    B, C, H, W = x.shape
    with torch.no_grad():
        q, k, v, o = attn.qkvo(x).double().chunk(4, dim=1)
        lepe = attn.lepe(v.float()).double()
        q, k, v = (t.reshape(B, attn.num_heads, attn.head_dim, H * W).transpose(-1, -2)
                   for t in (q, k, v))
        sin, cos = (t.double() for t in record['rope'](H, W))
        variants = attention_variants(q, k, v, sin, cos, attn.scale)
    gate = o.flatten(2).transpose(1, 2)
    local = lepe.flatten(2).transpose(1, 2)
    # How far the key re-weighting is from uniform: std over tokens of alpha * N (0 = uniform).
    alpha_std = (variants['rala']['alpha'] * H * W).std(-1).squeeze(-1)
    rows = []
    for variant, res in variants.items():
        out = res['out'].transpose(1, 2).reshape(B, H * W, C)  # merge heads: (B, N, C)
        gated = (out + local) * gate
        measure_buffer = variant != 'softmax' or attn_matrix_rank
        buf = res['buffer']
        buf_num = numerical_rank(buf, rtol) if measure_buffer else None
        buf_en = energy_rank(buf, energy) if measure_buffer else None
        out_num, out_en = numerical_rank(out, rtol), energy_rank(out, energy)
        gated_num, gated_en = numerical_rank(gated, rtol), energy_rank(gated, energy)
        for b in range(B):
            for h in range(attn.num_heads):
                rows.append(dict(
                    layer=record['name'], stage=record['stage'], block=record['block'],
                    native=record['attn_type'], tokens=H * W, channels=C,
                    head_dim=attn.head_dim, image=b, head=h, variant=variant,
                    buffer_size=f'{buf.shape[-2]}x{buf.shape[-1]}',
                    buffer_rank=None if buf_num is None else int(buf_num[b, h]),
                    buffer_energy_rank=None if buf_en is None else int(buf_en[b, h]),
                    out_rank=int(out_num[b]), out_energy_rank=int(out_en[b]),
                    gated_rank=int(gated_num[b]), gated_energy_rank=int(gated_en[b]),
                    alpha_std=float(alpha_std[b, h])))
    return rows


def procedural_images(num: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A few RGB uint8 images (num, height, width, 3): smooth colour fields with random discs,
    boxes and stripes, so that features vary in space the way natural images do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    images = []
    for _ in range(num):
        img = np.zeros((height, width, 3))
        for c in range(3):  # low-frequency background
            fx, fy, ph = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., c] = 0.5 + 0.3 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
        for _ in range(rng.integers(3, 8)):
            color = rng.uniform(0, 1, 3)
            cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
            kind = rng.integers(3)
            if kind == 0:
                mask = (xx - cx)**2 + (yy - cy)**2 < r**2
            elif kind == 1:
                mask = (abs(xx - cx) < r) & (abs(yy - cy) < 0.6 * r)
            else:
                mask = (np.sin(40 * r * (xx * np.cos(cx * 6) + yy * np.sin(cx * 6))) > 0) & \
                       ((xx - cx)**2 + (yy - cy)**2 < (1.5 * r)**2)
            img[mask] = color
        img += rng.normal(0, 0.03, img.shape)
        images.append((img.clip(0, 1) * 255).astype(np.uint8))
    return np.stack(images)


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, H, W) with the ImageNet statistics."""
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean) / std
