"""Analysis helpers and tools: FLOP counters against hand counts, rank measures, and smoke runs
of tools/analysis/benchmark.py and rank_analysis.py on tiny sizes (structure, never timings)."""
import csv
import importlib.util
import math
import os.path as osp
import sys

import pytest
import torch

from ravlt_dense.analysis import block_flops, module_flops, traced_flops
from ravlt_dense.analysis import bench
from ravlt_dense.analysis.rank import (attention_variants, energy_rank, numerical_rank)
from ravlt_dense.models.backbones.ravlt import (RAVLT, RAVLTBlock, RoPE, rala_reference,
                                                rope_tables)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))

TINY = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
            mlp_ratio=3.5, layer_scale_init=[1., 1., 1., 1.])


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
    model = RAVLT(TINY).eval()
    x = torch.randn(1, 3, 64, 96)
    full = traced_flops(model, (x, ))
    assert full['matmul'] > 0
    assert module_flops(model, (x, ))['total'] == pytest.approx(full['total'] - full['matmul'])


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
    torch.testing.assert_close(res['rala']['out'], rala_reference(q, k, v, sin, cos, d**-0.5))
    assert res['rala']['buffer'].shape == (b, h, d, d)
    assert res['softmax']['buffer'].shape == (b, h, n, n)
    # not a theorem, but robust: generic inputs give RALA a buffer rank at least the linear one's
    assert (numerical_rank(res['rala']['buffer']) >= numerical_rank(res['linear']['buffer'])).all()
    alpha = res['rala']['alpha']
    torch.testing.assert_close(alpha.sum(-1), torch.ones(b, h, 1, dtype=torch.float64))


def test_scaling_slopes_and_table():
    rows = [dict(model=m, description=m, pixels=p, latency_ms=c * p**k, input=f'{p}', batch=1,
                 params_M=1.0, latency_q1_ms=1, latency_q3_ms=2, latency_min_ms=1,
                 latency_max_ms=2, images_per_s=1.0, peak_mem_MB=1.0, device='cpu',
                 dtype='float32')
            for m, c, k in (('lin', 2.0, 1), ('quad', 1e-3, 2)) for p in (1e4, 4e4, 1.6e5)]
    slopes = bench.scaling_slopes(rows, 'latency_ms')
    assert slopes['lin'] == pytest.approx(1) and slopes['quad'] == pytest.approx(2)
    table = bench.markdown_table(rows)
    assert table.count('\n') == len(rows) + 1


def test_measure_counts_flops_both_ways():
    row, = bench.measure(dict(name='ravlt_t', level='backbone', size=(64, 96), batch=2,
                              device='cpu', dtype='float32', warmup=1, repeat=1, flops=True))
    assert row['params_M'] == pytest.approx(13.347328)
    assert row['flops_full_G'] > row['flops_modules_G'] > 0
    # the difference is exactly the attention products
    assert row['flops_full_G'] - row['flops_modules_G'] == pytest.approx(
        row['flops_attn_products_G'], rel=1e-6)
    assert row['images_per_s'] == pytest.approx(2 / (row['latency_ms'] / 1e3))


def test_benchmark_tool_smoke(tmp_path):
    import benchmark
    # one mmdet backbone when the stack is complete (each row is a fresh process: keep it short)
    other = 'r50' if bench.missing_requirement('r50', 'backbone') is None else 'ravlt_t_rala'
    models = ['ravlt_t', other]
    absent = 'convnext_t' if importlib.util.find_spec('mmpretrain') is None else None
    rows = benchmark.main(['--models', *models, *([absent] if absent else []), '--sizes', '64',
                           '96', '--repeat', '2', '--warmup', '1', '--no-flops',
                           '--work-dir', str(tmp_path)])
    assert [r['model'] for r in rows] == [m for m in models for _ in range(2)]
    with open(tmp_path / 'benchmark.csv') as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows)
    for r in csv_rows:
        assert r['note'] == '', r['note']
        assert r['device'].startswith('cpu')
        for key in ('params_M', 'latency_ms', 'latency_min_ms', 'images_per_s'):
            value = float(r[key])
            assert math.isfinite(value) and value > 0, (r['model'], key, value)
        assert float(r['latency_min_ms']) <= float(r['latency_ms']) <= float(r['latency_max_ms'])
        assert math.isfinite(float(r['peak_mem_MB'])) and float(r['peak_mem_MB']) >= 0
    md = (tmp_path / 'benchmark.md').read_text()
    for m in models:
        assert bench.description(m, 'backbone') in md
    if absent:
        assert f'skipped `{absent}`' in md
    if importlib.util.find_spec('matplotlib'):
        assert (tmp_path / 'scaling.png').stat().st_size > 0
    # re-rendering from the CSV measures nothing and gives the same table rows
    again = benchmark.main(['--from-csv', str(tmp_path / 'benchmark.csv'),
                            '--work-dir', str(tmp_path / 'again')])
    assert [r['model'] for r in again] == [r['model'] for r in rows]
    assert bench.markdown_table(again) == bench.markdown_table(rows)


def test_rank_tool_smoke(tmp_path):
    import rank_analysis
    summary, _ = rank_analysis.main(['--arch', 't', '--size', '64', '--num-images', '1',
                                     '--stages', '2', '3', '--work-dir', str(tmp_path)])
    model = RAVLT('t')
    assert len(summary) == len(model.layers[2].blocks) + len(model.layers[3].blocks)
    for entry in summary.values():
        meta = entry['meta']
        cap_out = min(meta['tokens'], meta['channels'])
        for variant in ('linear', 'linear_rope', 'rala', 'softmax'):
            e = entry[variant]
            assert 1 <= e['out_rank'] <= cap_out and 1 <= e['gated_rank'] <= cap_out
            assert 1 <= e['out_energy_rank'] <= e['out_rank']
            if variant != 'softmax':
                assert 1 <= e['buffer_rank'] <= meta['head_dim']
    for name in ('rank_table.md', 'rank_per_head.csv'):
        assert (tmp_path / name).stat().st_size > 0
