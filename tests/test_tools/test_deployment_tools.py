"""tools/deployment/export_onnx.py (exports, verifies, refuses), mmengine's compile=True through
tools/train.py, and the --compile switch of tools/analysis/benchmark.py."""
import pytest

import ravlt_dense.models.backbones.ravlt as ravlt

from conftest import load_script, run_tool

pytestmark = pytest.mark.usefixtures('fresh_dynamo')

export_onnx = load_script('tools/deployment/export_onnx.py')
RETINANET_QUICK = 'configs/quickstart/retinanet_ravlt-t_fpn_1xb4-8e_coco-shapes.py'
FPN_QUICK = 'configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py'


def test_export_tool_exports_and_verifies_a_detector(tmp_path, capsys):
    out = tmp_path / 'retinanet.onnx'
    export_onnx.main([RETINANET_QUICK, '--shape', '64', '96',
                      '--dynamic', '--exporter', 'torchscript', '--out', str(out),
                      '--repeat', '1'])
    log = capsys.readouterr().out
    assert out.is_file()
    assert 'onnxruntime matches PyTorch at 64x96' in log
    assert 'onnxruntime matches PyTorch at 96x160' in log  # the dynamic graph at another size
    assert 'Latency at 64x96' in log and 'onnxruntime' in log


def test_export_tool_exports_and_verifies_a_segmentor(tmp_path, capsys):
    out = tmp_path / 'fpn.onnx'
    export_onnx.main([FPN_QUICK, '--shape', '64', '64',
                      '--exporter', 'torchscript', '--out', str(out), '--repeat', '1'])
    assert out.is_file()
    assert 'onnxruntime matches PyTorch at 64x64' in capsys.readouterr().out


def test_export_tool_refuses_a_model_that_onnx_does_not_reproduce(tmp_path, monkeypatch):
    # Doctor the traced path only: eager PyTorch keeps the right RoPE, the exported graph
    # rotates nothing.
    monkeypatch.setattr(ravlt, 'apply_rope', lambda x, sin, cos: x)
    out = tmp_path / 'broken.onnx'
    with pytest.raises(SystemExit, match=r'REFUSED: .* relative difference \d\S* > --rtol'):
        export_onnx.main([FPN_QUICK, '--shape', '64', '64',
                          '--backbone-only', '--exporter', 'torchscript', '--out', str(out)])
    assert not out.exists()


def test_export_tool_loads_weights_with_the_loader_of_test_py(tmp_path):
    """The release's format converted, every key checked (mmengine's strict loader said
    neither: it cannot read the release's classes and raised its own RuntimeError)."""
    import torch
    config = FPN_QUICK
    args = export_onnx.parse_args([config, '--shape', '64', '64'])
    source = export_onnx.build(args).model
    state = {f'module.{k}': v for k, v in source.state_dict().items()}  # a DDP-saved file
    torch.save(dict(model=state, meta=dict(CLASSES=('a', ) * 5)), tmp_path / 'release.pth')
    args.checkpoint = str(tmp_path / 'release.pth')
    loaded = export_onnx.build(args).model
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    del state['module.decode_head.conv_seg.bias']
    torch.save(dict(state_dict=state), tmp_path / 'short.pth')
    args.checkpoint = str(tmp_path / 'short.pth')
    with pytest.raises(ValueError, match=rf'short\.pth does not fit the model of {config}:\n'
                       r'1 missing key\(s\): decode_head\.conv_seg\.bias'):
        export_onnx.build(args)


def test_export_tool_rejects_too_small_shapes():
    with pytest.raises(SystemExit):
        export_onnx.parse_args([FPN_QUICK, '--shape', '16', '64'])


def test_train_tool_with_runner_compile(tmp_path):
    """mmengine's compile=True through tools/train.py: the Semantic FPN quick start, 1 step."""
    make_ade_shapes = load_script('tools/data/make_ade_shapes.py')
    data = tmp_path / 'shapes'
    make_ade_shapes.make_ade_shapes(str(data), num_train=2, num_val=1, size=64, seed=0)
    work = tmp_path / 'work'
    args = ['tools/train.py', FPN_QUICK,
           '--work-dir', str(work), '--cfg-options', f'train_dataloader.dataset.data_root={data}',
           f'val_dataloader.dataset.data_root={data}', f'test_dataloader.dataset.data_root={data}',
           'train_dataloader.batch_size=2', 'train_cfg.max_iters=1', 'train_cfg.val_interval=1',
           'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
           # the whole train step through dynamo; 'eager' keeps the test fast (inductor: above)
           'compile.backend=eager']
    proc = run_tool(args, timeout=600)
    log = proc.stdout + proc.stderr
    assert 'Model has been "compiled"' in log
    assert 'Iter(train) [1/1]' in log and (work / 'iter_1.pth').is_file()


def test_export_tool_takes_the_shape_as_every_tool_does(capsys):
    config = FPN_QUICK
    assert export_onnx.parse_args([config, '--shape', '64', '96']).shape == [64, 96]  # H W
    assert export_onnx.parse_args([config, '--shape', '64']).shape == [64, 64]  # a square
    with pytest.raises(SystemExit):
        export_onnx.parse_args([config, '--shape', '64', '96', '128'])
    assert '--shape takes H W (or one size for a square), got 3 values' in capsys.readouterr().err
