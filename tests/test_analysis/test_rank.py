"""ravlt_dense.tools.analysis.rank: rank measures, and the attention variants computed from one
layer's q, k, v."""
import pytest
import torch

from ravlt_dense.models.backbones.ravlt import RoPE, apply_rope, rala_reference, rope_tables
from ravlt_dense.tools.analysis.rank import attention_variants, energy_rank, numerical_rank


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_numerical_rank_detects_known_rank():
    a = torch.randn(4, 40, 3) @ torch.randn(4, 3, 25)  # rank 3, batched
    assert numerical_rank(a).tolist() == [3] * 4
    assert numerical_rank(torch.eye(7)) == 7
    assert (energy_rank(a) <= 3).all()
    # four equal singular values: 3 of them hold 75 % of the energy
    assert energy_rank(torch.eye(4), energy=0.75) == 3
    assert energy_rank(torch.eye(4), energy=0.76) == 4
    assert energy_rank(torch.diag(torch.tensor([10., 1e-3, 1e-3]))) == 1


def test_rala_variant_is_the_model_formula_and_buffer_rank_not_below_linear():
    b, h, n, d = 2, 2, 48, 16
    q, k, v = (torch.randn(b, h, n, d, dtype=torch.float64) for _ in range(3))
    angle = RoPE(d).angle.double()
    sin, cos = rope_tables(angle, 6, 8)
    res = attention_variants(q, k, v, sin, cos, d**-0.5)
    rala = res['rala']
    torch.testing.assert_close(rala['out'], rala_reference(q, k, v, sin, cos, d**-0.5))
    assert rala['buffer'].shape == (b, h, d, d)
    # the buffer and key weights are the model's: with rala_fast's normaliser (alpha^T phi(k))
    # they give the model's output again
    phi_q, phi_k = (torch.nn.functional.elu(t) + 1 for t in (q, k))
    z = 1 / (phi_q @ (rala['alpha'] @ phi_k).transpose(-1, -2) + 1e-6)
    torch.testing.assert_close((apply_rope(phi_q, sin, cos) @ rala['buffer']) * z, rala['out'])
    assert res['softmax']['buffer'].shape == (b, h, n, n)
    # not a theorem, but robust: generic inputs give RALA a buffer rank at least the linear one's
    assert (numerical_rank(res['rala']['buffer']) >= numerical_rank(res['linear']['buffer'])).all()
    alpha = res['rala']['alpha']
    torch.testing.assert_close(alpha.sum(-1), torch.ones(b, h, 1, dtype=torch.float64))
