"""What mmdeploy 1.3.1 needs to export RAVLT's detectors and segmentors with current torch,
registered through mmdeploy's own rewriter registries (importing this module registers them;
mmdeploy's files are left as they are).

* ``torch.onnx.export``: torch >= 2.9 takes the dynamo exporter by default, which mmdeploy's
  call (TorchScript-style ``dynamic_axes``, rewriters patched in while tracing) does not fit
  ("mismatch between the structure of inputs and dynamic_shapes"): the TorchScript exporter
  (``dynamo=False``) is asked for while mmdeploy exports.
* mmcv's ``RoIAlign`` for onnxruntime: mmdeploy's symbolic imports
  ``torch.onnx.symbolic_opset9._cast_Long``, which torch removed; this one writes ONNX's
  ``RoiAlign`` (opset >= 16, with ``coordinate_transformation_mode``) with plain ONNX ops.
* ``F.adaptive_avg_pool2d`` for onnxruntime and TensorRT: mmdeploy's default rewrite
  (``avg_pool2d`` with kernel ``size // out``) is exact only when the input divides by the output
  size; :func:`~ravlt_dense.deploy.pooling.exact_adaptive_avg_pool2d` is exact at every size,
  static or dynamic (UperNet's pyramid pooling).
* mmseg's ``Upsample`` for onnxruntime: its output size is computed in Python, which froze
  dynamic Semantic FPN graphs at the export size.
* The detection heads' post-processing for onnxruntime: mmdet's steps rather than mmdeploy's
  approximations (:mod:`ravlt_dense.deploy.detection`).
* ``F.scaled_dot_product_attention`` for onnxruntime (RAVLT's softmax stages): mmdeploy's
  default rewrite ends in ``torch.dropout(attn, p, train=True)``, a ``Dropout`` node in training
  mode that ONNX Runtime runs as the identity at p = 0 but OpenVINO, which converts the same
  graph, refuses ("Training mode is not supported for Dropout op"); this one leaves it out at
  p = 0 (and takes ``scale`` as PyTorch does: a factor, not mmdeploy's divisor).

mmdeploy does not apply a config's ``custom_imports``: importing this module imports
``ravlt_dense`` (RAVLT in mmengine's registry) before anything is built.
"""
import inspect

import torch
from mmdeploy.core import FUNCTION_REWRITER, SYMBOLIC_REWRITER
from mmdeploy.utils import IR, get_ir_config

import ravlt_dense  # noqa: F401  registers RAVLT (mmdeploy ignores custom_imports)

from . import detection  # noqa: F401  mmdet's post-processing, exactly (see its docstring)
from .pooling import exact_adaptive_avg_pool2d

# torch.onnx.export(dynamo=...) exists from torch 2.5; its default became True in 2.9
_EXPORT_HAS_DYNAMO = 'dynamo' in inspect.signature(torch.onnx.export).parameters


@FUNCTION_REWRITER.register_rewriter(func_name='torch.onnx.export', ir=IR.ONNX)
def onnx_export__torchscript(*args, **kwargs):
    """torch.onnx.export with the TorchScript exporter, which mmdeploy's rewriters are for."""
    ctx = FUNCTION_REWRITER.get_context()
    if _EXPORT_HAS_DYNAMO:
        kwargs.setdefault('dynamo', False)
    return ctx.origin_func(*args, **kwargs)


@FUNCTION_REWRITER.register_rewriter(
    func_name='torch.nn.functional.adaptive_avg_pool2d', backend='onnxruntime')
@FUNCTION_REWRITER.register_rewriter(
    func_name='torch.nn.functional.adaptive_avg_pool2d', backend='tensorrt')
def adaptive_avg_pool2d__exact(input, output_size):
    """PyTorch's adaptive bins at any input size (see ravlt_dense/deploy/pooling.py)."""
    return exact_adaptive_avg_pool2d(input, output_size)


_INT64 = 7  # onnx.TensorProto.INT64


@SYMBOLIC_REWRITER.register_symbolic('mmcv.ops.roi_align.__self__', backend='onnxruntime')
def roi_align__onnxruntime(g, input, rois, output_size, spatial_scale, sampling_ratio,
                           pool_mode, aligned):
    """mmcv's RoIAlign as ONNX's RoiAlign (opset >= 16: ``aligned`` maps to its
    ``coordinate_transformation_mode``); ``rois`` are (batch index, x1, y1, x2, y2) rows."""
    ctx = SYMBOLIC_REWRITER.get_context()
    opset = get_ir_config(ctx.cfg).get('opset_version', 11)
    if opset < 16:
        raise ValueError(f'RoIAlign exports for onnxruntime at opset >= 16 (got {opset}): '
                         "set onnx_config.opset_version=17 as RAVLT's deploy configs do")

    def const(values):
        return g.op('Constant', value_t=torch.tensor(values, dtype=torch.long))

    batch_indices = g.op('Cast', g.op('Squeeze', g.op('Gather', rois, const([0]), axis_i=1),
                                      const([1])), to_i=_INT64)
    boxes = g.op('Gather', rois, const([1, 2, 3, 4]), axis_i=1)
    return g.op('RoiAlign', input, boxes, batch_indices,
                output_height_i=output_size[0], output_width_i=output_size[1],
                spatial_scale_f=spatial_scale, sampling_ratio_i=sampling_ratio,
                mode_s=pool_mode,
                coordinate_transformation_mode_s='half_pixel' if aligned
                else 'output_half_pixel')


@FUNCTION_REWRITER.register_rewriter(
    func_name='torch.nn.functional.scaled_dot_product_attention', backend='onnxruntime')
def scaled_dot_product_attention__no_dropout(query, key, value, attn_mask=None, dropout_p=0.,
                                             is_causal=False, scale=None, **kwargs):
    """softmax(q k^T * scale + mask) v in plain ops, a Dropout only where ``dropout_p`` > 0."""
    scale = query.shape[-1]**-0.5 if scale is None else scale
    attn = (query @ key.transpose(-2, -1)) * scale
    if is_causal:
        attn_mask = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool,
                               device=query.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=attn.dtype).masked_fill(
                ~attn_mask, float('-inf'))
        attn = attn + attn_mask
    attn = torch.softmax(attn, dim=-1)
    if dropout_p:
        attn = torch.dropout(attn, dropout_p, True)
    return attn @ value


@FUNCTION_REWRITER.register_rewriter(
    func_name='mmseg.models.utils.wrappers.Upsample.forward', backend='onnxruntime')
def upsample__forward__dynamic(self, x):
    """mmseg's Upsample (Semantic FPN's scale heads) computes its output size in Python
    (``int(t * scale_factor)``), which a traced graph keeps as the export size; interpolating
    by the factor itself gives the same size (floored) and the same sampling at every size."""
    ctx = FUNCTION_REWRITER.get_context()
    if self.size or not self.scale_factor:
        return ctx.origin_func(self, x)
    return torch.nn.functional.interpolate(x, scale_factor=self.scale_factor, mode=self.mode,
                                           align_corners=self.align_corners)
