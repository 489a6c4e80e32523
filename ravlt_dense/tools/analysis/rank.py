"""Rank measures of RAVLT's attention, for the paper's claim that RALA lifts the rank of linear
attention: the KV buffer and the output map of plain linear attention, linear attention with
RoPE, RALA and softmax attention, all computed from the same q, k, v of one RAVLT layer.

Use on any RAVLT (a bare backbone, or a trained detector's ``model.backbone``)::

    from ravlt_dense.tools.analysis import rank
    for record in rank.capture_attention_inputs(ravlt, images):  # one per attention layer
        rows = rank.layer_ranks(record)  # per image, head and variant: the ranks below

``numerical_rank`` and ``energy_rank`` take any (batched) matrix; ``attention_variants`` the
q, k, v of a layer. tools/analysis/rank_analysis.py tabulates and plots these over a model.
The functions evaluate RALA with the model's own ``rala_terms``, so they follow its code.

Two notions of rank, reported side by side:

* numerical rank: singular values above ``rtol`` (default 1e-3) times the largest one;
* energy rank: the fewest singular values holding ``energy`` (default 99 %) of sum(s^2), which
  ignores a long tail of tiny directions a 1e-3 threshold still counts.

SVDs run in float64 so the 1e-3 threshold sits far above round-off.
"""
from typing import Dict, List, Optional

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
