"""The benchmark (ravlt_dense.tools.benchmark, command line tools/analysis/benchmark.py) on tiny
shapes: the rows, CSVs, Markdown and plot it writes, a run cut by its time limits keeping what
it measured; one case measured in-process (``case``), the competitors (``models``), what the
reports make of rows (``report``: the scaling fit, the ratios to Swin-T), and the presets, each
a valid run. Structure, never timings."""
import csv
import importlib.util
import math
import sys
import types

import pytest

from ravlt_dense.tools.benchmark import case, models, presets, report
from ravlt_dense.tools.benchmark import run as benchmark

from conftest import run_tool

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
    rows = benchmark.main(['--preset', 'cuda-detection', '--device', 'cpu', '--dtype', 'float32',
                           '--models', 'ravlt_t', 'swin_t', '--shape', '64', '64', '--budget',
                           '0', '--work-dir', str(tmp_path / 'b')])
    # eager on the fast path, then without the kernels (RAVLT only); compiled in the same order
    eager = [('ravlt_t', 'fast')] + [('swin_t', '')] * SWIN + [('ravlt_t', 'fast-nokernel')]
    assert [(r['model'], r['path'], r['mode']) for r in rows] == [
        (*case, mode) for mode in ('eager', 'compiled') for case in eager]
    assert {r['note'] for r in rows} == {'not run: the 0 s budget was spent'}
    md = (tmp_path / 'b' / 'benchmark.md').read_text()
    assert 'not run: the 0 s budget was spent' in md
    # the preset's question heads the report; its earlier name is the new one's alias
    assert f"Question (`--preset {presets.ALIASES['cuda-detection']}`)" in md


def test_the_csv_is_written_after_every_case(tmp_path, monkeypatch):
    # what each case finds on disk when it starts: the rows of the cases before it
    csv_path, found = tmp_path / 'benchmark.csv', []

    def case_reading_the_csv(spec, timeout, stopped_why=''):
        found.append(len(read_csv(csv_path)) if csv_path.exists() else None)
        return [dict(model=spec['name'], description=spec['name'], level='backbone',
                     input='64x64', pixels=4096, device='cpu', note='failed (exit 1): test')]
    monkeypatch.setattr(benchmark, 'run_isolated', case_reading_the_csv)
    rows = benchmark.main(['--models', 'ravlt_t', 'ravlt_s', 'ravlt_b', '--shape', '64', '64',
                           '--work-dir', str(tmp_path)])
    assert found == [None, 1, 2]
    assert [r['model'] for r in read_csv(csv_path)] == [r['model'] for r in rows]


@pytest.mark.parametrize('name', [*presets.PRESETS, *presets.ALIASES])
def test_every_preset_is_a_valid_run(name, monkeypatch):
    """Each preset parses into the run it states (on a machine without CUDA, as if it had one):
    models of the registry at its level, shapes that tile every stage (multiples of 32), RAVLT
    paths and dtypes the tool takes; an earlier name gives the same run as the new one."""
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    args = benchmark.parse_args(['--preset', name])
    preset = presets.PRESETS[presets.resolve(name)]
    assert args.preset == presets.resolve(name)
    for key, value in preset.flags.items():
        assert getattr(args, key) == value, key
    known = models.BACKBONES if args.level == 'backbone' else models.WHOLE_MODELS
    assert args.models and set(args.models) <= set(known)
    cases, notes = benchmark.plan(args)
    assert not [n for n in notes if 'unknown' in n], notes
    assert {c['name'] for c in cases} | {n.split('`')[1] for n in notes} == set(args.models)
    assert all(h % 32 == 0 and w % 32 == 0 for c in cases for h, w in [c['shape']])
    assert set(args.paths) <= set(models.PATHS)
    assert args.device.startswith('cuda') or args.dtype == 'float32'
    assert preset.question.endswith('?') and preset.runs
    if name in presets.ALIASES:
        assert vars(args) == vars(benchmark.parse_args(['--preset', presets.ALIASES[name]]))


