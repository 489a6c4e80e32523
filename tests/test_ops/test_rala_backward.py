"""RALA's backward kernels (``ravlt::rala_backward`` through autograd) against autograd of the
paper's formulas (``rala_reference``), and the attention's parameters trained through them.

Tiny shapes: in Triton's interpreter (no GPU) every launch is slow.
"""
from unittest import mock

import pytest
import torch

from ravlt_dense import ops
from ravlt_dense.models.backbones.ravlt import RAVLT, RALAttention, RoPE, rala_reference

from conftest import weighted_sum

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures('fused_kernels')]

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def head_views(batch, heads, height, width, head_dim, dtype=torch.float32):
    """q, k, v as RALAttention makes them: (B, heads, N, d) views of one channels-last map,
    leaves of autograd."""
    torch.manual_seed(0)
    qkv = torch.randn(batch, 3 * heads * head_dim, height, width, device=DEVICE)
    qkv = qkv.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    views = RALAttention(heads * head_dim, heads)._split_heads
    return qkv, [views(t) for t in qkv.chunk(3, dim=1)]


def gradients(fn, qkv, views, grad):
    qkv.grad = None
    out = fn(*views)
    out.backward(grad)
    return out, qkv.grad.unflatten(1, (3, -1))


def kernel(height, width):
    def run(q, k, v):
        rotation = RoPE(q.shape[-1]).to(q.device).cached(height, width)
        return ops.rala_triton(q, k, v, rotation, q.shape[-1]**-0.5)
    return run


def reference(height, width, dtype=torch.float64):
    def run(q, k, v):
        sin, cos = RoPE(q.shape[-1]).to(q.device)(height, width)
        return rala_reference(*(t.to(dtype) for t in (q, k, v)), sin.to(dtype), cos.to(dtype),
                              q.shape[-1]**-0.5)
    return run


def worst(actual, expected):
    """max |actual - expected| relative to max |expected|, per q, k, v."""
    return [((a - e).abs().max() / e.abs().max()).item() for a, e in zip(actual, expected)]


SHAPES = [
    (2, 2, 7, 9, 64),    # one partial block of tokens
    (1, 1, 17, 23, 64),  # several chunks, the last one partial (7 of 128 tokens)
    (1, 2, 13, 11, 96),  # padded to 128 channels
    (2, 1, 5, 6, 32),    # the tiny arch's head dims
]


@pytest.mark.parametrize('batch, heads, height, width, head_dim', SHAPES)
def test_gradients_match_the_reference_in_fp64(batch, heads, height, width, head_dim):
    # the kernels compute in fp64 for fp64 inputs: the formulas are checked to rounding
    qkv, views = head_views(batch, heads, height, width, head_dim, torch.float64)
    grad = torch.randn(batch, heads, height * width, head_dim, device=DEVICE,
                       dtype=torch.float64)
    out, grads = gradients(kernel(height, width), qkv, views, grad)
    ref, ref_grads = gradients(reference(height, width), qkv, views, grad)
    assert (out - ref).abs().max() <= 1e-12 * ref.abs().max()
    assert max(worst(grads.unbind(1), ref_grads.unbind(1))) <= 1e-12


def test_gradients_pass_gradcheck_against_the_kernels_own_forward():
    # finite differences of the forward kernels themselves (fast mode: random projections)
    _, views = head_views(1, 1, 3, 5, 32, torch.float64)
    leaves = [t.detach().clone().requires_grad_() for t in views]
    assert torch.autograd.gradcheck(kernel(3, 5), leaves, fast_mode=True)


@pytest.mark.parametrize('batch, heads, height, width, head_dim', SHAPES[:2] + SHAPES[3:])
def test_gradients_match_the_reference_in_fp32(batch, heads, height, width, head_dim):
    qkv, views = head_views(batch, heads, height, width, head_dim)
    grad = torch.randn(batch, heads, height * width, head_dim, device=DEVICE)
    _, grads = gradients(kernel(height, width), qkv, views, grad)
    _, ref_grads = gradients(reference(height, width), qkv, views, grad)
    assert grads.dtype == torch.float32
    assert max(worst(grads.unbind(1), ref_grads.unbind(1))) <= 1e-5


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_get_gradients_computed_in_fp32(dtype):
    qkv, views = head_views(1, 2, 9, 14, 64, dtype)
    grad = torch.randn(1, 2, 9 * 14, 64, device=DEVICE).to(dtype)
    _, grads = gradients(kernel(9, 14), qkv, views, grad)
    _, ref_grads = gradients(reference(9, 14, torch.float32), qkv, views, grad)
    assert grads.dtype == dtype
    # the gradients' rounding to half (and TF32 products on a GPU)
    assert max(worst(grads.unbind(1), ref_grads.unbind(1))) <= 2e-2


def attention_gradients(attn, x, rope):
    attn.zero_grad()
    x.grad = None
    weighted_sum([attn(x, rope)]).backward()
    return [x.grad.clone()] + [p.grad.clone() for p in attn.parameters()]


