"""Two FLOP counts of a model's forward, and the wrapper that makes a detector or segmentor
countable.

Both counts use the fvcore / mmengine convention: one multiply-accumulate (MAC) = one FLOP, no
cost for bias additions, activations, softmax or other element-wise ops, norms at 5 per element
(2 per element for BatchNorm in eval mode).

* ``traced_flops`` ("full"): mmengine's ``FlopAnalyzer`` traces the forward and counts every
  convolution, linear layer, norm *and matrix product* (``@``, ``bmm``, ``einsum`` and - added here,
  mmengine lacks it - ``scaled_dot_product_attention``). This is the count that sees the
  attention products: O(N d^2) for RALA, O(N^2 d) for global softmax attention.
* ``module_flops`` ("modules-only"): forward hooks on convolution, linear, norm, pooling and
  upsampling modules, the way the mmcv 1.x counter behind mmdet 2.x / mmseg 0.x ``get_flops``
  works. Functional matrix products are invisible to it. The paper's dense-prediction FLOPs
  match this kind of count (see ``PAPER_COUNTING``).
"""
import functools
import inspect
from collections import Counter
from math import prod
from typing import Dict, Tuple

import torch
import torch.nn as nn

PAPER_COUNTING = (
    "The paper's detection/segmentation FLOPs (configs/metafile.yml) match a modules-only "
    'counter (convs, linears, norms; mmcv 1.x / mmdet 2.x '
    'get_flops): it misses the functional matrix products of attention, which for the '
    "released mix are dominated by stage 3's global softmax attention (quadratic in tokens). "
    "'FLOPs full' counts them (traced, 1 MAC = 1 FLOP); 'FLOPs modules-only' does not.")

# Operators that are attention products (functional, not modules) in the traced count.
MATMUL_OPS = ('matmul', 'bmm', 'einsum', 'mm', 'scaled_dot_product_attention', 'baddbmm')


def _shape(value):
    return value.type().sizes() if value.isCompleteTensor() else None


def sdpa_flop_jit(inputs, outputs) -> int:
    """aten::scaled_dot_product_attention: q k^T plus attn v, each B*heads*L*S*d MACs."""
    q, k, v = (_shape(x) for x in inputs[:3])
    *batch, length, dim = q
    return prod(batch) * length * k[-2] * (dim + v[-1])


def baddbmm_flop_jit(inputs, outputs) -> int:
    """aten::baddbmm(input, b1, b2): the batched product b1 @ b2 (the add is free)."""
    b1, b2 = _shape(inputs[1]), _shape(inputs[2])
    return prod(b1) * b2[-1]


def traced_flops(model: nn.Module, inputs: Tuple) -> Dict[str, float]:
    """Full count by tracing. Returns total, per-operator counts and the 'attention products' part.

    ``inputs`` is the tuple of positional arguments of ``model.forward``. Operators the counter
    does not know (element-wise ones, custom C++ ops such as RoIAlign/NMS) are listed in
    ``unsupported`` so a reader sees what is not counted.
    """
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit,
                           'aten::baddbmm', baddbmm_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    by_op = {k: float(v) for k, v in analyzer.by_operator().items()}
    total = float(analyzer.total())
    return dict(total=total, by_operator=by_op,
                matmul=sum(v for k, v in by_op.items() if k in MATMUL_OPS),
                unsupported=dict(analyzer.unsupported_ops()))


def feed_data_samples_to_decode_head(model: nn.Module, data_samples) -> bool:
    """Give a segmentor's query decode head (mmseg's Mask2Former / MaskFormer) the batch's data
    samples in the tensor forward.

    mmseg's ``EncoderDecoder._forward`` calls ``decode_head.forward(x)``, whereas these heads
    need ``forward(x, batch_data_samples)`` (mmseg's own get_flops refuses them). As mmdet's
    get_flops does for its detectors, the data samples out of the data preprocessor are bound to
    the call. Changes this instance only; returns whether the model has such a head.
    """
    head = getattr(model, 'decode_head', None)
    if head is None or isinstance(head.forward, functools.partial):
        return False
    if 'batch_data_samples' not in inspect.signature(head.forward).parameters:
        return False
    head.forward = functools.partial(head.forward, batch_data_samples=data_samples)
    return True


class TensorForward(nn.Module):
    """A detector's or segmentor's ``mode='tensor'`` forward on fixed data samples, callable
    with the image batch alone (for tracing, counting and timing). This is what mmdet's and
    mmseg's get_flops tools count: the network without post-processing (for Mask R-CNN: backbone,
    neck, RPN with its proposal NMS, the box head on every proposal, the mask head on the first
    100 RoIs).

    Args:
        model (nn.Module): An mmdet / mmseg model.
        data_samples (list): The data samples of the batch (from its data preprocessor).
    """

    def __init__(self, model: nn.Module, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples
        feed_data_samples_to_decode_head(model, data_samples)

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


# The modules-only count: hooks on leaf modules, with the per-op costs of the traced count.
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)


def _module_cost(module: nn.Module, inputs, output) -> int:
    """``inputs``: the module's tensor arguments in signature order (positional or keyword)."""
    x = inputs[0] if inputs else None
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        # output elements x (in_channels / groups) x kernel elements, bias ignored
        return output.numel() * module.weight[0].numel()
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return x.numel() * module.weight[0].numel()
    if isinstance(module, nn.Linear):
        return x.numel() * module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training:
            return x.numel() * (5 if module.affine else 4)
        return x.numel() * (2 if module.affine else 1)
    if isinstance(module, _NORMS):
        affine = getattr(module, 'elementwise_affine', getattr(module, 'affine', False))
        return x.numel() * (5 if affine else 4)
    if isinstance(module, nn.MultiheadAttention):
        # Only its projections, which are the module's weights; the attention products are
        # functional (F.multi_head_attention_forward) and a module counter never sees them.
        q = x
        k = inputs[1] if len(inputs) > 1 else q
        v = inputs[2] if len(inputs) > 2 else k
        e = module.embed_dim
        return q.numel() * e * 2 + k.numel() * e + v.numel() * e
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        return x.numel()
    if isinstance(module, nn.Upsample):
        out = output.numel()
        return out if module.mode == 'nearest' else 4 * out
    return 0


def module_flops(model: nn.Module, inputs: Tuple) -> Dict[str, float]:
    """Modules-only count: run ``model(*inputs)`` once with hooks on the counted module types."""
    counts: Counter = Counter()

    def hook(module, args, kwargs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        # nn.MultiheadAttention is often called with query=/key=/value= keywords (mmcv)
        names = (('query', 'key', 'value') if isinstance(module, nn.MultiheadAttention)
                 else ('input', ))
        inputs = list(args) + [kwargs[n] for n in names[len(args):] if kwargs.get(n) is not None]
        counts[type(module).__name__] += _module_cost(module, inputs, out)

    counted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d, nn.Linear, nn.modules.batchnorm._BatchNorm, *_NORMS,
               nn.MultiheadAttention, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Upsample)
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()
               if isinstance(m, counted)]
    # With a gradient to record, RAVLT runs its whole-map path: without one, its CPU inference
    # computes some maps a band of rows at a time (runs_in_bands), recomputing the rows a conv
    # reaches across bands, which would count more than the network's own cost.
    inputs = tuple(x.detach().requires_grad_() if torch.is_tensor(x) and x.is_floating_point()
                   else x for x in inputs)
    try:
        with torch.enable_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return dict(total=float(sum(counts.values())), by_module_type=dict(counts))