def test_a_gpu_preset_without_cuda_says_how_to_run_it_on_the_cpu(monkeypatch, capsys):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--preset', 'maskrcnn-gpu'])
    assert ('--preset maskrcnn-gpu runs on CUDA, but torch.cuda.is_available() is False: add '
            '--device cpu --dtype float32' in capsys.readouterr().err)
    args = benchmark.parse_args(['--preset', 'cuda-detection', '--device', 'cpu', '--dtype',
                                 'float32'])
    assert (args.preset, args.device, args.compile) == ('detection-backbones-gpu', 'cpu',
                                                        'inductor')


def test_help_states_each_presets_question_and_run():
    # the command line as a user runs it: a script importing the package, nothing else
    out = ' '.join(run_tool(['tools/analysis/benchmark.py', '--help'], timeout=120).stdout.split())
    for name, preset in presets.PRESETS.items():
        assert f'{name}' in out
        assert preset.question in out and 'runs: ' + preset.runs in out
    assert 'detection-backbones-gpu (also: cuda-detection):' in out


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


def test_scaling_slopes_and_table():
    rows = [dict(model=m, description=m, pixels=p, latency_ms=c * p**k, input=f'{p}', batch=1,
                 params_M=1.0, latency_q1_ms=1, latency_q3_ms=2, latency_min_ms=1,
                 latency_max_ms=2, images_per_s=1.0, peak_mem_MB=1.0, device='cpu',
                 dtype='float32', task='inference', mode='eager')
            for m, c, k in (('lin', 2.0, 1), ('quad', 1e-3, 2)) for p in (1e4, 4e4, 1.6e5)]
    slopes = report.scaling_slopes(rows, 'latency_ms')
    assert slopes == pytest.approx({'lin, inference eager b1': 1, 'quad, inference eager b1': 2})
    table = report.markdown_table(rows)
    assert table.count('\n') == len(rows) + 1


def test_measure_counts_flops_both_ways_and_times_a_training_step():
    rows = []
    case.measure(dict(name='ravlt_t', level='backbone', shape=(64, 96), batches=[2],
                       train_batch=1, device='cpu', dtype='float32', warmup=1, repeat=1,
                       flops=True, path='fast'), rows.append)
    train, infer = rows
    assert (train['task'], train['batch'], infer['task'], infer['batch']) == (
        'train', 1, 'inference', 2)
    assert infer['path'] == 'fast' and infer['mode'] == 'eager'
    assert infer['params_M'] == pytest.approx(13.347328)
    assert infer['flops_full_G'] > infer['flops_modules_G'] > 0
    # the difference is exactly the attention products
    assert infer['flops_full_G'] - infer['flops_modules_G'] == pytest.approx(
        infer['flops_attn_products_G'], rel=1e-6)
    assert infer['images_per_s'] == pytest.approx(2 / (infer['latency_ms'] / 1e3))
    assert train['latency_ms'] > 0 and train['peak_mem_MB'] >= 0


def _row(model, path, task, mode, batch, ms, mb):
    return dict(model=model, description=models.description(model, 'backbone'),
                path=path, task=task, mode=mode, batch=batch, input='800x1216',
                latency_ms=ms, images_per_s=batch / ms * 1e3, peak_mem_MB=mb, device='cuda:X',
                dtype='float16')


