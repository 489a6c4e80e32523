"""RAVLT under tracers: torch.compile without graph breaks (training, dynamic shapes),
torch.export, and ONNX through onnxruntime, each equal to eager PyTorch.

Tiny models and inputs; the cheap 'eager' dynamo backend (it captures the whole graph and fails
on any graph break under fullgraph=True) except one inductor test.
"""
import pytest
import torch

from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import TINY_ARCH, load_script, weighted_sum

pytestmark = pytest.mark.usefixtures('fresh_dynamo')

TINY = dict(TINY_ARCH, depths=[1, 1, 1, 1])  # one block a stage: tracing is the slow part
MIXES = {'released': ('rala', 'rala', 'softmax', 'softmax'), 'all_rala': ('rala', ) * 4}
SIZES = [(64, 96), (77, 45), (33, 65)]  # odd sizes, and the smallest that exports dynamically

export_onnx = load_script('tools/deployment/export_onnx.py')


# max |actual - expected| / max |expected| over all outputs (inf if their number or shapes
# differ): the export tool's own measure
relative_difference = export_onnx.relative_difference


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
    import onnxruntime as ort
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
