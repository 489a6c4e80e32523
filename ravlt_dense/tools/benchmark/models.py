"""What the benchmark compares: the registry of backbones (RAVLT's variants and mixes, and the
competitors), the whole detectors / segmentors beside the same config with Swin-T, and how each
is built. A name ``module:factory`` measures any network: ``factory((H, W))`` from the
importable ``module`` builds it (a user's own model, or a test's)."""
import importlib
import importlib.util
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch.nn as nn

from ravlt_dense.zoo import ROOT

# The whole models' configs are the package's: a clone's configs/, a wheel's .mim/configs/.
# mmdet, mmseg and the models' own modules are imported where a model needs them.
REPO = Path(ROOT)

RALA_ONLY = ('rala', ) * 4


class Backbone(NamedTuple):
    description: str
    build: Callable[[Tuple[int, int]], nn.Module]  # from the input's (H, W): timm's Swin needs it
    needs: Tuple[str, ...] = ()  # Python packages it imports (OpenMMLab's import mmcv)
    ravlt: bool = False  # has RALA, so a fused-kernel setting


def _ravlt(arch: str, all_rala: bool) -> Callable[[Tuple[int, int]], nn.Module]:
    def build(shape):
        from ravlt_dense.models.backbones.ravlt import RAVLT
        kwargs = dict(attn_types=RALA_ONLY) if all_rala else {}
        return RAVLT(arch, **kwargs)
    return build


def _mmdet(cfg: dict) -> Callable[[Tuple[int, int]], nn.Module]:
    def build(shape):
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.registry import DefaultScope
        register_all_modules(init_default_scope=False)
        # in mmdet's scope whatever scope the process is in (a config loaded before, a runner)
        with DefaultScope.overwrite_default_scope('mmdet'):
            return MODELS.build(dict(cfg))
    return build


def _convnext_t(shape) -> nn.Module:
    # mmpretrain's, as mmdet's own ConvNeXt configs use it (type='mmpretrain.ConvNeXt')
    try:
        from mmpretrain.models import ConvNeXt
    except TypeError as err:  # its multimodal models, loaded beside transformers >= 5
        raise RuntimeError(
            f'mmpretrain does not import here ({type(err).__name__}: {err}): its multimodal '
            "models need transformers < 5. Measure 'convnext_t_timm' (the same network) "
            "instead, or pip install 'transformers<5'") from err
    return ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)


