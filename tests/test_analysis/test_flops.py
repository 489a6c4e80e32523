"""ravlt_dense.tools.analysis.flops: both FLOP counters against hand counts of a RAVLT block."""
import pytest
import torch

from ravlt_dense.models.backbones.ravlt import RAVLT, RAVLTBlock, RoPE
from ravlt_dense.tools.analysis import module_flops, traced_flops

from conftest import TINY_ARCH


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


def hand_count(attn_type, impl, dim, heads, height, width, mlp_ratio=3.5):
    """MACs of one RAVLT block on a (1, dim, height, width) map, from its layers' shapes: 'modules'
    (convolutions and LayerNorms) and 'full' (with the attention's matrix products).

    RALA per head (N tokens, head dim d): the two d x d products k^T v and q kv cost 2 N d^2; the
    global-query logits q_bar k^T cost N d and the normaliser q (mean k)^T another N d. The fast
    path also forms the re-weighted key mean as alpha k (N d more; the reference takes a mean,
    which is element-wise). Softmax per head: q k^T and attn v, 2 N^2 d.
    """
    n, c, hidden, d = height * width, dim, int(dim * mlp_ratio), dim // heads
    convs = (9 * n * c                  # pos: 3x3 depth-wise conditional position encoding
             + 4 * c * c * n            # qkvo: 1x1, C -> 4C
             + 25 * n * c               # lepe: 5x5 depth-wise on v
             + c * c * n                # proj: 1x1, C -> C
             + c * hidden * n           # ffn.fc1
             + 9 * n * hidden           # ffn.dwconv 3x3 depth-wise
             + hidden * c * n)          # ffn.fc2
    modules = convs + 2 * 5 * n * c     # norm1, norm2 (affine LayerNorm: 5 per element)
    if attn_type == 'rala':
        products = heads * (2 * n * d * d + (3 if impl == 'fast' else 2) * n * d)
    else:
        products = heads * 2 * n * n * d
    return dict(modules=modules, full=modules + products)


@pytest.mark.parametrize('attn_type', ['rala', 'softmax'])
@pytest.mark.parametrize('impl', ['fast', 'reference'])
def test_block_flops_equal_hand_count(attn_type, impl):
    dim, heads, h, w = 32, 2, 7, 6
    block = OneBlock(attn_type, impl, dim, heads).eval()
    x = torch.randn(1, dim, h, w)
    hand = hand_count(attn_type, impl, dim, heads, h, w)
    assert traced_flops(block, (x, ))['total'] == hand['full']
    assert module_flops(block, (x, ))['total'] == hand['modules']
    assert hand['full'] > hand['modules']


def test_modules_only_count_is_full_count_without_attention_products():
    model = RAVLT(TINY_ARCH).eval()
    x = torch.randn(1, 3, 64, 96)
    full = traced_flops(model, (x, ))
    assert full['matmul'] > 0
    assert module_flops(model, (x, ))['total'] == pytest.approx(full['total'] - full['matmul'])
