"""Export a detector's or segmentor's network (or its backbone) to ONNX, and refuse a file whose
outputs differ from PyTorch's.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --shape H W [--dynamic]
        [--out FILE] [--exporter dynamo|torchscript] [--backbone-only] [--rtol 1e-4]

What is exported is the model's ``mode='tensor'`` forward (backbone, neck and heads, raw head
outputs without post-processing), or the backbone alone with ``--backbone-only``. Its input is
one image as the config's data preprocessor leaves it: normalised, padded (mmdet pads to a
multiple of 32), batch 1. Decoding boxes (NMS) or resizing masks stays with the caller; two-stage
detectors run NMS inside their tensor forward and export their backbone only.

After export the file runs in onnxruntime on a random input (and, with ``--dynamic``, on a
second size) and is compared with the PyTorch model: when the largest difference relative to
the largest output value exceeds ``--rtol``, the file is deleted and the tool exits with status
1, naming the difference. Last, it prints PyTorch's and onnxruntime's latencies on this machine.
Needs the packages of requirements/export.txt (onnx, onnxruntime, onnxscript).
"""
import argparse
import os
import os.path as osp
import statistics
import timeit
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from torch.utils._pytree import tree_flatten

from ravlt_dense.checkpoint import load_model_checkpoint
from ravlt_dense.models import build_model
from ravlt_dense.tools.cli import add_shape_argument, model_or_exit, parsed_shape

EXPORT_PACKAGES = ('onnx', 'onnxruntime', 'onnxscript')


def median_seconds(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` (work on the CPU) over ``repeat`` calls after one untimed."""
    fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeat))


class TensorOutputs(nn.Module):
    """A model's tensor forward with its (nested) outputs flattened into one tuple."""

    def __init__(self, model: nn.Module, backbone_only: bool):
        super().__init__()
        self.model, self.backbone_only = model, backbone_only

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.backbone_only:
            outputs = self.model.backbone(inputs)
        else:
            outputs = self.model(inputs, None, mode='tensor')
        return tuple(tree_flatten(outputs)[0])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='detection or segmentation config: a file, a name of '
                        'the model zoo, or mmdet::PATH / mmseg::PATH')
    parser.add_argument('checkpoint', nargs='?',
                        help='weights: file, URL or zoo name, ours or the release\'s (loaded '
                        'strictly, as by tools/test.py); without it random weights are exported, '
                        'which checks the export but is no model to deploy')
    add_shape_argument(parser, help='input height and width (after the data preprocessor\'s '
                       'padding)')
    parser.add_argument('--dynamic', action='store_true',
                        help='height and width dynamic in the exported graph')
    parser.add_argument('--out', help='ONNX file to write (default: work_dirs/onnx/CONFIG.onnx)')
    parser.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo',
                        help='torch.onnx.export(dynamo=True) (default) or the TorchScript one')
    parser.add_argument('--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    parser.add_argument('--backbone-only', action='store_true', help='export the backbone only')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='largest accepted |onnx - torch| / max |torch| over the outputs')
    parser.add_argument('--repeat', type=int, default=10, help='timed runs for the latencies')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, e.g. model.backbone.arch=t')
    args = parser.parse_args(argv)
    args.shape = parsed_shape(parser, args.shape, minimum=32)
    args.config = model_or_exit(args.config).config
    if args.repeat < 1:
        parser.error('--repeat must be >= 1')
    return args


def check_packages() -> None:
    import importlib.util
    missing = [p for p in EXPORT_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise SystemExit(f'{", ".join(missing)} not installed: pip install -r '
                         'requirements/export.txt')


def build(args) -> nn.Module:
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = build_model(cfg)  # no init_weights(): the checkpoint, if any, gives every weight
    if args.checkpoint:  # file, URL or zoo name, converted and checked as by tools/test.py
        load_model_checkpoint(model, args.checkpoint, what=f'the model of {args.config}')
    else:
        print('No checkpoint given: exporting random weights (enough to check the export).')
    model.eval()  # not chained: some mm modules' train() returns None
    return TensorOutputs(model, args.backbone_only).eval()


def export(model: nn.Module, example: torch.Tensor, out: str, exporter: str, dynamic: bool,
           opset=None) -> List[str]:
    """Write ``model`` to ``out``; returns the output names."""
    with torch.no_grad():
        num_outputs = len(model(example))
    output_names = [f'output{i}' for i in range(num_outputs)]
    common = dict(input_names=['input'], output_names=output_names, opset_version=opset)
    if exporter == 'dynamo':
        dim = torch.export.Dim.DYNAMIC
        torch.onnx.export(model, (example, ), out, dynamo=True, external_data=False,
                          dynamic_shapes=({2: dim, 3: dim}, ) if dynamic else None, **common)
    else:
        axes = None
        if dynamic:
            axes = {'input': {2: 'height', 3: 'width'}}
            axes.update({name: {2: f'{name}_height', 3: f'{name}_width'}
                         for name in output_names})
        torch.onnx.export(model, (example, ), out, dynamo=False, dynamic_axes=axes, **common)
    return output_names


def relative_difference(actual: Sequence, expected: Sequence[torch.Tensor]) -> float:
    """max |actual - expected| / max |expected|, over all outputs."""
    if len(actual) != len(expected):
        return float('inf')
    worst = 0.
    for a, e in zip(actual, expected):
        a = torch.as_tensor(a)
        if a.shape != e.shape:
            return float('inf')
        worst = max(worst, ((a - e).abs().max() / e.abs().max().clamp_min(1e-12)).item())
    return worst


def main(argv=None):
    args = parse_args(argv)
    check_packages()
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build(args)
    height, width = args.shape
    example = torch.randn(1, 3, height, width)
    out = args.out or osp.join('work_dirs', 'onnx',
                               osp.splitext(osp.basename(args.config))[0] + '.onnx')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    export(model, example, out, args.exporter, args.dynamic, args.opset)

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores as PyTorch
    session = ort.InferenceSession(out, options, providers=['CPUExecutionProvider'])
    checks = [example]
    if args.dynamic:
        checks.append(torch.randn(1, 3, height + 32, width + 64))
    for x in checks:
        with torch.no_grad():
            expected = model(x)
        actual = session.run(None, {'input': x.numpy()})
        diff = relative_difference(actual, expected)
        size = f'{x.shape[2]}x{x.shape[3]}'
        if not diff <= args.rtol:
            os.remove(out)
            raise SystemExit(
                f'REFUSED: onnxruntime\'s outputs differ from PyTorch\'s at {size}: relative '
                f'difference {diff:.3g} > --rtol {args.rtol:g}. {out} was deleted; the '
                f'{args.exporter} exporter did not reproduce the model.')
        print(f'onnxruntime matches PyTorch at {size}: relative difference {diff:.2g} '
              f'(<= {args.rtol:g})')

    with torch.no_grad():
        torch_s = median_seconds(lambda: model(example), args.repeat)
    ort_s = median_seconds(lambda: session.run(None, {'input': example.numpy()}), args.repeat)
    print(f'Latency at {height}x{width}, batch 1, {torch.get_num_threads()} thread(s), median of '
          f'{args.repeat}: PyTorch {torch_s * 1e3:.1f} ms, onnxruntime {ort_s * 1e3:.1f} ms '
          f'({torch_s / ort_s:.2f}x)')
    print(f'Wrote {out} ({osp.getsize(out) / 2**20:.1f} MB, {args.exporter} exporter'
          f'{", dynamic height/width" if args.dynamic else ""})')
    return dict(out=out, torch_ms=torch_s * 1e3, ort_ms=ort_s * 1e3)


if __name__ == '__main__':
    main()
