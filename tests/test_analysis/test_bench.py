"""ravlt_dense.analysis.bench and .report: one case measured in-process, and what the reports
make of rows (the scaling fit, the ratios to Swin-T and issue 17's targets); structure, never
timings."""
import sys
import types

import pytest

from ravlt_dense.analysis import bench, models, report


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
    bench.measure(dict(name='ravlt_t', level='backbone', shape=(64, 96), batches=[2],
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
    target, = report.target_lines(rows)
    assert 'inference 2.00x (target >= 1.0: met)' in target
    assert 'train 0.50x (target >= 0.8, missed by 38%)' in target
    assert 'train_peak 3.00x (target <= 1.5, missed by 100%)' in target


@pytest.mark.parametrize('name, package', [('convnext_t', 'mmpretrain'),
                                           ('convnext_t_timm', 'timm')])
def test_both_convnext_t_are_convnext_t(name, package):
    """mmpretrain's and timm's ConvNeXt-T (the GPU session's): the same network, ~28 M weights,
    four maps of 96..768 channels at strides 4..32; where missing, a row names the package."""
    import torch
    missing = models.missing_requirement(name, 'backbone')
    if missing is not None:
        assert missing == f'{package} is not installed'
        pytest.skip(missing)
    net = models.BACKBONES[name].build()
    net.eval()  # (mmpretrain's train() returns None)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(27.82e6, rel=1e-3)
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(1, 96 * 2**i, 16 >> i, 24 >> i) for i in range(4)]


def test_mmpretrain_beside_transformers_5_names_the_way_out(monkeypatch):
    class MultimodalFailing(types.ModuleType):  # what its import raises beside transformers 5
        def __getattr__(self, name):
            raise TypeError('NoneType takes no arguments')

    monkeypatch.setitem(sys.modules, 'mmpretrain', types.ModuleType('mmpretrain'))
    monkeypatch.setitem(sys.modules, 'mmpretrain.models', MultimodalFailing('mmpretrain.models'))
    with pytest.raises(RuntimeError, match=r"mmpretrain does not import here \(TypeError: NoneType "
                       r"takes no arguments\).*transformers < 5\. Measure 'convnext_t_timm'"):
        models.BACKBONES['convnext_t'].build()


def test_a_failed_case_is_a_row_naming_its_error():
    # dynamo's failures end with hints after the exception: the row keeps the exception
    stderr = ('Traceback (most recent call last):\n  File "bench.py", line 1, in <module>\n'
              'torch._inductor.exc.InductorError: CppCompileError: C++ compile error\n\n'
              'Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace (please do this ...)\n')
    assert bench._error_line(stderr) == ('torch._inductor.exc.InductorError: CppCompileError: '
                                         'C++ compile error')
    assert bench._error_line('killed\n\n') == 'killed'
    assert bench._error_line('') == 'no output'
    # and a real case failing in its child process
    [row] = bench.run_isolated(dict(name='ravlt_t', level='backbone', shape=(64, 64), batches=[1],
                                    train_batch=0, device='cpu', dtype='float17', warmup=0,
                                    repeat=1, flops=False, path='fast'), timeout=120)
    assert row['note'] == ("failed (exit 1): AttributeError: module 'torch' has no attribute "
                           "'float17'")
    assert (row['model'], row['input'], row['mode']) == ('ravlt_t', '64x64', 'eager')