class ChannelsFirst(nn.Module):
    """A feature network's channels-last maps as the (N, C, H, W) maps a neck takes, made
    contiguous as mmdet's Swin-T makes its own."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return [m.permute(0, 3, 1, 2).contiguous() for m in self.net(x)]


def _timm(name: str, sized: bool = False) -> Callable[[Tuple[int, int]], nn.Module]:
    # sized: the network fixes its patch grid (and Swin its shift masks) at construction
    def build(shape):
        import timm
        kwargs = dict(img_size=tuple(shape)) if sized else {}
        net = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        return ChannelsFirst(net) if net.output_fmt.value == 'NHWC' else net
    return build


# The competitors are OpenMMLab's implementations, the ones a user of this backbone swaps in
# mmdet / mmseg configs (as the whole-model rows below do); they need mmcv with its ops built.
SWIN_T = dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
              num_heads=[3, 6, 12, 24], window_size=7, out_indices=(0, 1, 2, 3))
SWIN_S = dict(SWIN_T, depths=[2, 2, 18, 2])
SWIN_T_CHANNELS = [96, 192, 384, 768]
# The ratios of the summary table are against the first of these measured in the run: mmdet's
# Swin-T, or timm's where mmcv's ops are not built.
BASELINES = ('swin_t', 'swin_t_timm')
MMDET = ('mmdet', 'mmcv')  # what mmdet's models need installed

BACKBONES: Dict[str, Backbone] = {
    **{f'ravlt_{arch}{suffix}': Backbone(f'RAVLT-{arch.upper()} {mix}', _ravlt(arch, all_rala),
                                         ravlt=True)
       for all_rala, suffix, mix in ((False, '', '(released mix)'), (True, '_rala', 'all-RALA'))
       for arch in 'tsbl'},
    'swin_t': Backbone('Swin-T (mmdet)', _mmdet(SWIN_T), MMDET),
    'swin_s': Backbone('Swin-S (mmdet)', _mmdet(SWIN_S), MMDET),
    'r50': Backbone('ResNet-50 (mmdet)', _mmdet(dict(type='ResNet', depth=50,
                                                     out_indices=(0, 1, 2, 3))), MMDET),
    'pvtv2_b2': Backbone('PVTv2-b2 (mmdet)', _mmdet(dict(type='PyramidVisionTransformerV2',
                                                         embed_dims=64, num_layers=[3, 4, 6, 3])),
                         MMDET),
    'convnext_t': Backbone('ConvNeXt-T (mmpretrain)', _convnext_t, ('mmpretrain', 'mmcv')),
    # the same networks where mmpretrain, or mmcv's ops, are missing
    'convnext_t_timm': Backbone('ConvNeXt-T (timm)', _timm('convnext_tiny'), ('timm', )),
    'swin_t_timm': Backbone('Swin-T (timm)', _timm('swin_tiny_patch4_window7_224', sized=True),
                            ('timm', )),
}
DEFAULT_BACKBONES = ('ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_t_rala', 'ravlt_s_rala',
                     'ravlt_b_rala', 'swin_t', 'swin_s', 'r50', 'pvtv2_b2', 'convnext_t')

# Whole models: name -> (description, config, replace the backbone by Swin-T?, default shape).
# 1333 is padded to 1344 (a multiple of 32) as mmdet's data preprocessor does.
COCO, ADE = (800, 1344), (512, 512)
WHOLE_MODELS = {
    'maskrcnn_ravlt_s': ('Mask R-CNN RAVLT-S',
                         'configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py', False, COCO),
    'maskrcnn_swin_t': ('Mask R-CNN Swin-T',
                        'configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py', True, COCO),
    'maskrcnn_ravlt_t': ('Mask R-CNN RAVLT-T',
                         'configs/mask_rcnn/mask-rcnn_ravlt-t_fpn_amp-1x_coco.py', False, COCO),
    'upernet_ravlt_s': ('UperNet RAVLT-S',
                        'configs/upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py',
                        False, ADE),
    'upernet_swin_t': ('UperNet Swin-T',
                       'configs/upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py',
                       True, ADE),
    'maskrcnn_ravlt_s_rala': ('Mask R-CNN RAVLT-S all-RALA',
                              'configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py',
                              False, COCO),
    'upernet_ravlt_s_rala': ('UperNet RAVLT-S all-RALA',
                             'configs/upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py',
                             False, ADE),
    # Query heads: Mask2Former's Swin-T is mmdet's / mmseg's own config (scope::path).
    'dino_ravlt_s': ('DINO-4scale RAVLT-S', 'configs/dino/dino-4scale_ravlt-s_8xb2-12e_coco.py',
                     False, COCO),
    # mmdet has no DINO Swin-T config: ours with Swin-T's stride 8-32 maps, as mmdet's DINO Swin-L.
    'dino_swin_t': ('DINO-4scale Swin-T', 'configs/dino/dino-4scale_ravlt-s_8xb2-12e_coco.py',
                    True, COCO),
    'mask2former_ravlt_s': ('Mask2Former RAVLT-S (COCO instance)',
                            'configs/mask2former/mask2former_ravlt-s_8xb2-lsj-50e_coco.py',
                            False, COCO),
    'mask2former_swin_t': ('Mask2Former Swin-T (COCO instance)',
                           'mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py',
                           False, COCO),
    'mask2former_ravlt_s_ade20k': (
        'Mask2Former RAVLT-S (ADE20K)',
        'configs/mask2former/mask2former_ravlt-s_8xb2-160k_ade20k-512x512.py', False, ADE),
    'mask2former_swin_t_ade20k': (
        'Mask2Former Swin-T (ADE20K)',
        'mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py', False, ADE),
}
DEFAULT_WHOLE_MODELS = ('maskrcnn_ravlt_s', 'maskrcnn_swin_t', 'upernet_ravlt_s',
                        'upernet_swin_t')
# Whole models whose backbone config changes beyond the file's: the all-RALA mix of RAVLT-S.
BACKBONE_CHANGES = {'maskrcnn_ravlt_s_rala': dict(attn_types=RALA_ONLY),
                    'upernet_ravlt_s_rala': dict(attn_types=RALA_ONLY)}


def is_factory(name: str) -> bool:
    """Whether ``name`` is ``module:factory`` rather than a registry name (mmdet::/mmseg:: config
    names have two colons and are no model names here)."""
    module, sep, attr = name.partition(':')
    return bool(sep and module and attr) and ':' not in attr


def factory(name: str) -> Callable[[Tuple[int, int]], nn.Module]:
    """The callable ``module:factory`` names; ImportError / AttributeError say what is missing."""
    module, _, attr = name.partition(':')
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError:
        raise AttributeError(f'{name}: module {module!r} has no {attr!r}') from None


def known_names(level: str):
    """The registry's names at ``level`` (what --models takes besides ``module:factory``)."""
    return sorted(BACKBONES if level == 'backbone' else WHOLE_MODELS)


