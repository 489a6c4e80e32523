"""ravlt_dense.analysis.bench: one measurement and the report's scaling fit (structure, never
timings)."""
import pytest

from ravlt_dense.analysis import bench


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
