"""The fused RALA kernels' forward (``ravlt_dense.ops``) against the paper's formulas, and
where the backbone takes them.

Without a GPU the kernels run in Triton's interpreter (NumPy on the CPU; the ``fused_kernels``
fixture of conftest switches it on for this process's kernel module only); on a machine with
CUDA the same tests run the compiled kernels on the GPU (``python -m pytest tests -m gpu``).
"""
from unittest import mock

import pytest
import torch

from ravlt_dense import ops
from ravlt_dense.models.backbones.ravlt import RAVLT, RALAttention, RoPE, rala_reference

from conftest import TINY_ARCH as TINY
from conftest import weighted_sum

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures('fused_kernels')]

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def head_views(batch, heads, height, width, head_dim, dtype=torch.float32, gain=1.0):
    """q, k, v as RALAttention makes them: (B, heads, N, d) views of one channels-last map."""
    qkv = torch.randn(batch, 3 * heads * head_dim, height, width, device=DEVICE) * gain
    qkv = qkv.to(dtype).contiguous(memory_format=torch.channels_last)
    attn = RALAttention(heads * head_dim, heads)
    return [attn._split_heads(t) for t in qkv.chunk(3, dim=1)]


def reference(q, k, v, height, width):
    head_dim = q.shape[-1]
    rope = RoPE(head_dim).to(q.device)
    return rala_reference(q.float(), k.float(), v.float(), *rope(height, width), head_dim**-0.5)


def run_kernel(q, k, v, height, width, **gated):
    rotation = RoPE(q.shape[-1]).to(q.device).cached(height, width)
    return ops.rala_triton(q, k, v, rotation, q.shape[-1]**-0.5, **gated)


@pytest.mark.parametrize('batch, heads, height, width, head_dim', [
    (2, 2, 7, 9, 64),     # one partial block of tokens
    (1, 1, 17, 23, 64),   # several chunks, the last with an empty block (merge across chunks)
    (1, 3, 13, 11, 96),   # RAVLT-B/L's head dim: padded to 128 channels in the kernel
    (2, 1, 5, 6, 32),     # the tiny test arch's head dims
])
def test_kernel_matches_reference_fp32(batch, heads, height, width, head_dim):
    q, k, v = head_views(batch, heads, height, width, head_dim)
    out = run_kernel(q, k, v, height, width)
    ref = reference(q, k, v, height, width)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max() <= 1e-5 * max(1., ref.abs().max().item())
    assert ref.abs().max() > 0.1


