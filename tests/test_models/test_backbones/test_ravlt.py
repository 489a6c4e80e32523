"""The RAVLT backbone: structure, exactness of the fast path, freezing, checkpoints, AMP."""
import math
import re

import pytest
import torch

from ravlt_dense import zoo
from ravlt_dense.models.backbones import ravlt
from ravlt_dense.models.backbones.ravlt import (
    RAVLT,
    PointwiseConv,
    RALAttention,
    RAVLTBlock,
    RoPE,
    apply_rope,
    apply_rope_complex,
    rala_fast,
    rala_reference,
    rope_tables,
)

from conftest import TINY_ARCH as TINY
from conftest import needs_cuda, weighted_sum


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=['portable', 'cuda'])
def forms(request, monkeypatch):
    """Runs a test twice: as the CPU runs the fast path, and with the forms it takes on CUDA
    (1x1 convs as matrix products, the depth-wise bias folded into fc2, half-precision
    LayerNorm under autocast), here on the CPU."""
    if request.param == 'cuda':
        monkeypatch.setattr(ravlt, 'cuda_forms', lambda x: not ravlt.is_tracing())
    else:
        monkeypatch.setattr(ravlt, 'cuda_forms', lambda x: False)
    return request.param


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('arch', zoo.variants())
def test_parameter_counts_are_exact(arch):
    assert count(RAVLT(arch)) == zoo.backbone_params(arch)  # the release's, in the metafile


def test_arch_aliases_and_variant_defaults():
    model = RAVLT('small')
    assert model.embed_dims == [64, 128, 320, 512]
    assert [len(s.blocks) for s in model.layers] == [3, 5, 9, 3]
    # drop path grows linearly to the variant's rate (S: 0.15) over all blocks
    assert model.layers[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.15)
    assert model.layers[0].blocks[0].drop_path.drop_prob == 0
    # B and L start their deep stages' layer scale at 1e-6
    base = RAVLT('b')
    assert base.layers[2].blocks[0].gamma_1.flatten()[0].item() == pytest.approx(1e-6)
    assert base.layers[1].blocks[0].gamma_1.flatten()[0].item() == 1.0
    assert [b.attn.attn_type for s in model.layers for b in s.blocks[:1]] == \
        ['rala', 'rala', 'softmax', 'softmax']


def test_state_dict_uses_the_release_key_layout():
    keys = RAVLT('t').state_dict().keys()
    patterns = [
        r'patch_embed\.proj\.(0|3|6|9)\.(weight|bias)',
        r'patch_embed\.proj\.(1|4|7|10)\.(weight|bias|running_mean|running_var|num_batches_tracked)',
        r'layers\.[0-3]\.RoPE\.angle',
        r'layers\.[0-3]\.blocks\.\d+\.pos\.(weight|bias)',
        r'layers\.[0-3]\.blocks\.\d+\.norm[12]\.norm\.(weight|bias)',
        r'layers\.[0-3]\.blocks\.\d+\.attn\.(qkvo|lepe|proj)\.(weight|bias)',
        r'layers\.[0-3]\.blocks\.\d+\.ffn\.(fc1|dwconv|fc2)\.(weight|bias)',
        r'layers\.[0-3]\.blocks\.\d+\.gamma_[12]',
        r'layers\.[0-2]\.downsample\.(reduction\.(weight|bias)|norm\.(weight|bias|running_mean|'
        r'running_var|num_batches_tracked))',
        r'extra_norms\.[0-3]\.norm\.(weight|bias)',
    ]
    unmatched = [k for k in keys if not any(re.fullmatch(p, k) for p in patterns)]
    assert unmatched == []
    assert 'layers.3.downsample.reduction.weight' not in keys
    assert RAVLT('t').state_dict()['layers.0.blocks.0.attn.qkvo.weight'].shape == (256, 64, 1, 1)


