"""The kernels as PyTorch operators: ``torch.compile(fullgraph=True)`` and ``torch.export`` keep
``ravlt::rala_forward`` (and its backward) in the graph; ONNX export keeps plain ops.

On the CPU the operators are opaque custom ops (interpreted kernels cannot be traced), on a GPU
triton_ops whose kernels inductor sees; the graph holds ``ravlt.rala_forward`` either way.
"""
import pytest
import torch
from functorch.compile import make_boxed_func

from ravlt_dense.models.backbones.ravlt import RALAttention, RoPE

from conftest import weighted_sum

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures('fused_kernels', 'fresh_dynamo')]

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


class Attention(torch.nn.Module):
    """One RALA layer with its RoPE, as a stage calls it."""

    def __init__(self):
        super().__init__()
        self.attn, self.rope = RALAttention(64, num_heads=2), RoPE(32)

    def forward(self, x):
        return self.attn(x, self.rope)


def custom_ops(graph):
    return sorted({str(n.target) for n in graph.nodes if 'ravlt' in str(n.target)})


def test_compiled_training_keeps_the_kernels_and_matches_eager(kernel_on_this_device):
    torch.manual_seed(0)
    model = Attention().to(DEVICE)
    model.attn.kernel_backward = True  # RAVLT's rala_kernel_backward=True
    graphs = []

    def keep(gm, _):
        graphs.append(gm.graph)
        return gm

    def keep_boxed(gm, example_inputs):  # AOT autograd calls its graphs with boxed arguments
        return make_boxed_func(keep(gm, example_inputs))

    def backend(gm, example_inputs):  # dynamo's graph, then AOT autograd's as aot_eager runs it
        from torch._dynamo.backends.common import aot_autograd
        return aot_autograd(fw_compiler=keep_boxed, bw_compiler=keep_boxed)(keep(gm, None),
                                                                            example_inputs)

    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = torch.randn(2, 64, 7, 9, device=DEVICE, requires_grad=True)
    results = []
    for run in (model, compiled):
        model.zero_grad()
        x.grad = None
        out = run(x)
        weighted_sum([out]).backward()
        results.append([out, x.grad] + [p.grad for p in model.parameters()])
    dynamo_graph, forward_graph, backward_graph = graphs
    assert custom_ops(dynamo_graph) == custom_ops(forward_graph) == ['ravlt.rala_forward.default']
    assert custom_ops(backward_graph) == ['ravlt.rala_backward.default']
    for a, b in zip(*results):
        assert (a - b).abs().max() <= 1e-5 * max(1., b.abs().max().item())


def test_compiled_training_takes_pytorch_ops_unless_the_backward_kernels_are_on(
        kernel_on_this_device):
    # RAVLT's default (rala_kernel_backward=False): graphs that need gradients hold PyTorch's
    # ops for RALA, inference graphs the forward operator
    torch.manual_seed(0)
    model = Attention().to(DEVICE)
    graphs = []

    def backend(gm, _):
        graphs.append(gm.graph)
        return gm.forward

    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = torch.randn(2, 64, 7, 9, device=DEVICE)
    training = compiled(x)
    with torch.no_grad():
        inference = compiled(x)  # grad mode is guarded: a second graph
        expected = model(x)
    assert [custom_ops(g) for g in graphs] == [[], ['ravlt.rala_forward.default']]
    for out in (training, inference):
        assert (out - expected).abs().max() <= 1e-5 * max(1., expected.abs().max().item())


def test_torch_export_keeps_the_kernel_operator(kernel_on_this_device):
    model = Attention().to(DEVICE).eval()
    x = torch.randn(1, 64, 9, 7, device=DEVICE)
    program = torch.export.export(model, (x, ))
    assert custom_ops(program.graph) == ['ravlt.rala_forward.default']
    with torch.no_grad():
        assert (program.module()(x) - model(x)).abs().max() <= 1e-5


def test_onnx_export_keeps_plain_ops(kernel_on_this_device, tmp_path):
    pytest.importorskip('onnxscript')
    onnx = pytest.importorskip('onnx')
    model = Attention().to(DEVICE).eval()
    path = tmp_path / 'attn.onnx'
    torch.onnx.export(model, (torch.randn(1, 64, 6, 5, device=DEVICE), ), str(path),
                      dynamo=True, external_data=False)
    domains = {node.domain for node in onnx.load(str(path)).graph.node}
    assert domains <= {'', 'ai.onnx'}, domains


def test_the_in_place_epilogue_is_refused_inside_a_graph():
    from unittest import mock

    from ravlt_dense import ops
    q = torch.randn(1, 1, 6, 32, device=DEVICE)
    rotation = RoPE(32).to(DEVICE).cached(2, 3)
    with mock.patch('torch.compiler.is_compiling', return_value=True), \
            pytest.raises(ValueError, match=r'the fused epilogue writes into lepe, which compiled '
                          r'graphs do not follow: call rala_triton without lepe and gate'):
        ops.rala_triton(q, q, q, rotation, 0.1, lepe=q.clone(), gate=q)
