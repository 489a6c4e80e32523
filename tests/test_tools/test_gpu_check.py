"""tools/analysis/gpu_check.py rehearsed on CPU with its quickest settings (64x96 inputs): the
checks pass, the tables carry every column, and failures (a missing package, a time-out, the
budget) become rows that say why instead of ending the run."""
import csv
import os
import subprocess
import sys
import importlib.util

import torch

from conftest import REPO, TINY_ARCH, load_script

gpu_check = load_script('tools/analysis/gpu_check.py')


def run_check(work_dir, *args, timeout=300):
    proc = subprocess.run([sys.executable, 'tools/analysis/gpu_check.py', '--device', 'cpu',
                           '--quick', '--dtypes', 'float32', '--work-dir', str(work_dir), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def read_csv(path):
    with open(path) as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_quick_run_on_cpu_writes_tables_and_passes_checks(tmp_path):
    run_check(tmp_path, '--models', 'ravlt_t', 'ravlt_s_rala', 'swin_t', 'convnext_t')
    columns, checks = read_csv(tmp_path / 'gpu_check_checks.csv')
    assert tuple(columns) == gpu_check.CHECK_COLUMNS
    assert [c['detail'] for c in checks if c['result'] != 'pass'] == []
    names = {(c['check'], c['model']) for c in checks}
    for model in ('cpu_test_arch', 'cpu_test_arch_rala', 'ravlt_t', 'ravlt_s_rala'):
        assert ('fast == reference, outputs (fp32)', model) in names
        assert ('fast == reference, gradients (fp32)', model) in names
    assert ('fp16 AMP training steps (GradScaler, AdamW) finite', 'ravlt_s_rala') in names
    # the CPU tests' tolerances, not looser ones
    limits = {c['model']: float(c['limit']) for c in checks if c['check'].endswith('(fp32)')
              and c['check'].startswith('fast == reference, outputs')}
    assert limits['cpu_test_arch'] == 2e-5

    columns, perf = read_csv(tmp_path / 'gpu_check.csv')
    assert tuple(columns) == gpu_check.PERF_COLUMNS
    rows = {(r['model'], r['impl']): r for r in perf}
    assert set(rows) == {('ravlt_t', 'fast'), ('ravlt_s_rala', 'fast'), ('swin_t', 'fast'),
                         ('convnext_t', 'fast'), ('ravlt_t', 'reference'),
                         ('ravlt_s_rala', 'reference')}
    for key in (('ravlt_t', 'fast'), ('ravlt_t', 'reference'), ('swin_t', 'fast')):
        row = rows[key]
        assert row['note'] == ''
        for metric in ('latency_b1_ms', 'throughput_img_s', 'train_step_ms'):
            assert float(row[metric]) > 0, (key, metric)
    assert rows[('swin_t', 'fast')]['source'] == 'mmdet'  # the mm implementation where it imports
    convnext = rows[('convnext_t', 'fast')]
    if importlib.util.find_spec('mmpretrain') is None and importlib.util.find_spec('timm') is None:
        assert convnext['note'] == ('ModuleNotFoundError: convnext_t: neither mmpretrain nor timm '
                                    'is installed')

    report = (tmp_path / 'gpu_check.md').read_text()
    assert f'torch {torch.__version__}' in report and '# GPU check on CPU' in report
    assert '| ConvNeXt-T |' in report and 'Throughput against Swin-T' in report


def test_time_out_and_budget_become_rows(tmp_path):
    # a 1 s limit is shorter than the worker's start-up: the case times out, the run goes on
    run_check(tmp_path / 'timeout', '--models', 'ravlt_t', '--no-checks', '--no-reference',
              '--case-timeout', '1')
    _, perf = read_csv(tmp_path / 'timeout' / 'gpu_check.csv')
    assert [r['note'] for r in perf] == ['timed out after 1 s']
    run_check(tmp_path / 'budget', '--models', 'ravlt_t', '--budget', '0')
    _, checks = read_csv(tmp_path / 'budget' / 'gpu_check_checks.csv')
    assert checks and all(c['result'] == 'not run' and 'budget was spent' in c['detail']
                          for c in checks)
    _, perf = read_csv(tmp_path / 'budget' / 'gpu_check.csv')
    assert perf and all('not run: the 0 s budget was spent' == r['note'] for r in perf)


def test_default_plan_puts_checks_and_the_main_table_first():
    cases = gpu_check.plan(gpu_check.parse_args(['--device', 'cpu']))
    kinds = [(c['kind'], c.get('mode'), c.get('impl'), tuple(c.get('size', ()))) for c in cases]
    assert [k[0] for k in kinds[:8]] == ['equal'] * 2 + ['amp'] * 2 + ['equal'] * 4
    main = ('perf', 'eager', 'fast', (800, 1216))
    assert kinds[8:26] == [main] * 18  # 6 models x 3 dtypes
    assert kinds[26:30] == [('perf', 'compiled', 'fast', (800, 1216))] * 4
    assert kinds[30:48] == [('perf', 'eager', 'fast', (512, 512))] * 18
    assert kinds[48:] == [('perf', 'eager', 'reference', (800, 1216))] * 12
    assert [c['model'] for c in cases[26:30]] == ['ravlt_s', 'ravlt_s_rala', 'swin_t',
                                                  'convnext_t']


def test_cpu_test_case_is_the_suites_tiny_arch():
    # gpu_check repeats the CPU tests' case on the GPU: it must stay the same model
    assert gpu_check.CPU_TEST_ARCH == TINY_ARCH
