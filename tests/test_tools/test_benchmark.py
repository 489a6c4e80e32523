"""tools/analysis/benchmark.py on tiny shapes: the rows, CSVs, Markdown and plot it writes, and
a run cut by its time limits keeping what it measured (structure, never timings)."""
import csv
import importlib.util
import math

from conftest import load_script
from ravlt_dense.analysis import models, report

benchmark = load_script('tools/analysis/benchmark.py')
# Swin-T, the baseline of the ratios, where the stack is complete (mmdet with mmcv's ops)
SWIN = models.missing_requirement('swin_t', 'backbone') is None


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_benchmark_tool_smoke(tmp_path):
    # each case is a fresh process: keep it short
    names = ['ravlt_t', 'swin_t' if SWIN else 'ravlt_t_rala']
    absent = 'convnext_t' if importlib.util.find_spec('mmpretrain') is None else None
    rows = benchmark.main(['--models', *names, *([absent] if absent else []), '--shape', '64',
                           '64', '--shape', '64', '96', '--batch', '1', '2', '--train-batch', '1',
                           '--repeat', '2', '--warmup', '1', '--no-flops',
                           '--work-dir', str(tmp_path)])
    # per model and shape: a training step, then inference at each batch
    assert [(r['model'], r['input'], r['task'], r['batch']) for r in rows] == [
        (m, s, task, b) for m in names for s in ('64x64', '64x96')
        for task, b in (('train', 1), ('inference', 1), ('inference', 2))]
    csv_rows = read_csv(tmp_path / 'benchmark.csv')
    assert len(csv_rows) == len(rows)
    for r in csv_rows:
        assert r['note'] == '', r['note']
        assert r['device'].startswith('cpu')
        assert r['path'] == ('fast' if r['model'].startswith('ravlt') else '')
        for key in ('params_M', 'latency_ms', 'latency_min_ms', 'images_per_s'):
            value = float(r[key])
            assert math.isfinite(value) and value > 0, (r['model'], key, value)
        assert float(r['latency_min_ms']) <= float(r['latency_ms']) <= float(r['latency_max_ms'])
        assert math.isfinite(float(r['peak_mem_MB'])) and float(r['peak_mem_MB']) >= 0
    md = (tmp_path / 'benchmark.md').read_text()
    for m in names:
        assert models.description(m, 'backbone') in md
    if absent:
        assert f'skipped `{absent}`' in md
    summary = read_csv(tmp_path / 'summary.csv')
    assert [(s['model'], s['input']) for s in summary] == [(m, s) for m in names
                                                           for s in ('64x64', '64x96')]
    if SWIN:  # the ratio table against Swin-T, Swin-T's own ratios 1
        assert '## Against Swin-T (mmdet) (same run)' in md
        assert {s['inference_ratio'] for s in summary if s['model'] == 'swin_t'} == {'1.0'}
        assert all(float(s['train_ratio']) > 0 for s in summary)
    if importlib.util.find_spec('matplotlib'):
        assert (tmp_path / 'scaling.png').stat().st_size > 0
    # re-rendering from the CSV measures nothing and gives the same tables
    again = benchmark.main(['--from-csv', str(tmp_path / 'benchmark.csv'),
                            '--work-dir', str(tmp_path / 'again')])
    assert [r['model'] for r in again] == [r['model'] for r in rows]
    assert report.markdown_table(again) == report.markdown_table(rows)
    assert read_csv(tmp_path / 'again' / 'summary.csv') == summary


def test_time_limits_become_rows_and_the_budget_ends_the_run(tmp_path):
    # a 1 s limit is shorter than the child's start-up: the case stops, the run goes on
    rows = benchmark.main(['--models', 'ravlt_t', 'ravlt_t_rala', '--shape', '64', '64',
                           '--no-flops', '--timeout', '1', '--work-dir', str(tmp_path / 'a')])
    assert [(r['model'], r['note']) for r in rows] == [
        (m, 'stopped: timed out after 1 s') for m in ('ravlt_t', 'ravlt_t_rala')]
    # a spent budget: every case listed as not run, the report still written
    rows = benchmark.main(['--preset', 'gpu-session', '--device', 'cpu', '--dtype', 'float32',
                           '--models', 'ravlt_t', 'swin_t', '--shape', '64', '64', '--budget',
                           '0', '--work-dir', str(tmp_path / 'b')])
    # eager on the fast path, then without the kernels (RAVLT only); compiled in the same order
    eager = [('ravlt_t', 'fast')] + [('swin_t', '')] * SWIN + [('ravlt_t', 'fast-nokernel')]
    assert [(r['model'], r['path'], r['mode']) for r in rows] == [
        (*case, mode) for mode in ('eager', 'compiled') for case in eager]
    assert {r['note'] for r in rows} == {'not run: the 0 s budget was spent'}
    md = (tmp_path / 'b' / 'benchmark.md').read_text()
    assert 'not run: the 0 s budget was spent' in md


def test_compile_switch_times_the_compiled_model_after_the_eager_cases(tmp_path):
    # dynamo's 'eager' backend: the compile path without inductor's minutes of code generation
    rows = benchmark.main(['--models', 'ravlt_t', '--shape', '64', '64', '--repeat', '1',
                           '--no-flops', '--compile', 'eager', '--work-dir', str(tmp_path)])
    assert [(r['model'], r['mode']) for r in rows] == [('ravlt_t', 'eager'),
                                                       ('ravlt_t', 'compiled')]
    compiled = rows[1]
    assert compiled['note'] == '' and compiled['compile_s'] > 0
    assert compiled['latency_ms'] > 0 and compiled['speedup_vs_eager'] > 0
    assert "the eager model's speed, same process" in (tmp_path / 'benchmark.md').read_text()
