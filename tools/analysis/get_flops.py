r"""Parameters and FLOPs of a whole detector or segmentor, next to the paper's figures.

    python tools/analysis/get_flops.py configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py \
        [--shape 800 1280]
    python tools/analysis/get_flops.py \
        configs/upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py [--shape 512 2048]
    python tools/analysis/get_flops.py \
        mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py

CONFIG is a file, a name of the model zoo (``mask-rcnn_ravlt-s_fpn_amp-1x_coco``) or an mmdet /
mmseg config by its ``package::path`` name, to count the same head on another backbone.

``--shape H W`` is the input's height and width; by default the size the zoo's figures are
counted at (``Input Size`` of configs/metafile.yml), else that of the config's task.

The model is built through the registry of the config's ``default_scope`` (mmdet, mmseg), and
its ``mode='tensor'`` forward (what mmdet's and mmseg's own get_flops tools count) runs on one
random image through the model's data preprocessor. Both counts of ravlt_dense.tools.analysis.flops
(1 multiply-add = 1 FLOP), for the whole model and its backbone: full (traced, matrix products
included) and modules only (the mmcv 1.x counter's kind, which the paper's figures match).
Custom ops (RoIAlign, NMS) and element-wise ops are counted by neither.

Cascade heads: mmdet 3.3's ``CascadeRoIHead.forward`` runs every mask stage on all 1000
proposals, whereas the standard RoI head, and mmdet 2.x's ``forward_dummy`` that gave the paper's
figures, run mask heads on the first 100 RoIs; the count caps the cascade's mask RoIs alike.

Mask2Former: mmdet's (COCO instance, panoptic) gets the data samples through its detector's
tensor forward; mmseg's (ADE20K) decode head is called without them by ``EncoderDecoder``, so
TensorForward binds them to the head (mmseg's own get_flops refuses Mask2Former). DINO needs
more multi-scale tokens than its 900 queries: an input of at least about 256x256.
"""
import argparse
import importlib
import json
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction

from ravlt_dense import zoo
from ravlt_dense.models import build_model
from ravlt_dense.tools.analysis import PAPER_COUNTING, TensorForward, module_flops, traced_flops
from ravlt_dense.tools.cli import add_shape_argument, parsed_shape
from ravlt_dense.tools.names import resolve_model

# Data sample type that each scope's models expect next to the image tensor.
DATA_SAMPLES = {'mmdet': 'mmdet.structures.DetDataSample',
                'mmseg': 'mmseg.structures.SegDataSample'}


def paper_entry(config_path: str) -> Optional[Dict[str, float]]:
    """The paper's params (M), FLOPs (G) and input size (H, W) of a config of the model zoo
    (configs/metafile.yml); None for others (e.g. the quick-start models on synthetic data)."""
    name = zoo.name_of_config(config_path)
    return zoo.paper_figures(name) if name else None


def dummy_batch(model: nn.Module, scope: str, height: int, width: int) -> dict:
    """One random uint8 image of the given size, through the model's data preprocessor."""
    module, _, cls = DATA_SAMPLES.get(
        scope, 'mmengine.structures.BaseDataElement').rpartition('.')
    sample = getattr(importlib.import_module(module), cls)()
    shape = (height, width)
    sample.set_metainfo(dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                             batch_input_shape=shape, scale_factor=(1., 1.)))
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    return model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)


MASK_ROIS = 100  # RoIs a mask head sees in a counting forward (StandardRoIHead.forward)