def test_summary_ratios_point_the_same_way_for_times_and_speeds():
    # RAVLT-S twice as fast as Swin-T at inference, half as fast in training, 3x the memory
    rows = [_row('swin_t', '', 'inference', 'eager', 8, 40., 300.),
            _row('swin_t', '', 'inference', 'eager', 1, 10., 100.),
            _row('swin_t', '', 'train', 'eager', 2, 30., 2000.),
            _row('ravlt_s', 'fast', 'inference', 'eager', 8, 20., 300.),
            _row('ravlt_s', 'fast', 'inference', 'eager', 1, 5., 100.),
            _row('ravlt_s', 'fast', 'train', 'eager', 2, 60., 6000.),
            _row('ravlt_s', 'fast-nokernel', 'inference', 'eager', 8, 80., 300.)]
    summary = {(s['model'], s['path']): s for s in report.summary_rows(rows)}
    ours = summary[('ravlt_s', 'fast')]
    assert ours['inference'] == pytest.approx(400.)
    assert (ours['inference_ratio'], ours['latency_ratio'], ours['train_ratio'],
            ours['train_peak_ratio']) == pytest.approx((2., 2., 0.5, 3.))
    assert 'compiled_ratio' not in ours  # nothing compiled was measured
    assert summary[('ravlt_s', 'fast-nokernel')]['inference_ratio'] == pytest.approx(0.5)
    table = report.summary_table(rows)
    assert '| RAVLT-S (released mix) | 800x1216 | 400.0 (2.00x) |' in table


def test_ratios_are_against_timms_swin_t_where_mmdets_was_not_measured():
    swin_timm = [_row('swin_t_timm', '', 'inference', 'eager', 8, 40., 300.)]
    ours = [_row('ravlt_s', 'fast', 'inference', 'eager', 8, 20., 300.)]
    swin_mm = [_row('swin_t', '', 'inference', 'eager', 8, 80., 300.)]
    assert models.baseline(r['model'] for r in ours + swin_timm) == 'swin_t_timm'
    summary = {s['model']: s for s in report.summary_rows(ours + swin_timm)}
    assert summary['ravlt_s']['inference_ratio'] == pytest.approx(2.)
    assert ('| RAVLT-S (released mix) | 800x1216 | 400.0 (2.00x) |'
            in report.summary_table(ours + swin_timm))
    # with both measured, mmdet's (the one a config swaps in) is the baseline
    summary = {s['model']: s for s in report.summary_rows(ours + swin_timm + swin_mm)}
    assert summary['ravlt_s']['inference_ratio'] == pytest.approx(4.)
    assert summary['swin_t_timm']['inference_ratio'] == pytest.approx(2.)
    assert models.baseline(r['model'] for r in ours) is None


def test_mmdet_competitors_build_whatever_scope_the_process_is_in():
    """A config loaded or a runner built before leaves mmengine's default scope elsewhere; the
    competitors from mmdet build in mmdet's registry all the same."""
    from mmengine.registry import DefaultScope
    pytest.importorskip('mmdet')
    if models.missing_requirement('swin_t', 'backbone'):
        pytest.skip(models.missing_requirement('swin_t', 'backbone'))
    with DefaultScope.overwrite_default_scope('mmengine'):
        net = models.build('swin_t', 'backbone', shape=(224, 320))
    assert type(net).__module__ == 'mmdet.models.backbones.swin'


@pytest.mark.parametrize('name, package, weights', [
    ('convnext_t', 'mmpretrain', 27.82e6), ('convnext_t_timm', 'timm', 27.82e6),
    ('swin_t', 'mmdet', 27.52e6), ('swin_t_timm', 'timm', 27.52e6)])
def test_a_competitor_from_timm_is_the_same_network(name, package, weights):
    """OpenMMLab's and timm's ConvNeXt-T and Swin-T (the GPU presets'): the same networks,
    four channels-first maps of 96..768 channels at strides 4..32 (timm's Swin-T sized to the
    input, its windows padded like mmdet's: 224x320 pads every width and is large enough that
    timm does not shrink the last stage's windows to its map); where missing, a row names the
    package."""
    import torch
    missing = models.missing_requirement(name, 'backbone')
    if missing is not None:  # e.g. mmdet installed, mmcv not
        needed = (package, ) if package == 'timm' else (package, 'mmcv')
        assert missing in [f'{p} is not installed' for p in needed]
        pytest.skip(missing)
    net = models.build(name, 'backbone', shape=(224, 320))
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(weights, rel=1e-3)
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 224, 320))
    assert [tuple(m.shape) for m in maps] == [(1, 96 * 2**i, 56 >> i, 80 >> i) for i in range(4)]
    if name == 'swin_t_timm':  # timm's NHWC maps are made NCHW by a copy, as mmdet's Swin-T's
        assert all(m.is_contiguous() for m in maps)