@pytest.mark.parametrize('size', [(223, 301), (32, 32), (64, 97)])
def test_output_shapes_and_strides_on_odd_sizes(size):
    model = RAVLT(TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert len(outs) == 4
    for i, (out, dim) in enumerate(zip(outs, TINY['embed_dims'])):
        stride = 4 * 2**i
        assert out.shape == (2, dim, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert torch.isfinite(out).all()


def test_out_indices_select_outputs_and_their_norms():
    model = RAVLT(TINY, out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 64]
    assert not any(k.startswith('extra_norms.0.') for k in model.state_dict())
    # each returned map is layer-normalised over channels
    assert outs[0].mean(1).abs().max() < 1e-4


@pytest.mark.parametrize('kwargs,message', [
    (dict(arch='xl'), "Unknown RAVLT arch 'xl'"),
    (dict(arch=dict(embed_dims=[8, 16, 32, 64])), 'missing'),
    (dict(arch='t', attn_types=('rala', 'linear', 'softmax', 'softmax')), 'attn_types'),
    (dict(arch='t', attn_types=('rala', ) * 3), 'attn_types'),
    (dict(arch='t', out_indices=(4, )), 'out_indices'),
    (dict(arch='t', frozen_stages=5), 'frozen_stages'),
    (dict(arch='t', attn_impl='flash'), 'attn_impl'),
])
def test_bad_configs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RAVLT(**kwargs)


def test_bad_inputs_raise_clear_errors():
    model = RAVLT(TINY)
    with pytest.raises(ValueError, match='at least 32x32'):
        model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match='B x C x H x W'):
        model(torch.randn(3, 64, 64))


# ------------------------------------------------------------------------------------------
# RoPE
# ------------------------------------------------------------------------------------------
def test_rope_tables_match_a_hand_computed_case():
    rope = RoPE(head_dim=8)
    # d/4 = 2 frequencies 1/10000^0 = 1 and 1/10000^1 = 1e-4, each twice
    assert torch.allclose(rope.angle, torch.tensor([1., 1., 1e-4, 1e-4]))
    sin, cos = rope(2, 3)
    assert sin.shape == (6, 8)
    i, j = 1, 2  # token n = i * W + j = 5: row angles first, then column angles
    expected = torch.tensor([i, i, i * 1e-4, i * 1e-4, j, j, j * 1e-4, j * 1e-4])
    assert torch.allclose(sin[5], expected.sin())
    assert torch.allclose(cos[5], expected.cos())
    # each pair (x0, x1) is rotated by its angle: (x0 cos - x1 sin, x1 cos + x0 sin)
    x = torch.arange(1., 9.).expand(6, 8)
    out = apply_rope(x, sin, cos)
    theta = expected[0]
    assert torch.allclose(out[5, :2], torch.stack([1 * theta.cos() - 2 * theta.sin(),
                                                   2 * theta.cos() + 1 * theta.sin()]))


def test_rope_scores_depend_only_on_relative_position():
    sin, cos = rope_tables(RoPE(16).angle, 4, 5)
    q, k = torch.randn(16), torch.randn(16)
    score = lambda n, m: apply_rope(q, sin[n], cos[n]) @ apply_rope(k, sin[m], cos[m])  # noqa
    # tokens (0,0)-(1,2) and (2,1)-(3,3) have the same offset (1, 2)
    assert score(0 * 5 + 0, 1 * 5 + 2) == pytest.approx(score(2 * 5 + 1, 3 * 5 + 3).item(),
                                                        abs=1e-5)


def test_rope_tables_are_cached_and_follow_loaded_weights():
    rope = RoPE(8)
    first = rope.cached(4, 4)
    assert rope.cached(4, 4) is first
    assert rope.cached(4, 6).shape == (24, 4) and first.dtype == torch.complex64
    rope.load_state_dict({'angle': rope.angle * 2})
    assert not torch.equal(rope.cached(4, 4), first)


@pytest.mark.parametrize('layout', ['contiguous', 'strided', 'bfloat16'])
def test_complex_rope_equals_the_written_out_rotation(layout):
    rope = RoPE(16)
    sin, cos = rope(3, 7)
    x = torch.randn(2, 3, 21, 16)
    if layout == 'strided':  # channels-first tokens: the head dim is not contiguous
        x = torch.randn(2, 3, 16, 21).transpose(-1, -2)
    if layout == 'bfloat16':
        x = x.bfloat16()
    out = apply_rope_complex(x, rope.cached(3, 7))
    ref = apply_rope(x.float(), sin, cos)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert (out.float() - ref).abs().max() <= (1e-2 if layout == 'bfloat16' else 1e-6)


# ------------------------------------------------------------------------------------------
# Fast path == reference path
# ------------------------------------------------------------------------------------------
MIXES = [('rala', 'rala', 'softmax', 'softmax'), ('rala', ) * 4]


def assert_fast_matches_reference(model, x, tol):
    """Outputs of the fast path (with RALA's fused kernel and without it, where it applies)
    within ``tol`` of the reference path, in eval mode."""
    model.eval()
    with torch.no_grad():
        ref = model.set_attn_impl('reference')(x)
        for kernel in (True, False) if x.is_cuda else (True, ):
            fast = model.set_attn_impl('fast').set_rala_kernel(kernel)(x)
            for a, b in zip(fast, ref):
                assert (a - b).abs().max() <= tol, f'rala_kernel={kernel}'
    model.set_rala_kernel(True)


def assert_gradients_match_reference(model, x):
    """Gradients of the input and of every parameter, fast vs reference path (train mode), within
    1e-4 of the larger of 1 and the reference's largest."""
    model.train()
    x.requires_grad_(True)
    grads = []
    for impl in ('fast', 'reference'):
        model.set_attn_impl(impl).zero_grad()
        x.grad = None
        weighted_sum(model(x)).backward()
        grads.append({'input': x.grad.clone(),
                      **{n: p.grad.clone() for n, p in model.named_parameters()}})
    model.set_attn_impl('fast')
    for name, fast in grads[0].items():
        ref = grads[1][name]
        assert (fast - ref).abs().max() <= 1e-4 * max(1., ref.abs().max().item()), name
    assert grads[0]['layers.2.blocks.0.attn.qkvo.weight'].abs().sum() > 0


def assert_autocast_close_to_fp32(model, x, dtypes):
    """Outputs under autocast finite and within 5% (relative L2) of fp32."""
    model.eval()
    with torch.no_grad():
        ref = model(x)
        for dtype in dtypes:
            with torch.autocast(x.device.type, dtype=dtype):
                amp = model(x)
            for a, b in zip(amp, ref):
                assert torch.isfinite(a).all(), dtype
                rel = (a.float() - b).norm() / b.norm()
                assert rel < 0.05, (dtype, rel.item())


def autocast_dtypes(device):
    # fp16 autocast is the GPU's training setting; on the CPU bf16 is the one that is fast
    return [torch.float16, torch.bfloat16] if device.type == 'cuda' else [torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize('attn_type', ['rala', 'softmax'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_fast_attention_matches_reference(attn_type, channels_last, device, forms):
    attn = RALAttention(64, num_heads=2, attn_type=attn_type).to(device)
    rope = RoPE(32).to(device)
    x = torch.randn(2, 64, 13, 17, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = attn(x, rope)
        attn.attn_impl = 'reference'
        ref = attn(x, rope)
    assert (fast - ref).abs().max() <= 1e-5
    assert ref.abs().max() > 0.1  # a meaningful, non-degenerate output


def test_rala_fast_matches_reference_formula_directly():
    q, k, v = (torch.randn(2, 3, 50, 16) for _ in range(3))
    rope = RoPE(16)
    sin, cos = rope(5, 10)
    ref = rala_reference(q, k, v, sin, cos, 16**-0.5)
    fast = rala_fast(q, k, v, rope.rotary(5, 10), 16**-0.5)
    assert (fast - ref).abs().max() <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize('attn_types', MIXES)
def test_fast_backbone_matches_reference(attn_types, device, forms):
    model = RAVLT(TINY, attn_types=attn_types).to(device)
    # errors of 1e-7 per op accumulate over the blocks; outputs are layer-normalised
    assert_fast_matches_reference(model, torch.randn(1, 3, 96, 80, device=device), 2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize('attn_types', MIXES)
def test_fast_backbone_gradients_match_reference(attn_types, device, forms):
    # the fast path adds in place into fresh tensors; autograd must see the same function
    model = RAVLT(TINY, attn_types=attn_types, drop_path_rate=0.).to(device)
    assert_gradients_match_reference(model, torch.randn(2, 3, 64, 72, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize('arch', ['t', 's'])
@pytest.mark.parametrize('attn_types', MIXES)
def test_full_size_fast_path_matches_reference_and_autocast(arch, attn_types, device):
    # The released variants at a detection-like size: more layers' rounding than the tiny arch
    # (up to 7e-5 measured on the CPU for RAVLT-S at 800x1216), the kernel at real token counts.
    needs_cuda(device)
    model = RAVLT(arch, attn_types=attn_types, drop_path_rate=0.).to(device)
    x = torch.randn(2, 3, 512, 512, device=device)
    assert_fast_matches_reference(model, x[:1], 1e-4)
    assert_autocast_close_to_fp32(model, x[:1], autocast_dtypes(device))
    assert_gradients_match_reference(model, x)


def test_rala_fast_survives_half_precision_where_the_formula_overflows():
    # One token dominates the query-aware softmax, so k * alpha * N ~ N * |k| > fp16 max.
    n, d = 4096, 16
    q = torch.ones(1, 1, n, d)
    k = torch.zeros(1, 1, n, d)
    k[..., 0, :] = 30.0
    v = torch.randn(1, 1, n, d)
    rope = RoPE(d)
    sin, cos = rope(64, 64)
    half = [t.half() for t in (q, k, v)]
    naive = rala_reference(*half, sin.half(), cos.half(), d**-0.5)
    assert not torch.isfinite(naive).all()
    fast = rala_fast(*half, rope.rotary(64, 64), d**-0.5)
    assert fast.dtype == torch.float16 and torch.isfinite(fast).all()
    ref = rala_reference(q, k, v, sin, cos, d**-0.5)
    assert torch.allclose(fast.float(), ref, atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
def test_autocast_stays_finite_and_close_to_fp32(device, forms):
    model = RAVLT(TINY).to(device)
    assert_autocast_close_to_fp32(model, torch.randn(1, 3, 64, 96, device=device),
                                  autocast_dtypes(device))


def fp16_amp_steps(model, x, steps):
    """``steps`` fp16 AMP training steps (autocast, GradScaler, AdamW) on a loss that pulls the
    features towards 0: (losses, steps the scaler skipped, gradients finite after unscaling)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    scaler = torch.amp.GradScaler(x.device.type)
    losses, skipped, grads_finite = [], 0, True
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.float16):
            loss = sum(o.float().pow(2).mean() for o in model(x))
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads_finite &= all(torch.isfinite(p.grad).all().item() for p in model.parameters()
                            if p.grad is not None)
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped += scaler.get_scale() < scale  # a step with inf/nan gradients lowers the scale
        losses.append(loss.item())
    return losses, skipped, grads_finite


@pytest.mark.gpu
@pytest.mark.parametrize('attn_types', MIXES)
def test_fp16_amp_training_steps_stay_finite(attn_types, device):
    model = RAVLT(TINY, attn_types=attn_types).to(device)
    losses, skipped, grads_finite = fp16_amp_steps(model, torch.randn(2, 3, 64, 64,
                                                                      device=device), 3)
    assert all(map(math.isfinite, losses)) and grads_finite and skipped < len(losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < losses[0]  # AdamW moved the weights the loss's way


@pytest.mark.gpu
@pytest.mark.parametrize('attn_types', MIXES)
def test_full_size_fp16_amp_training_steps_stay_finite(attn_types, device):
    # the paper's setting: fp16 AMP, 2 images of 800x1216 per GPU
    needs_cuda(device)
    model = RAVLT('s', attn_types=attn_types).to(device)
    losses, skipped, grads_finite = fp16_amp_steps(model, torch.randn(2, 3, 800, 1216,
                                                                      device=device), 5)
    assert all(map(math.isfinite, losses)) and grads_finite and skipped < len(losses), (
        losses, skipped)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_training_after_inference_mode_evaluation():
    # the cached RoPE rotation built under inference_mode must not be an inference tensor
    model = RAVLT(TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        model(x)
    model.train()
    sum(out.sum() for out in model(x)).backward()
    assert model.layers[0].blocks[0].attn.qkvo.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# Training-time behaviour
# ------------------------------------------------------------------------------------------
def test_frozen_stages_stop_gradients_and_keep_bn_in_eval():
    model = RAVLT(TINY, frozen_stages=2, norm_eval=False).train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[1].parameters())
    assert not any(p.requires_grad for p in model.extra_norms[1].parameters())
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert not model.patch_embed.proj[1].training
    assert not model.layers[1].downsample.norm.training
    assert model.layers[2].downsample.norm.training


def test_norm_eval_keeps_batchnorm_statistics_fixed():
    model = RAVLT(TINY, norm_eval=True)
    assert model.train() is model
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    before = bns[0].running_mean.clone()
    model(torch.randn(2, 3, 64, 64)).__len__()
    assert torch.equal(bns[0].running_mean, before)
    assert model.layers[0].blocks[0].training  # the rest does train
    model_train_bn = RAVLT(TINY, norm_eval=False).train()
    assert all(m.training for m in model_train_bn.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_with_cp_gives_equal_outputs_and_gradients(forms):
    plain = RAVLT(TINY, drop_path_rate=0.)
    ckpt = RAVLT(TINY, drop_path_rate=0., with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, ckpt):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
    assert grads[0]['layers.2.blocks.1.attn.qkvo.weight'].abs().sum() > 0


# ------------------------------------------------------------------------------------------
# The fast path's CUDA forms (checked here on the CPU)
# ------------------------------------------------------------------------------------------
def test_pointwise_conv_is_a_conv_and_its_matrix_product_form_equals_it(monkeypatch):
    conv = PointwiseConv(16, 24)
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.shape == (24, 16, 1, 1)
    x = torch.randn(2, 16, 5, 7).contiguous(memory_format=torch.channels_last)
    other_bias = torch.randn(24)
    with torch.no_grad():
        plain = torch.nn.functional.conv2d(x, conv.weight, conv.bias)
        plain_other = torch.nn.functional.conv2d(x, conv.weight, other_bias)
        monkeypatch.setattr(ravlt, 'cuda_forms', lambda x: True)
        gemm, gemm_other = conv(x), conv(x, bias=other_bias)
        nchw = conv(x.contiguous())  # not channels-last: the conv itself
    assert gemm.is_contiguous(memory_format=torch.channels_last)
    assert (gemm - plain).abs().max() <= 1e-6 and (gemm_other - plain_other).abs().max() <= 1e-6
    assert nchw.is_contiguous() and (nchw - plain).abs().max() <= 1e-6


def test_block_keeps_a_half_precision_residual_stream_under_autocast(forms):
    # the fp32 layer scale used to promote the stream to fp32 after each branch
    block = RAVLTBlock(32, 4, 3.5, 'softmax').eval()
    x = torch.randn(1, 32, 8, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = block(x, RoPE(8))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            amp = block(x.bfloat16(), RoPE(8))
    assert amp.dtype == torch.bfloat16
    assert (amp.float() - ref).norm() / ref.norm() < 0.02


def test_block_layer_norms_keep_half_precision_under_autocast_and_fp32_otherwise(monkeypatch):
    norm = ravlt.LayerNorm2d(16, keep_half=True)
    torch.nn.init.normal_(norm.norm.weight)
    torch.nn.init.normal_(norm.norm.bias)
    x = torch.randn(2, 16, 5, 7).contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(ravlt, 'cuda_forms', lambda x: True)
    with torch.no_grad():
        ref = norm(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = norm(x.bfloat16())
    assert ref.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert half.is_contiguous(memory_format=torch.channels_last)
    assert (half.float() - ref).abs().max() <= 0.05 * ref.abs().max()