@pytest.mark.parametrize('height, width', [(9, 13), (5, 7)])
def test_attention_trains_every_parameter_through_the_kernels(kernel_on_this_device,
                                                             fused_kernels, height, width):
    torch.manual_seed(0)
    attn = RALAttention(64, num_heads=2).to(DEVICE)
    attn.kernel_backward = True  # RAVLT's rala_kernel_backward=True
    rope = RoPE(32).to(DEVICE)
    x = torch.randn(2, 64, height, width, device=DEVICE, requires_grad=True)
    forward = mock.Mock(wraps=ops.rala_triton)
    backward = mock.Mock(wraps=fused_kernels.rala_backward)
    with mock.patch('ravlt_dense.ops.rala_triton', forward), \
            mock.patch.object(fused_kernels, 'rala_backward', backward):
        fused = attention_gradients(attn, x, rope)
    attn.attn_impl = 'reference'
    expected = attention_gradients(attn, x, rope)
    assert forward.call_count == 1 and backward.call_count == 1
    for name, a, b in zip(['x'] + [n for n, _ in attn.named_parameters()], fused, expected):
        assert (a - b).abs().max() <= 1e-5 * max(1., b.abs().max().item()), name


def test_backbone_trains_through_the_kernels_as_through_pytorch(kernel_on_this_device,
                                                                fused_kernels):
    # with_cp recomputes each block's forward (the kernels again) inside the backward
    arch = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratio=2., layer_scale_init=[1.] * 4)
    # (the backward kernels opted in; the last two: the default, autograd's backward, and none)
    results = []
    for with_cp, kernel, backward_kernel in ((True, True, True), (False, True, True),
                                             (True, True, False), (False, False, False)):
        torch.manual_seed(0)
        model = RAVLT(arch, attn_types=('rala', ) * 4, with_cp=with_cp, rala_kernel=kernel,
                      rala_kernel_backward=backward_kernel).to(DEVICE).train()
        x = torch.randn(1, 3, 32, 40, device=DEVICE)
        backward = mock.Mock(wraps=fused_kernels.rala_backward)
        with mock.patch.object(fused_kernels, 'rala_backward', backward):
            weighted_sum(model(x)).backward()
        assert backward.call_count == (4 if backward_kernel else 0)
        results.append([p.grad for p in model.parameters()])
    for *fused, pytorch in zip(*results):
        for grad in fused:
            assert (grad - pytorch).abs().max() <= 1e-5 * max(1., pytorch.abs().max().item())


@pytest.mark.parametrize('backward_kernels', [True, False])
def test_amp_training_takes_the_kernels_with_half_inputs(kernel_on_this_device, fused_kernels,
                                                         backward_kernels):
    half = torch.float16 if DEVICE == 'cuda' else torch.bfloat16
    torch.manual_seed(0)
    attn = RALAttention(64, num_heads=2).to(DEVICE)
    attn.kernel_backward = backward_kernels
    rope = RoPE(32).to(DEVICE)
    x = torch.randn(1, 64, 6, 7, device=DEVICE, requires_grad=True)
    forward = mock.Mock(wraps=ops.rala_triton)
    backward = mock.Mock(wraps=fused_kernels.rala_backward)
    with mock.patch('ravlt_dense.ops.rala_triton', forward), \
            mock.patch.object(fused_kernels, 'rala_backward', backward), \
            torch.autocast(DEVICE, dtype=half):
        amp = attention_gradients(attn, x, rope)
    assert forward.call_args.args[0].dtype == half
    assert backward.call_count == int(backward_kernels)
    attn.attn_impl = 'reference'
    expected = attention_gradients(attn, x, rope)
    for a, b in zip(amp, expected):
        assert torch.isfinite(a).all()
        assert (a.float() - b).abs().max() <= 5e-2 * b.abs().max()


def test_a_backward_the_device_cannot_run_falls_back_to_autograd(kernel_on_this_device,
                                                                 fused_kernels):
    from triton.runtime.errors import OutOfResources
    qkv, views = head_views(1, 2, 6, 7, 32)
    grad = torch.randn(1, 2, 42, 32, device=DEVICE)
    failing = mock.Mock(side_effect=OutOfResources(120000, 101376, 'shared memory'))
    with mock.patch.object(fused_kernels, 'rala_backward', failing):
        with pytest.warns(UserWarning, match=r'cannot run for .*head dim 32, torch.float32, '
                          r'backward: OutOfResources'):
            _, grads = gradients(kernel(6, 7), qkv, views, grad)
        _, again = gradients(kernel(6, 7), qkv, views, grad)  # no second try, no warning
    assert failing.call_count == 1
    _, expected = gradients(reference(6, 7), qkv, views, grad)
    assert max(worst(grads.unbind(1), expected.unbind(1))) <= 1e-5
    assert torch.equal(grads, again)