def test_kernel_merges_chunks_whose_softmax_maxima_differ_by_far():
    # logits of hundreds: exp overflows unless each chunk is taken relative to its max and the
    # chunks are rescaled to the global one
    q, k, v = head_views(1, 1, 20, 20, 64, gain=6.0)
    with torch.no_grad():
        k[..., :50, :] += 8.0  # the first chunk holds the largest keys
    out = run_kernel(q, k, v, 20, 20)
    ref = reference(q, k, v, 20, 20)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 1e-5 * max(1., ref.abs().max().item())


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_kernel_half_inputs_computed_in_fp32(dtype):
    q, k, v = head_views(2, 2, 9, 14, 64, dtype=dtype)
    out = run_kernel(q, k, v, 9, 14)
    ref = reference(q, k, v, 9, 14)  # the same half inputs, all in fp32
    assert out.dtype == dtype
    # the kernel differs from fp32 by the output's rounding (and TF32 products on a GPU)
    assert torch.allclose(out.float(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())


def test_kernel_output_is_laid_out_like_the_head_views():
    q, k, v = head_views(2, 2, 6, 7, 32)
    out = run_kernel(q, k, v, 6, 7)
    assert out.stride() == q.new_empty(2, 42, 2, 32).transpose(1, 2).stride()


def test_kernel_epilogue_adds_the_local_branch_and_applies_the_gate():
    q, k, v = head_views(2, 2, 9, 7, 32)
    lepe, gate = head_views(2, 2, 9, 7, 32)[:2]
    expected = (lepe + reference(q, k, v, 9, 7)) * gate
    out = run_kernel(q, k, v, 9, 7, lepe=lepe, gate=gate)
    assert out is lepe  # written in place: no new map
    assert (out - expected).abs().max() <= 1e-5 * max(1., expected.abs().max().item())


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_kernel_epilogue_in_half_precision(dtype):
    q, k, v = head_views(1, 2, 8, 11, 64, dtype=dtype)
    lepe, gate = head_views(1, 2, 8, 11, 64, dtype=dtype)[:2]
    expected = (lepe.float() + reference(q, k, v, 8, 11)) * gate.float()
    out = run_kernel(q, k, v, 8, 11, lepe=lepe, gate=gate)
    assert out.dtype == dtype
    assert torch.allclose(out.float(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())


def test_attention_on_a_channels_first_map_takes_the_kernel(kernel_on_this_device):
    # RALAttention on its own, given an NCHW map: q, k, v, lepe and o are other strides
    attn = RALAttention(64, num_heads=2).to(DEVICE).eval()
    rope = RoPE(32).to(DEVICE)
    x = torch.randn(2, 64, 9, 13, device=DEVICE)
    kernel = mock.Mock(wraps=ops.rala_triton)
    with torch.no_grad(), mock.patch('ravlt_dense.ops.rala_triton', kernel):
        fused = attn(x, rope)
        attn.attn_impl = 'reference'
        ref = attn(x, rope)
    assert kernel.call_count == 1
    assert (fused - ref).abs().max() <= 1e-5 * max(1., ref.abs().max().item())


def test_kernel_rejects_inputs_that_do_not_fit():
    q, k, v = head_views(1, 1, 6, 7, 32)
    rotation = RoPE(32).cached(7, 7)
    with pytest.raises(ValueError, match=r'rotation must be \(42, 16\) complex64 \(RoPE.cached '
                       r'of the map\) or its \(42, 32\) float32 table \(rope_table\), got '
                       r'\(49, 16\) torch.complex64'):
        ops.rala_triton(q, k, v, rotation, 0.1)
    with pytest.raises(ValueError, match='head dim divisible by 4'):
        ops.rala_triton(q[..., :30], k, v, rotation, 0.1)
    with pytest.raises(ValueError, match='lepe and gate go together'):
        run_kernel(q, k, v, 6, 7, lepe=v.clone())


def test_backbone_takes_the_kernel_for_inference_and_matches_reference(kernel_on_this_device):
    model = RAVLT(TINY, attn_types=('rala', ) * 4).to(DEVICE).eval()
    x = torch.randn(1, 3, 80, 72, device=DEVICE)
    kernel = mock.Mock(wraps=ops.rala_triton)
    with torch.no_grad(), mock.patch('ravlt_dense.ops.rala_triton', kernel):
        fused = model(x)
        assert kernel.call_count == sum(TINY['depths'])
        ref = model.set_attn_impl('reference')(x)
        model.set_attn_impl('fast').set_rala_kernel(False)(x)
        assert kernel.call_count == sum(TINY['depths'])  # switched off: no further calls
    for a, b in zip(fused, ref):
        assert (a - b).abs().max() <= 2e-5


@pytest.mark.parametrize('opt_in', [False, True])
def test_training_takes_the_backward_kernels_only_when_opted_in(kernel_on_this_device,
                                                                fused_kernels, opt_in):
    # by default the forward kernels with PyTorch's autograd for the gradients (the backward
    # kernels have not run on a GPU yet); rala_kernel_backward=True: the backward kernels too
    torch.manual_seed(0)
    model = RAVLT(TINY, attn_types=('rala', ) * 4,
                  **(dict(rala_kernel_backward=True) if opt_in else {})).to(DEVICE).train()
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    forward = mock.Mock(wraps=ops.rala_triton)
    backward = mock.Mock(wraps=fused_kernels.rala_backward)
    with mock.patch('ravlt_dense.ops.rala_triton', forward), \
            mock.patch.object(fused_kernels, 'rala_backward', backward):
        weighted_sum(model(x)).backward()
    blocks = sum(TINY['depths'])
    assert forward.call_count == blocks and backward.call_count == (blocks if opt_in else 0)
    assert all('lepe' not in call.kwargs for call in forward.call_args_list)  # no epilogue
    fused = [p.grad for p in model.parameters()]
    assert fused[0].abs().sum() > 0
    model.zero_grad()
    weighted_sum(model.set_rala_kernel(False)(x)).backward()  # PyTorch ops throughout
    assert forward.call_count == blocks
    for a, b in zip(fused, [p.grad for p in model.parameters()]):
        assert (a - b).abs().max() <= 1e-5 * max(1., b.abs().max().item())


def test_set_rala_kernel_switches_the_backward_kernels_too():
    model = RAVLT(TINY, attn_types=('rala', ) * 4)
    attns = [m for m in model.modules() if isinstance(m, RALAttention)]
    assert all(a.use_kernel and not a.kernel_backward for a in attns)  # the defaults
    model.set_rala_kernel(True, backward=True)
    assert all(a.use_kernel and a.kernel_backward for a in attns)
    model.set_rala_kernel(False)  # the backward setting is kept for when the kernels return
    assert all(not a.use_kernel and a.kernel_backward for a in attns)
    model.set_rala_kernel(True, backward=False)
    assert all(a.use_kernel and not a.kernel_backward for a in attns)


def test_kernel_applies_to_recent_cuda_gpus_with_triton():
    assert not ops.rala_kernel_applies(torch.zeros(1))
    cuda_like = mock.Mock(is_cuda=True, device=torch.device('cuda', 0))
    with mock.patch.object(ops, '_capable', return_value=True):
        assert ops.rala_kernel_applies(cuda_like)
        with mock.patch.object(ops, 'triton_available', return_value=False):
            assert not ops.rala_kernel_applies(cuda_like)
        with mock.patch.dict(ops._failed, {'import': 'ImportError'}):
            assert not ops.rala_kernel_applies(cuda_like)
        with mock.patch.dict(ops._failed, {(torch.device('cuda', 0), 64, torch.float16,
                                            'forward'): 'OutOfResources'}):
            assert ops.rala_kernel_applies(cuda_like)  # one configuration: the others still try
    with mock.patch.object(ops, '_capable', return_value=False):  # pre-Ampere: no TF32
        assert not ops.rala_kernel_applies(cuda_like)


def pytorch_whole_map(model, x):
    """The model through PyTorch's ops on whole maps, the form a failed kernel falls back to
    (without it, inference on the CPU runs in bands of rows: equal only to rounding)."""
    with mock.patch('ravlt_dense.models.backbones.ravlt.runs_in_bands', return_value=False):
        return model(x)


def test_a_device_the_kernels_do_not_fit_falls_back_to_pytorch_once(kernel_on_this_device,
                                                                    fused_kernels):
    from triton.runtime.errors import OutOfResources
    model = RAVLT(TINY, attn_types=('rala', ) * 4).to(DEVICE).eval()
    x = torch.randn(1, 3, 64, 64, device=DEVICE)
    failing = mock.Mock(side_effect=OutOfResources(99000, 65536, 'shared memory'))
    with torch.no_grad(), mock.patch.object(fused_kernels, 'rala_gated_', failing):
        with pytest.warns(UserWarning, match=r"RALA's fused Triton kernel cannot run for "
                          r'.*head dim 8, torch.float32, forward \+ epilogue: OutOfResources.*'
                          r'PyTorch ops from now on'):
            out = model(x)
        again = model(x)
        assert failing.call_count == 1  # remembered (every block has head dim 8): no second try
        assert DEVICE in str(next(iter(ops._failed)))
        expected = pytorch_whole_map(model.set_rala_kernel(False), x)
    for a, b, c in zip(out, again, expected):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_a_triton_the_kernels_do_not_import_with_falls_back_too(kernel_on_this_device):
    model = RAVLT(TINY, attn_types=('rala', ) * 4).to(DEVICE).eval()
    x = torch.randn(1, 3, 64, 64, device=DEVICE)
    # None in sys.modules: importing the kernel module raises ImportError, as an old triton would
    with torch.no_grad(), mock.patch.dict('sys.modules', {'ravlt_dense.ops.rala_kernels': None}):
        with pytest.warns(UserWarning, match=r'cannot run for every device: '
                          r'(ImportError|ModuleNotFoundError)'):
            out = model(x)
        again = model(x)  # no kernels from now on: as with rala_kernel=False
        expected = model.set_rala_kernel(False)(x)
    for a, b, c in zip(out, again, expected):
        # (the first forward fell back inside its first attention, on whole maps; the stages
        # after it, knowing the kernels gone, took the CPU's inference bands: equal to rounding)
        assert (a - c).abs().max() <= 2e-5 and torch.equal(b, c)
