"""tools/analysis/benchmark.py on tiny sizes: the rows, CSV, Markdown and plot it writes
(structure, never timings)."""
import csv
import importlib.util
import math

from conftest import load_script
from ravlt_dense.analysis import bench


def test_benchmark_tool_smoke(tmp_path):
    benchmark = load_script('tools/analysis/benchmark.py')
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
