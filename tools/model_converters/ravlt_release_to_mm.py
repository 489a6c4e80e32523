"""Convert the authors' RAVLT detection (mmdet 2.x) / segmentation (mmseg 0.x) checkpoints.

    python tools/model_converters/ravlt_release_to_mm.py SRC.pth DST.pth [--config CONFIG]

With --config, every key is checked against the model the config builds (our mmdet 3.x /
mmseg 1.x configs); without it, the backbone keys are checked against the RAVLT variant the
shapes belong to. Missing, unexpected and mis-shaped keys are listed by name and nothing is
written unless all keys fit. The output loads with ``tools/test.py CONFIG DST.pth``.
"""
import argparse
import os
import os.path as osp
import pickle
import sys

import torch

import ravlt_dense  # noqa: F401  registers RAVLT and the safe checkpoint types
from ravlt_dense.checkpoint import (
    convert_release_checkpoint,
    fit_state_dict,
    infer_arch,
    to_backbone_state_dict,
)
from ravlt_dense.models import build_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help="the authors' checkpoint (.pth)")
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--config', help='our config of the same model, to check every key')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle SRC with weights_only=False; only for files you trust')
    return parser.parse_args(argv)


def load(path: str, unsafe: bool) -> dict:
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=not unsafe)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f'{path} holds Python objects that torch will not unpickle safely ({e}). If you '
            f'trust the file, run again with --unsafe-load.') from e


def config_model(config: str) -> torch.nn.Module:
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # the check needs the structure, not the ImageNet weights
    return build_model(cfg)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return convert(args)
    except (FileNotFoundError, RuntimeError, ValueError, TypeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1


def convert(args) -> int:
    checkpoint = load(args.src, args.unsafe_load)
    converted = convert_release_checkpoint(checkpoint)
    state_dict = converted['state_dict']
    if args.config:
        model, checked = config_model(args.config), state_dict
        what = f'the model of {args.config}'
    else:
        checked, _ = to_backbone_state_dict(state_dict)
        arch = infer_arch(checked, ravlt_dense.RAVLT.arch_zoo)
        model = ravlt_dense.RAVLT(arch)
        what = f'RAVLT({arch!r}) (backbone keys only; pass --config to check the heads)'
    try:
        fit_state_dict(model, checked, args.src, what)
    except ValueError as err:
        print(f'{err}\nThe checkpoint does not fit: nothing written.', file=sys.stderr)
        return 1
    meta = dict(converted_from=osp.basename(args.src), ravlt_dense=ravlt_dense.__version__)
    meta.update(converted['meta'])  # dataset_meta, when the file names its classes
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'{len(state_dict)} tensors checked against {what}: all keys fit. Wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