def missing_requirement(name: str, level: str) -> Optional[str]:
    """Why ``name`` cannot be measured here (a note for the report), or None."""
    if is_factory(name):
        try:
            factory(name)
        except (ImportError, AttributeError) as err:
            return f'cannot import {name!r} ({type(err).__name__}: {err})'
        return None
    if level == 'backbone':
        if name not in BACKBONES:
            return f'unknown backbone (choose from {sorted(BACKBONES)})'
        needs = BACKBONES[name].needs
    else:
        if name not in WHOLE_MODELS:
            return f'unknown model (choose from {sorted(WHOLE_MODELS)})'
        needs = MMDET if scope_of(name) == 'mmdet' else ('mmseg', ) + MMDET
    for pkg in needs:
        if importlib.util.find_spec(pkg) is None:
            return f'{pkg} is not installed'
    if 'mmdet' in needs and importlib.util.find_spec('mmcv._ext') is None:
        return "mmcv's ops are not built (mmdet imports them)"
    return None


def baseline(names) -> Optional[str]:
    """The first of BASELINES among the models measured (``names``), or None."""
    names = set(names)
    return next((b for b in BASELINES if b in names), None)


# RAVLT's paths: the fast one (RALA's fused kernels where they apply: CUDA), the fast one with
# the kernels switched off (RAVLT(rala_kernel=False)), and the formulas written out.
PATHS = ('fast', 'fast-nokernel', 'reference')


def has_rala(name: str, level: str) -> bool:
    """Whether the model is or holds RAVLT, i.e. has PATHS to measure."""
    if level == 'backbone':
        return name in BACKBONES and BACKBONES[name].ravlt
    if name not in WHOLE_MODELS:
        return False
    _, cfg_file, swin, _ = WHOLE_MODELS[name]
    return not swin and '::' not in cfg_file  # mmdet's / mmseg's own configs hold no RAVLT


def _swap_to_swin(model_cfg) -> None:
    """Swin-T in place of the backbone; the first consumer's in_channels follow (neck or head)."""
    out_indices = tuple(model_cfg.backbone.get('out_indices', SWIN_T['out_indices']))
    model_cfg.backbone = dict(SWIN_T, type='mmdet.SwinTransformer', out_indices=out_indices)
    neck = model_cfg.get('neck')
    if neck is not None and 'in_channels' in neck:
        neck.in_channels = [SWIN_T_CHANNELS[i] for i in out_indices]
        return
    for key in ('decode_head', 'auxiliary_head'):
        head = model_cfg.get(key)
        if head is None:
            continue
        if isinstance(head.in_channels, (list, tuple)):
            head.in_channels = [SWIN_T_CHANNELS[i] for i in head.in_index]
        else:
            head.in_channels = SWIN_T_CHANNELS[head.in_index]


def config_path(cfg_file: str) -> str:
    """A whole model's config file: the clone's, or ``scope::path`` in mmdet's / mmseg's own."""
    from ravlt_dense.tools.names import package_config
    return package_config(cfg_file) if '::' in cfg_file else str(REPO / cfg_file)


def scope_of(name: str) -> str:
    """'mmdet' or 'mmseg': whose registry builds whole model ``name``."""
    cfg_file = WHOLE_MODELS[name][1]
    if '::' in cfg_file:
        return cfg_file.partition('::')[0]
    return 'mmseg' if 'ade20k' in cfg_file else 'mmdet'


def build_whole_model(name: str, batch: int, shape: Tuple[int, int]) -> nn.Module:
    """The model in "tensor" mode (``ravlt_dense.tools.analysis.TensorForward``), random weights."""
    from mmengine.config import Config

    from ravlt_dense.tools.analysis import TensorForward
    _, cfg_file, swin, _ = WHOLE_MODELS[name]
    cfg = Config.fromfile(config_path(cfg_file))
    model_cfg = cfg.model
    model_cfg.backbone.pop('init_cfg', None)  # random weights: timing needs no checkpoint
    model_cfg.pop('pretrained', None)
    if swin:
        _swap_to_swin(model_cfg)
    model_cfg.backbone.update(BACKBONE_CHANGES.get(name, {}))
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    import ravlt_dense  # noqa: F401  (registers RAVLT)
    if scope_of(name) == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample as Sample
        from mmdet.utils import register_all_modules
    else:
        import mmdet.models  # noqa: F401  (mmdet.SwinTransformer)
        from mmseg.registry import MODELS
        from mmseg.structures import SegDataSample as Sample
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return TensorForward(MODELS.build(model_cfg), [Sample(metainfo=meta) for _ in range(batch)])


def build(name: str, level: str, batch: int = 1, shape=(224, 224)) -> nn.Module:
    if is_factory(name):
        model = factory(name)(tuple(shape))
    elif level == 'backbone':
        model = BACKBONES[name].build(shape)
    else:
        model = build_whole_model(name, batch, shape)
    # No init_weights(): timing and FLOPs do not depend on the values, and mmengine would log
    # every parameter of models without an init_cfg.
    model.eval()  # not chained: several mm backbones' train() return None
    return model


def description(name: str, level: str) -> str:
    if level == 'backbone':
        return BACKBONES[name].description if name in BACKBONES else name
    return WHOLE_MODELS[name][0] if name in WHOLE_MODELS else name
