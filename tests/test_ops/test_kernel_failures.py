"""What a kernel failure does: a GPU or triton the kernels do not support falls back to PyTorch
for that configuration only (warned); a bug in them raises in the tests (``ops.STRICT``) and is
warned and worked around for users; the interpreter's variable stays out of tool subprocesses.
"""
from pathlib import Path
from unittest import mock

import pytest
import torch

from ravlt_dense import ops
from ravlt_dense.models.backbones.ravlt import RALAttention, RoPE

from conftest import run_tool

pytestmark = pytest.mark.gpu

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def test_tool_subprocesses_do_not_inherit_the_interpreter_variable():
    # the environment pytest was started with, before any conftest changed os.environ
    start = dict(item.split('=', 1) for item in
                 Path('/proc/self/environ').read_text().split('\0') if '=' in item)
    proc = run_tool(['-c', 'import os; print(os.environ.get("TRITON_INTERPRET"))'])
    assert proc.stdout.strip() == str(start.get('TRITON_INTERPRET'))


def attention(dim, heads):
    torch.manual_seed(0)
    return RALAttention(dim, heads).to(DEVICE).eval(), RoPE(dim // heads).to(DEVICE)


def compilation_error():
    from triton.compiler.errors import CompilationError
    return CompilationError('def kernel(): ...', None, "NameError('tl.dott')")


def failing_for(head_dim, error, kernels):
    """rala_gated_ raising ``error`` for q of ``head_dim`` channels, running otherwise."""
    real = kernels.rala_gated_

    def gated(q, *args):
        if q.shape[-1] == head_dim:
            raise error
        return real(q, *args)
    return mock.Mock(side_effect=gated)


@pytest.mark.usefixtures('fused_kernels')
def test_a_bug_in_a_kernel_raises_in_the_tests(kernel_on_this_device, fused_kernels):
    attn, rope = attention(64, 2)
    x = torch.randn(1, 64, 6, 7, device=DEVICE)
    with torch.no_grad(), pytest.raises(Exception, match=r"NameError\('tl.dott'\)"), \
            mock.patch.object(fused_kernels, 'rala_gated_', failing_for(32, compilation_error(),
                                                                         fused_kernels)):
        attn(x, rope)
    assert not ops._failed


@pytest.mark.usefixtures('fused_kernels')
def test_for_users_a_bug_warns_and_only_its_configuration_falls_back(kernel_on_this_device,
                                                                     fused_kernels):
    from triton.runtime.errors import OutOfResources
    failing = {32: compilation_error(), 64: OutOfResources(99000, 65536, 'shared memory')}
    x = torch.randn(1, 64, 6, 7, device=DEVICE)
    for head_dim, error in failing.items():
        attn, rope = attention(64, 64 // head_dim)
        other, other_rope = attention(64, 64 // (96 - head_dim))  # head dim 64 resp. 32
        gated = failing_for(head_dim, error, fused_kernels)
        with torch.no_grad(), mock.patch.object(ops, 'STRICT', False), \
                mock.patch.dict(ops._failed, clear=True), \
                mock.patch.object(fused_kernels, 'rala_gated_', gated):
            with pytest.warns(UserWarning, match=rf'head dim {head_dim}, torch.float32, '
                              rf'forward \+ epilogue: {type(error).__name__}'):
                out = attn(x, rope)
            attn(x, rope)
            assert gated.call_count == 1  # this configuration: remembered
            other(x, other_rope)
            other(x, other_rope)
            assert gated.call_count == 3  # the other head dim still takes the kernels
        attn.attn_impl = 'reference'
        with torch.no_grad():
            expected = attn(x, rope)
        assert (out - expected).abs().max() <= 1e-5 * max(1., expected.abs().max().item())


def test_a_bug_in_the_kernel_module_raises_on_import_in_the_tests(kernel_on_this_device):
    attn, rope = attention(64, 2)
    x = torch.randn(1, 64, 6, 7, device=DEVICE)
    broken = mock.Mock(side_effect=NameError("name 'tl' is not defined"))
    with torch.no_grad(), mock.patch('ravlt_dense.ops.importlib.import_module', broken):
        with pytest.raises(NameError, match="name 'tl' is not defined"):
            attn(x, rope)
        with mock.patch.object(ops, 'STRICT', False), \
                pytest.warns(UserWarning, match=r'cannot run for every device: NameError'):
            out = attn(x, rope)
    attn.use_kernel = False
    with torch.no_grad():
        assert torch.equal(out, attn(x, rope))


@pytest.mark.usefixtures('fused_kernels')
def test_running_out_of_memory_does_not_give_the_kernels_up(kernel_on_this_device,
                                                           fused_kernels):
    attn, rope = attention(64, 2)
    x = torch.randn(1, 64, 6, 7, device=DEVICE)
    oom = mock.Mock(side_effect=torch.OutOfMemoryError('CUDA out of memory'))
    with torch.no_grad(), mock.patch.object(ops, 'STRICT', False), \
            mock.patch.object(fused_kernels, 'rala_gated_', oom):
        with pytest.raises(torch.OutOfMemoryError):
            attn(x, rope)
    assert not ops._failed