def test_mmdets_competitors_need_mmcvs_ops_built(monkeypatch):
    # mmdet installed, mmcv without its compiled ops
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'mmcv._ext' else find_spec(name, *a))
    if find_spec('mmdet') is None or find_spec('mmcv') is None:
        pytest.skip('mmdet or mmcv is not installed')
    assert (models.missing_requirement('swin_t', 'backbone')
            == "mmcv's ops are not built (mmdet imports them)")
    assert models.missing_requirement('ravlt_s', 'backbone') is None


def test_mmpretrain_beside_transformers_5_names_the_way_out(monkeypatch):
    class MultimodalFailing(types.ModuleType):  # what its import raises beside transformers 5
        def __getattr__(self, name):
            raise TypeError('NoneType takes no arguments')

    monkeypatch.setitem(sys.modules, 'mmpretrain', types.ModuleType('mmpretrain'))
    monkeypatch.setitem(sys.modules, 'mmpretrain.models', MultimodalFailing('mmpretrain.models'))
    with pytest.raises(RuntimeError, match=r"mmpretrain does not import here \(TypeError: NoneType "
                       r"takes no arguments\).*transformers < 5\. Measure 'convnext_t_timm'"):
        models.BACKBONES['convnext_t'].build((64, 64))


def test_a_failed_case_is_a_row_naming_its_error():
    # dynamo's failures end with hints after the exception: the row keeps the exception
    stderr = ('Traceback (most recent call last):\n  File "bench.py", line 1, in <module>\n'
              'torch._inductor.exc.InductorError: CppCompileError: C++ compile error\n\n'
              'Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace (please do this ...)\n')
    assert case._error_line(stderr) == ('torch._inductor.exc.InductorError: CppCompileError: '
                                         'C++ compile error')
    assert case._error_line('killed\n\n') == 'killed'
    assert case._error_line('') == 'no output'
    # and a real case failing in its child process
    [row] = case.run_isolated(dict(name='ravlt_t', level='backbone', shape=(64, 64), batches=[1],
                                    train_batch=0, device='cpu', dtype='float17', warmup=0,
                                    repeat=1, flops=False, path='fast'), timeout=120)
    assert row['note'] == ("failed (exit 1): AttributeError: module 'torch' has no attribute "
                           "'float17'")
    assert (row['model'], row['input'], row['mode']) == ('ravlt_t', '64x64', 'eager')


def test_whole_models_pair_ravlt_s_with_swin_t_under_each_query_head():
    """DINO and Mask2Former: RAVLT-S and Swin-T under the same head, Mask2Former's Swin-T from
    mmdet's / mmseg's own configs (scope::path), built by that scope's registry."""
    import os
    for head in ('dino', 'mask2former', 'mask2former_{}_ade20k'):
        pair = [head.format(b) if '{}' in head else f'{head}_{b}' for b in ('ravlt_s', 'swin_t')]
        assert all(name in models.WHOLE_MODELS for name in pair)
        assert len({models.WHOLE_MODELS[name][3] for name in pair}) == 1  # same input size
    for name, (_, cfg_file, swin, _) in models.WHOLE_MODELS.items():
        if '::' in cfg_file and importlib.util.find_spec(cfg_file.partition('::')[0]):
            assert os.path.isfile(models.config_path(cfg_file)), cfg_file
            assert not swin
        assert models.has_rala(name, 'model') == ('ravlt' in name)
        expected = 'mmseg' if ('upernet' in name or 'ade20k' in name) else 'mmdet'
        assert models.scope_of(name) == expected
    if importlib.util.find_spec('mmseg'):
        path = 'mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py'
        assert models.config_path('mmseg::' + path).endswith('mmseg/.mim/configs/' + path)
