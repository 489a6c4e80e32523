"""ravlt_dense.analysis.flops: both FLOP counters against hand counts of a RAVLT block."""
import pytest
import torch

from conftest import TINY_ARCH
from ravlt_dense.analysis import block_flops, module_flops, traced_flops
from ravlt_dense.models.backbones.ravlt import RAVLT, RAVLTBlock, RoPE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class OneBlock(torch.nn.Module):
    """A block with its stage's RoPE, callable with one tensor (as the counters need)."""

    def __init__(self, attn_type, impl, dim=32, heads=2):
        super().__init__()
        self.block = RAVLTBlock(dim, heads, 3.5, attn_type, attn_impl=impl)
        self.rope = RoPE(dim // heads)

    def forward(self, x):
        return self.block(x, self.rope)


@pytest.mark.parametrize('attn_type', ['rala', 'softmax'])
@pytest.mark.parametrize('impl', ['fast', 'reference'])
def test_block_flops_equal_hand_count(attn_type, impl):
    dim, heads, h, w = 32, 2, 7, 6
    block = OneBlock(attn_type, impl, dim, heads).eval()
    x = torch.randn(1, dim, h, w)
    hand = block_flops(attn_type, dim, heads, h, w, mlp_ratio=3.5, impl=impl)
    assert traced_flops(block, (x, ))['total'] == hand['full']
    assert module_flops(block, (x, ))['total'] == hand['modules']
    assert hand['full'] > hand['modules']


def test_modules_only_count_is_full_count_without_attention_products():
    model = RAVLT(TINY_ARCH).eval()
    x = torch.randn(1, 3, 64, 96)
    full = traced_flops(model, (x, ))
    assert full['matmul'] > 0
    assert module_flops(model, (x, ))['total'] == pytest.approx(full['total'] - full['matmul'])