def cap_cascade_mask_rois(model: nn.Module) -> bool:
    """Make a cascade RoI head's tensor forward run its mask stages on ``MASK_ROIS`` RoIs.

    The bbox stages still refine all proposals, as in mmdet's forward. Changes this instance
    only; returns whether the model has such a head.
    """
    roi_head = getattr(model, 'roi_head', None)
    if not (getattr(roi_head, 'with_mask', False) and hasattr(roi_head, '_refine_roi')):
        return False
    from mmdet.structures.bbox import bbox2roi

    def forward(x, rpn_results_list, batch_data_samples):
        metas = [sample.metainfo for sample in batch_data_samples]
        proposals = [result.bboxes for result in rpn_results_list]
        rois, cls_scores, bbox_preds = roi_head._refine_roi(
            x, bbox2roi(proposals), metas, tuple(len(p) for p in proposals))
        mask_rois = torch.cat(rois)[:MASK_ROIS]
        masks = tuple(roi_head._mask_forward(stage, x, mask_rois)['mask_preds']
                      for stage in range(roi_head.num_stages))
        return (cls_scores, bbox_preds) + masks

    roi_head.forward = forward
    return True


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def analyse(cfg: Config, height: int, width: int) -> dict:
    """Params and both FLOP counts of ``cfg.model`` (and of its backbone) on one image."""
    model = build_model(cfg)
    model.eval()
    capped = cap_cascade_mask_rois(model)
    scope = cfg.get('default_scope', 'mmdet')
    data = dummy_batch(model, scope, height, width)
    inputs = (data['inputs'], )
    wrapper = TensorForward(model, data['data_samples'])
    with torch.no_grad():
        full, modules = traced_flops(wrapper, inputs), module_flops(wrapper, inputs)
        backbone = getattr(model, 'backbone', None)
        if backbone is not None:
            bb_full, bb_modules = traced_flops(backbone, inputs), module_flops(backbone, inputs)
    return dict(
        input_shape=list(data['inputs'].shape),
        params=count_params(model),
        backbone_params=count_params(backbone) if backbone is not None else None,
        flops_traced=full['total'],
        flops_modules_only=modules['total'],
        flops_traced_matmul=full['matmul'],
        backbone_flops_traced=bb_full['total'] if backbone is not None else None,
        backbone_flops_modules_only=bb_modules['total'] if backbone is not None else None,
        mask_rois_capped=MASK_ROIS if capped else None,
        by_operator=dict(sorted(full['by_operator'].items(), key=lambda kv: -kv[1])),
        not_counted=sorted(full['unsupported']))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Params and FLOPs of a whole model')
    parser.add_argument('config', help='config (detection or segmentation): a file, a zoo '
                        'name, or mmdet::PATH / mmseg::PATH')
    add_shape_argument(parser, help='input size', default='the Input Size of the zoo model '
                       '(configs/metafile.yml), else 800 1280 for detection, 512 2048 for '
                       'segmentation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config')
    parser.add_argument('--json', action='store_true', help='print one JSON object instead')
    args = parser.parse_args(argv)
    try:
        args.config_file = resolve_model(args.config).config
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    args.shape = (parsed_shape(parser, args.shape) if args.shape
                  else default_shape(args.config_file))
    return args


# Input size (H, W) of a config outside the zoo, by scope: the zoo's sizes of the task.
DEFAULT_SHAPES = {'mmdet': [800, 1280], 'mmseg': [512, 2048]}


def default_shape(config_path: str) -> list:
    """The (H, W) the zoo's figures of ``config_path`` are counted at (its metafile Input
    Size), or, outside the zoo, the zoo's size for the config's task (default_scope)."""
    paper = paper_entry(config_path)
    if paper:
        return list(paper['shape'])
    return list(DEFAULT_SHAPES.get(Config.fromfile(config_path).get('default_scope', 'mmdet'),
                                   DEFAULT_SHAPES['mmdet']))


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config_file)  # runs custom_imports: registers RAVLT
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # Counting needs no weights: do not ask for the ImageNet checkpoint.
    if cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None
    result = analyse(cfg, *args.shape)
    result['config'] = args.config
    result['paper'] = paper_entry(args.config_file)
    if args.json:
        print(json.dumps(result))
        return result

    paper = result['paper'] or {}

    def beside(key, unit):
        if key not in paper:
            return ''
        at = ' at ' + 'x'.join(map(str, paper['shape'])) if key == 'flops' else ''
        return f'   (paper: {paper[key]}{unit}{at})'

    def fmt(n, unit):
        return f'{n / 1e6:.2f}M' if unit == 'M' else f'{n / 1e9:.1f}G'

    def with_backbone(total, backbone, unit):
        return fmt(total, unit) + (f' (backbone {fmt(backbone, unit)})'
                                   if backbone is not None else '')

    print(f'config: {args.config}')
    print(f'input:  {"x".join(map(str, result["input_shape"]))} (N x C x H x W)')
    print(f'params: {with_backbone(result["params"], result["backbone_params"], "M")}'
          + beside('params', 'M'))
    full = with_backbone(result['flops_traced'], result['backbone_flops_traced'], 'G')
    modules = with_backbone(result['flops_modules_only'], result['backbone_flops_modules_only'],
                            'G')
    print(f'FLOPs, full (traced, incl. matrix products): {full}, of which matrix products '
          f'{fmt(result["flops_traced_matmul"], "G")}')
    print(f'FLOPs, modules only (convs, linears, norms): {modules}' + beside('flops', 'G'))
    if result['mask_rois_capped']:
        print(f'cascade mask heads counted on {result["mask_rois_capped"]} RoIs, as Mask R-CNN\'s '
              '(mmdet 3.3 runs them on all proposals in tensor mode)')
    print('full count by operator: ' + ', '.join(
        f'{op} {fmt(n, "G")}' for op, n in result['by_operator'].items() if n >= 1e8))
    if result['not_counted']:
        print('not counted (no FLOP rule): ' + ', '.join(result['not_counted']))
    print('1 multiply-add = 1 FLOP. ' + PAPER_COUNTING)
    return result


if __name__ == '__main__':
    main()
