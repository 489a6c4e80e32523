"""Compilation and export: torch.compile without graph breaks, torch.export, ONNX through
onnxruntime, tools/deployment/export_onnx.py (and its refusal), and compile=True in training.

Tiny models and inputs; the cheap 'eager' dynamo backend (it captures the whole graph and fails
on any graph break under fullgraph=True) except one inductor test.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ravlt_dense.models.backbones.ravlt as ravlt
from ravlt_dense.models.backbones.ravlt import RAVLT

REPO = Path(__file__).resolve().parents[1]
TINY = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
            mlp_ratio=3.5, layer_scale_init=[1., 1., 1., 1.])
MIXES = {'released': ('rala', 'rala', 'softmax', 'softmax'), 'all_rala': ('rala', ) * 4}
SIZES = [(64, 96), (77, 45), (33, 65)]  # odd sizes, and the smallest that exports dynamically


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_onnx = _load_module('export_onnx', 'tools/deployment/export_onnx.py')


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch.manual_seed(0)
    torch._dynamo.reset()  # compiled code of an earlier model must not count against limits
    yield
    torch._dynamo.reset()


def relative_difference(actual, expected):
    return max(((a - e).abs().max() / e.abs().max().clamp_min(1e-12)).item()
               for a, e in zip(actual, expected))


def weighted_sum(outputs):
    """A loss that gives every output element its own gradient."""
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outputs)


@pytest.mark.parametrize('mix', MIXES)
@pytest.mark.parametrize('dynamic', [False, True])
def test_fullgraph_compile_matches_eager_in_training(mix, dynamic):
    model = RAVLT(TINY, attn_types=MIXES[mix], drop_path_rate=0.).train()
    compiled = torch.compile(model, fullgraph=True, backend='eager', dynamic=dynamic)
    for size in SIZES:
        x = torch.randn(2, 3, *size, requires_grad=True)
        results = []
        for run in (model, compiled):
            x.grad = None
            model.zero_grad()
            outputs = run(x)
            weighted_sum(outputs).backward()
            results.append((outputs, [x.grad.clone()] + [p.grad.clone() for p in
                                                         model.parameters()]))
        (eager, eager_grads), (traced, traced_grads) = results
        assert relative_difference(traced, eager) <= 1e-5, size
        assert relative_difference(traced_grads, eager_grads) <= 1e-4, size


def test_inductor_dynamic_shapes_match_eager():
    # Inductor gets the functionalised graph; with dynamic shapes torch 2.13's inductor could
    # not lower the permuted layer norm (LayerNorm2d).
    model = RAVLT(TINY).eval()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for size in SIZES[:2]:
            x = torch.randn(1, 3, *size)
            assert relative_difference(compiled(x), model(x)) <= 1e-5, size


@pytest.mark.parametrize('mix', MIXES)
def test_torch_export_with_dynamic_height_and_width(mix):
    model = RAVLT(TINY, attn_types=MIXES[mix]).eval()
    dim = torch.export.Dim.DYNAMIC
    program = torch.export.export(model, (torch.randn(1, 3, 64, 96), ),
                                  dynamic_shapes=({2: dim, 3: dim}, ))
    exported = program.module()
    for size in SIZES:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert relative_difference(exported(x), model(x)) <= 1e-5, size


def test_eager_fast_path_keeps_its_cache_and_complex_rope():
    """Outside tracing nothing changes: the rotation is cached once per size."""
    model = RAVLT(TINY).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    cache = model.layers[0].RoPE._cache
    assert len(cache) == 1 and next(iter(cache.values())).is_complex()


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_onnx_round_trip_through_onnxruntime(exporter, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    model = RAVLT(TINY).eval()  # the released mix: RALA and softmax stages
    out = str(tmp_path / 'ravlt.onnx')
    export_onnx.export(model, torch.randn(1, 3, 64, 96), out, exporter, dynamic=True)
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    for size in SIZES[:2]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(x)
        actual = [torch.from_numpy(a) for a in session.run(None, {'input': x.numpy()})]
        assert relative_difference(actual, expected) <= 1e-4, size


def test_export_tool_exports_and_verifies_a_detector(tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    out = tmp_path / 'retinanet.onnx'
    export_onnx.main(['configs/quickstart/retinanet_ravlt_t_shapes.py', '--shape', '64', '96',
                      '--dynamic', '--exporter', 'torchscript', '--out', str(out),
                      '--repeat', '1'])
    log = capsys.readouterr().out
    assert out.is_file()
    assert 'onnxruntime matches PyTorch at 64x96' in log
    assert 'onnxruntime matches PyTorch at 96x160' in log  # the dynamic graph at another size
    assert 'Latency at 64x96' in log and 'onnxruntime' in log


def test_export_tool_exports_and_verifies_a_segmentor(tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    out = tmp_path / 'fpn.onnx'
    export_onnx.main(['configs/quickstart/fpn_ravlt_t_shapes.py', '--shape', '64', '64',
                      '--exporter', 'torchscript', '--out', str(out), '--repeat', '1'])
    assert out.is_file()
    assert 'onnxruntime matches PyTorch at 64x64' in capsys.readouterr().out


def test_export_tool_refuses_a_model_that_onnx_does_not_reproduce(tmp_path, monkeypatch):
    pytest.importorskip('onnxruntime')
    # Doctor the traced path only: eager PyTorch keeps the right RoPE, the exported graph
    # rotates nothing.
    monkeypatch.setattr(ravlt, 'apply_rope', lambda x, sin, cos: x)
    out = tmp_path / 'broken.onnx'
    with pytest.raises(SystemExit, match=r'REFUSED: .* relative difference \d\S* > --rtol'):
        export_onnx.main(['configs/quickstart/fpn_ravlt_t_shapes.py', '--shape', '64', '64',
                          '--backbone-only', '--exporter', 'torchscript', '--out', str(out)])
    assert not out.exists()


def test_export_tool_rejects_too_small_shapes():
    with pytest.raises(SystemExit):
        export_onnx.parse_args(['configs/quickstart/fpn_ravlt_t_shapes.py', '--shape', '16', '64'])


def test_train_tool_with_runner_compile(tmp_path):
    """mmengine's compile=True through tools/train.py: the Semantic FPN quick start, 1 step."""
    make_ade_shapes = _load_module('make_ade_shapes', 'tools/data/make_ade_shapes.py')
    data = tmp_path / 'shapes'
    make_ade_shapes.make_ade_shapes(str(data), num_train=2, num_val=1, size=64, seed=0)
    work = tmp_path / 'work'
    cmd = [sys.executable, 'tools/train.py', 'configs/quickstart/fpn_ravlt_t_shapes.py',
           '--work-dir', str(work), '--cfg-options', f'train_dataloader.dataset.data_root={data}',
           f'val_dataloader.dataset.data_root={data}', f'test_dataloader.dataset.data_root={data}',
           'train_dataloader.batch_size=2', 'train_cfg.max_iters=1', 'train_cfg.val_interval=1',
           'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
           # the whole train step through dynamo; 'eager' keeps the test fast (inductor: above)
           'compile.backend=eager']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'Model has been "compiled"' in log
    assert 'Iter(train) [1/1]' in log and (work / 'iter_1.pth').is_file()


def test_benchmark_compile_switch_reports_eager_and_compiled(tmp_path):
    benchmark = _load_module('benchmark', 'tools/analysis/benchmark.py')
    rows = benchmark.main(['--models', 'ravlt_t', '--sizes', '64', '--repeat', '1',
                           '--no-flops', '--compile', 'eager', '--work-dir', str(tmp_path)])
    assert [r['model'] for r in rows] == ['ravlt_t', 'ravlt_t_compiled']
    eager, compiled = rows
    assert compiled['compile_s'] > 0 and compiled['latency_ms'] > 0
    assert compiled['speedup_vs_eager'] == eager['latency_ms'] / compiled['latency_ms']
    assert 'compiled (eager)' in (tmp_path / 'benchmark.md').read_text()
