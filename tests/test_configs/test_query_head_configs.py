"""The query-based heads (DINO, Mask2Former) on RAVLT: configs/dino/ and configs/mask2former/
inherit mmdet's and mmseg's own configs. Each full config builds with RAVLT-S, loads a fake
release ImageNet checkpoint strictly and runs one training step and one inference on a small
image on the CPU; its optimizer follows the Swin versions of these configs. The quick-start
variants train a few dozen iterations through tools/train.py with the loss going down and
their metrics rising above the untrained model's (tools/misc/init_checkpoint.py +
tools/test.py), and the demos run on the trained checkpoints.
"""
import json
import re
from pathlib import Path

import cv2
import mmdet.models  # noqa: F401  mmseg's Mask2Former builds mmdet's modules
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from ravlt_dense import zoo
from ravlt_dense.models import build_model
from ravlt_dense.models.backbones.ravlt import RAVLT
from ravlt_dense.tools.names import resolve_model

from conftest import (
    IMG,
    REPO,
    load_script,
    randomised,
    release_imagenet_checkpoint,
    run_tool,
    shapes_options,
)

CONFIGS = REPO / 'configs'
DINO = CONFIGS / 'dino' / 'dino-4scale_ravlt-s_8xb2-12e_coco.py'
DINO_QUICK = CONFIGS / 'quickstart' / 'dino-4scale_ravlt-t_1xb4-4e_coco-shapes.py'
HF = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/'


@pytest.fixture(scope='module')
def imagenet_weights(module_tmp, one_thread):
    """``arch -> (file, state)``: random weights of a RAVLT variant in the authors' ImageNet
    layout, named as the release's file (RAVLT_T.pth ...), made once per variant."""
    made = {}

    def get(arch):
        if arch not in made:
            source = randomised(RAVLT(arch))
            path = module_tmp(f'in1k_{arch}') / f'RAVLT_{arch.upper()}.pth'
            torch.save(release_imagenet_checkpoint(source), path)
            made[arch] = path, source.state_dict()
        return made[arch]

    return get


@pytest.fixture(scope='module')
def imagenet_s(imagenet_weights):
    return imagenet_weights('s')


def official(name):
    """An OpenMMLab config by its ``mmdet::`` / ``mmseg::`` name."""
    return Config.fromfile(resolve_model(name).config)


def unscoped(node):
    """A config node without the ``_scope_`` keys that an ``mmdet::`` base adds."""
    if isinstance(node, dict):
        return {k: unscoped(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(unscoped(v) for v in node)
    return node


def build_pretrained(config, checkpoint):
    """The config's model with its backbone initialised from ``checkpoint`` (a file named as
    the release's, e.g. RAVLT_S.pth, in place of the config's URL)."""
    cfg = Config.fromfile(config)
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                               checkpoint=HF + Path(checkpoint).name)
    cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    return cfg, model


def assert_backbone_loaded(model, expected):
    loaded = model.backbone.state_dict()
    keys = [k for k in expected if not k.startswith('extra_norms.')]
    assert keys and all(torch.equal(loaded[k], expected[k]) for k in keys)


def assert_swin_style_optimizer(model, cfg, head_lr, head_decay):
    """Backbone at 0.1x the lr; its norms, layer scales and position terms not decayed."""
    cfg.optim_wrapper.type = 'OptimWrapper'
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    by_param = {id(p): g for g in groups for p in g['params']}
    names = dict(model.named_parameters())

    def lr_decay(name):
        group = by_param[id(names[name])]
        return group['lr'], group['weight_decay']

    for name in ('backbone.patch_embed.proj.1.weight', 'backbone.patch_embed.proj.10.bias',
                 'backbone.layers.0.blocks.0.norm1.norm.weight',
                 'backbone.layers.2.blocks.8.norm2.norm.bias',
                 'backbone.layers.1.downsample.norm.weight',
                 'backbone.extra_norms.3.norm.weight', 'backbone.layers.2.blocks.8.gamma_1',
                 'backbone.layers.3.blocks.2.gamma_2', 'backbone.layers.1.blocks.4.pos.weight'):
        assert lr_decay(name) == pytest.approx((head_lr * 0.1, 0.0)), name
    for name in ('backbone.layers.0.blocks.0.attn.qkvo.weight',
                 'backbone.patch_embed.proj.0.weight', 'backbone.layers.2.blocks.8.ffn.fc1.weight',
                 'backbone.layers.2.downsample.reduction.weight'):
        assert lr_decay(name) == pytest.approx((head_lr * 0.1, head_decay)), name
    return lr_decay


def det_batch(height=64, width=80, num_boxes=2):
    """One image with ``num_boxes`` boxes, as PackDetInputs delivers it."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    torch.manual_seed(0)
    shape = (height, width)
    sample = DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                         scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[4., 6., 30., 40.], [40., 20., 76., 60.]])[:num_boxes],
        labels=torch.tensor([3, 17])[:num_boxes])
    return dict(inputs=[torch.randint(0, 256, (3, height, width), dtype=torch.uint8)],
                data_samples=[sample])


def train_and_predict(model, cfg, batch):
    """One optimizer step in train mode, then one prediction in eval mode."""
    cfg.optim_wrapper.type = 'OptimWrapper'
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    log_vars = model.train_step(batch, optim_wrapper)
    assert all(torch.isfinite(v).all() for v in log_vars.values())
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    model.eval()
    with torch.no_grad():
        return log_vars, model.test_step(batch)


# --------------------------------------------------------------------------------------------
# DINO 4-scale
# --------------------------------------------------------------------------------------------
def test_dino_config_is_mmdets_with_ravlt_strides_8_to_32():
    cfg = Config.fromfile(DINO)
    mmdets = official('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py')
    backbone = cfg.model.backbone
    assert backbone.type == 'RAVLT' and backbone.arch == 's' and backbone.norm_eval
    assert backbone.out_indices == (1, 2, 3)
    assert backbone.drop_path_rate == RAVLT.arch_zoo['s']['drop_path_rate']
    dims = RAVLT.arch_zoo['s']['embed_dims']
    assert cfg.model.neck.in_channels == [dims[i] for i in backbone.out_indices]
    assert cfg.model.neck.num_outs == 4
    # everything else is mmdet's recipe
    for key in ('encoder', 'decoder', 'bbox_head', 'dn_cfg', 'train_cfg', 'test_cfg'):
        assert unscoped(cfg.model[key]) == unscoped(mmdets.model[key]), key
    for key in ('train_dataloader', 'val_dataloader', 'param_scheduler', 'train_cfg',
                'auto_scale_lr'):
        assert unscoped(cfg[key]) == unscoped(mmdets[key]), key
    for key in ('optimizer', 'clip_grad'):
        assert unscoped(cfg.optim_wrapper[key]) == unscoped(mmdets.optim_wrapper[key]), key


def test_dino_loads_imagenet_weights_trains_and_predicts(imagenet_s):
    checkpoint, expected = imagenet_s
    cfg, model = build_pretrained(DINO, checkpoint)
    assert_backbone_loaded(model, expected)
    lr_decay = assert_swin_style_optimizer(model, cfg, head_lr=1e-4, head_decay=1e-4)
    assert lr_decay('bbox_head.cls_branches.0.weight') == pytest.approx((1e-4, 1e-4))
    # DINO picks its 900 queries among the encoder's tokens: 256x256 gives 1360 (strides 8-64)
    log_vars, (pred, ) = train_and_predict(model, cfg, det_batch(256, 256))
    assert {'loss_cls', 'loss_bbox', 'loss_iou', 'dn_loss_cls', 'enc_loss_cls'} <= set(log_vars)
    assert len(pred.pred_instances) == 300  # mmdet's max_per_img
    assert pred.pred_instances.bboxes.shape == (300, 4)


def _scalars(work_dir):
    """The rows a tools/train.py run logged: training iterations and validations."""
    log = next(work_dir.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in log.read_text().splitlines()]


def _losses(work_dir):
    """The training losses logged by a tools/train.py run."""
    return [r['loss'] for r in _scalars(work_dir) if 'loss' in r]


def _trained_metrics(work_dir):
    """The metrics of the validation that ends a tools/train.py run."""
    return [r for r in _scalars(work_dir) if 'loss' not in r][-1]


def _untrained_metrics(config, options, work_dir):
    """The metrics of the config's model as initialised, before any training: the weights of
    tools/misc/init_checkpoint.py evaluated by tools/test.py."""
    checkpoint = work_dir / 'untrained.pth'
    run_tool(['tools/misc/init_checkpoint.py', config, checkpoint])
    run_tool(['tools/test.py', config, checkpoint, '--work-dir', work_dir / 'untrained',
              '--cfg-options', *options])
    return json.loads(next((work_dir / 'untrained').glob('*/*.json')).read_text())


def _last_checkpoint(work_dir):
    return Path((work_dir / 'last_checkpoint').read_text().strip())


def _image_demo(config, checkpoint, images, out_dir, num_classes):
    """demo/image_demo.py on ``images``: a drawing and the predictions of each."""
    run_tool(['demo/image_demo.py', config, checkpoint, *images, '--out-dir', out_dir,
              '--device', 'cpu', '--pred-score-thr', '0'])
    for image in images:
        assert (out_dir / 'vis' / f'{image.stem}.png').is_file()
        pred = json.loads((out_dir / 'preds' / f'{image.stem}.json').read_text())
        assert pred['instances'] and all(0 <= i['label'] < num_classes
                                         for i in pred['instances'])


def _on_training_images(root, panoptic=False):
    """--cfg-options that evaluate a COCO shapes quick start (validation in tools/train.py,
    tools/test.py) on its training images: a few dozen iterations from scratch fit those
    measurably, while held-out images still score 0 that early."""
    ann = 'panoptic_train' if panoptic else 'instances_train'
    options = []
    for split in ('val', 'test'):
        options += [f'{split}_dataloader.dataset.data_prefix.img=train/',
                    f'{split}_dataloader.dataset.ann_file=annotations/{ann}.json',
                    f'{split}_evaluator.ann_file={root}/annotations/{ann}.json']
        if panoptic:
            options += [f'{split}_dataloader.dataset.data_prefix.seg=annotations/{ann}/',
                        f'{split}_evaluator.seg_prefix={root}/annotations/{ann}/']
    return options


def test_dino_quickstart_learns_the_training_images(shapes, tmp_path):
    # the shapes of the suite (IMG px) at the quick start's 128 px: its 100 queries are picked
    # among the encoder's 340 tokens there (16x16 + 8x8 + 4x4 + 2x2)
    options = [o for o in shapes_options(shapes, batch_size=4)
               if not o.startswith('model.test_cfg.rcnn') and '.scale=' not in o]
    options += [f'{loader}.dataset.pipeline.{i}.scale=(128,128)' for loader, i in
                (('train_dataloader', 2), ('val_dataloader', 1), ('test_dataloader', 1))]
    options += _on_training_images(shapes)
    before = _untrained_metrics(DINO_QUICK, options, tmp_path)
    proc = run_tool(['tools/train.py', DINO_QUICK, '--work-dir', tmp_path, '--cfg-options',
                     *options, 'train_cfg.max_epochs=24', 'train_cfg.val_interval=24',
                     'param_scheduler.1.end=24', 'default_hooks.checkpoint.interval=24'],
                    timeout=600)
    losses = _losses(tmp_path)
    assert len(losses) == 48  # 24 epochs of 2 iterations
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
    after = _trained_metrics(tmp_path)
    assert after['coco/bbox_mAP_50'] > before['coco/bbox_mAP_50'], (before, after)
    assert after['coco/bbox_mAP'] > before['coco/bbox_mAP'], (before, after)
    _image_demo(DINO_QUICK, _last_checkpoint(tmp_path), sorted((shapes / 'val').glob('*'))[:2],
                tmp_path / 'demo', num_classes=4)


# --------------------------------------------------------------------------------------------
# Mask2Former: all four RAVLT outputs
# --------------------------------------------------------------------------------------------
M2F_ADE = CONFIGS / 'mask2former' / 'mask2former_ravlt-s_8xb2-160k_ade20k-512x512.py'
M2F_COCO = CONFIGS / 'mask2former' / 'mask2former_ravlt-s_8xb2-lsj-50e_coco.py'
M2F_PANOPTIC = CONFIGS / 'mask2former' / 'mask2former_ravlt-s_8xb2-lsj-50e_coco-panoptic.py'
M2F_QUICK = CONFIGS / 'quickstart' / 'mask2former_ravlt-t_1xb8-120it_ade-shapes-64x64.py'
M2F_COCO_QUICK = CONFIGS / 'quickstart' / 'mask2former_ravlt-t_1xb4-150it_coco-shapes.py'
M2F_PANOPTIC_QUICK = (CONFIGS / 'quickstart'
                      / 'mask2former_ravlt-t_1xb4-150it_coco-panoptic-shapes.py')
# RAVLT-B where mmdet / mmseg ship a Swin-B Mask2Former, and the Swin-B config it stands for
M2F_B_PANOPTIC = CONFIGS / 'mask2former' / 'mask2former_ravlt-b_8xb2-lsj-50e_coco-panoptic.py'
M2F_B_ADE = CONFIGS / 'mask2former' / 'mask2former_ravlt-b_8xb2-160k_ade20k-640x640.py'
M2F_B = {
    M2F_B_PANOPTIC: ('mmdet::mask2former/mask2former_swin-b-p4-w12-384_8xb2-lsj-50e_coco-panoptic'
                     '.py', 'panoptic_head'),
    M2F_B_ADE: ('mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640'
                '.py', 'decode_head'),
}
# each RAVLT-S config, the OpenMMLab config it inherits, and its head
M2F = {M2F_ADE: ('mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', 'decode_head'),
       M2F_COCO: ('mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', 'panoptic_head'),
       M2F_PANOPTIC: ('mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
                      'panoptic_head')}


def assert_openmmlab_mask2former_with_ravlt(config, base, head, arch):
    """``config`` is the OpenMMLab config ``base`` with RAVLT-``arch`` (its ImageNet weights,
    drop path, all four outputs) and the same head, data, schedule and optimizer."""
    cfg = Config.fromfile(config)
    theirs = official(base)
    backbone = cfg.model.backbone
    assert backbone.type == 'RAVLT' and backbone.arch == arch and backbone.norm_eval
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.drop_path_rate == RAVLT.arch_zoo[arch]['drop_path_rate']
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=HF + f'RAVLT_{arch.upper()}.pth')
    assert cfg.model[head].in_channels == list(RAVLT.arch_zoo[arch]['embed_dims'])
    assert 'SyncBN' not in cfg.pretty_text
    mine = {k: v for k, v in cfg.model[head].items() if k != 'in_channels'}
    assert unscoped(mine) == unscoped({k: v for k, v in theirs.model[head].items()
                                       if k != 'in_channels'})
    for key in ('train_dataloader', 'val_dataloader', 'val_evaluator', 'param_scheduler',
                'train_cfg', 'auto_scale_lr'):
        assert unscoped(cfg[key]) == unscoped(theirs[key]), key
    assert unscoped(cfg.model.data_preprocessor) == unscoped(theirs.model.data_preprocessor)
    for key in ('optimizer', 'clip_grad'):
        assert unscoped(cfg.optim_wrapper[key]) == unscoped(theirs.optim_wrapper[key]), key
    return cfg


@pytest.mark.parametrize('config', list(M2F), ids=lambda p: p.stem)
def test_mask2former_config_is_the_openmmlab_one_with_ravlt(config):
    base, head = M2F[config]
    cfg = assert_openmmlab_mask2former_with_ravlt(config, base, head, 's')
    # the T variant: RAVLT-T's widths, weights and drop path, everything else the S config's
    tiny = Config.fromfile(config.parent / config.name.replace('ravlt-s', 'ravlt-t'))
    assert tiny.model.backbone.arch == 't' and tiny.model.backbone.drop_path_rate == 0.1
    assert tiny.model.backbone.init_cfg.checkpoint == HF + 'RAVLT_T.pth'
    assert tiny.model[head].in_channels == list(RAVLT.arch_zoo['t']['embed_dims'])
    assert tiny.train_cfg == cfg.train_cfg
    # the same optimizer; the parameter rules name RAVLT-T's blocks (the S config's, RAVLT-S's)
    keys = tiny.optim_wrapper.paramwise_cfg.pop('custom_keys')
    assert keys == {**{k: v for k, v in cfg.optim_wrapper.paramwise_cfg.custom_keys.items()
                       if not k.startswith('backbone')}, **tiny.ravlt_custom_keys.t}
    cfg.optim_wrapper.paramwise_cfg.pop('custom_keys')
    assert tiny.optim_wrapper == cfg.optim_wrapper


def seg_batch(size=128, num_classes=150):
    """One image and its semantic label map, as PackSegInputs delivers them."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    label = torch.zeros(1, size, size, dtype=torch.long)
    label[:, size // 4:, :] = 3
    label[:, size // 2:size - 8, size // 4:size // 2] = num_classes - 1
    sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         pad_shape=(size, size)))
    sample.gt_sem_seg = PixelData(data=label)
    return dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8)],
                data_samples=[sample])


@pytest.mark.parametrize('config', [M2F_ADE, M2F_B_ADE], ids=['ravlt-s', 'ravlt-b'])
def test_mask2former_ade20k_loads_imagenet_weights_trains_and_predicts(config, imagenet_weights):
    cfg = Config.fromfile(config)
    checkpoint, expected = imagenet_weights(cfg.model.backbone.arch)
    cfg.model.data_preprocessor.size = (128, 128)  # 512x512 / 640x640 crops in the recipe
    cfg.dump(str(checkpoint.parent / 'ade.py'))
    cfg, model = build_pretrained(checkpoint.parent / 'ade.py', checkpoint)
    assert_backbone_loaded(model, expected)
    lr_decay = assert_swin_style_optimizer(model, cfg, head_lr=1e-4, head_decay=0.05)
    assert lr_decay('decode_head.query_embed.weight') == pytest.approx((1e-4, 0.0))
    assert lr_decay('decode_head.cls_embed.weight') == pytest.approx((1e-4, 0.05))
    log_vars, (pred, ) = train_and_predict(model, cfg, seg_batch())
    assert {'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice'} <= set(log_vars)
    assert pred.pred_sem_seg.data.shape == (1, 128, 128)
    assert pred.seg_logits.data.shape == (150, 128, 128)


def test_mask2former_ade_quickstart_learns(tmp_path, ade_gen):
    data = tmp_path / 'ade_shapes'
    ade_gen.make_ade_shapes(str(data), num_train=8, num_val=2, seed=0)
    options = [f'{split}_dataloader.dataset.data_root={data}' for split in ('train', 'val', 'test')]
    options += ['train_dataloader.batch_size=4']
    before = _untrained_metrics(M2F_QUICK, options, tmp_path)
    run_tool(['tools/train.py', M2F_QUICK, '--work-dir', tmp_path, '--cfg-options', *options,
              'train_cfg.max_iters=16', 'train_cfg.val_interval=16', 'param_scheduler.0.end=4',
              'param_scheduler.1.begin=4', 'param_scheduler.1.end=16',
              'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=16'])
    losses = _losses(tmp_path)
    assert len(losses) == 16
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4]), losses
    # on the held-out images: 16 iterations from scratch already beat the untrained mIoU
    after = _trained_metrics(tmp_path)
    assert after['mIoU'] > before['mIoU'] + 5, (before, after)
    images = sorted((data / 'images' / 'validation').glob('*'))
    run_tool(['demo/seg_demo.py', M2F_QUICK, _last_checkpoint(tmp_path), *images,
              '--out-dir', tmp_path / 'demo', '--device', 'cpu'])
    for image in images:
        assert (tmp_path / 'demo' / 'vis' / f'{image.stem}.png').is_file()
        label = cv2.imread(str(tmp_path / 'demo' / 'pred' / f'{image.stem}.png'),
                           cv2.IMREAD_UNCHANGED)
        assert label.shape == cv2.imread(str(image)).shape[:2] and label.max() < 5


def coco_mask_batch(size=128, stuff=None):
    """One image with two thing instances (boxes and masks) and, for panoptic training, a
    semantic map of the stuff class ``stuff`` (255 elsewhere), as PackDetInputs delivers them."""
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData
    batch = det_batch(size, size)
    sample = batch['data_samples'][0]
    masks = np.zeros((2, size, size), dtype=np.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, sample.gt_instances.bboxes.int().tolist()):
        mask[y0:y1, x0:x1] = 1
    sample.gt_instances.masks = BitmapMasks(masks, size, size)
    if stuff is not None:
        sem = torch.full((1, size, size), 255, dtype=torch.long)
        sem[:, size // 2:, :] = stuff
        sem[:, torch.from_numpy(masks.any(0))] = 255
        sample.gt_sem_seg = PixelData(sem_seg=sem)
    assert isinstance(sample, DetDataSample) and isinstance(sample.gt_instances, InstanceData)
    return batch


@pytest.mark.parametrize('config', [M2F_COCO, M2F_PANOPTIC], ids=['instance', 'panoptic'])
def test_mask2former_coco_loads_imagenet_weights_trains_and_predicts(config, imagenet_s):
    checkpoint, expected = imagenet_s
    cfg = Config.fromfile(config)
    # 1024x1024 in the recipe (LSJ): the batch is padded to 128x128 here
    cfg.model.data_preprocessor.batch_augments[0].size = (128, 128)
    cfg.dump(str(checkpoint.parent / 'coco.py'))
    cfg, model = build_pretrained(checkpoint.parent / 'coco.py', checkpoint)
    assert_backbone_loaded(model, expected)
    lr_decay = assert_swin_style_optimizer(model, cfg, head_lr=1e-4, head_decay=0.05)
    assert lr_decay('panoptic_head.query_embed.weight') == pytest.approx((1e-4, 0.0))
    panoptic = config == M2F_PANOPTIC
    batch = coco_mask_batch(stuff=100 if panoptic else None)
    log_vars, (pred, ) = train_and_predict(model, cfg, batch)
    assert {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_dice'} <= set(log_vars)
    # mmdet keeps the 100 best (query, class) pairs, in the panoptic model those of things only
    instances = pred.pred_instances
    assert len(instances) == (len(instances) if panoptic else 100) <= 100
    assert instances.masks.shape[1:] == (128, 128)
    assert all(label < 80 for label in instances.labels.tolist())  # things
    if panoptic:
        # panoptic ids: label + id * INSTANCE_OFFSET (1000), unlabelled pixels 133 (mmdet)
        ids = pred.pred_panoptic_seg.sem_seg
        assert ids.shape == (1, 128, 128)
        assert int((ids % 1000).max()) <= 133
    else:
        assert 'pred_panoptic_seg' not in pred


def test_mask2former_instance_quickstart_learns_the_training_images(shapes, tmp_path):
    options = [o for o in shapes_options(shapes, batch_size=4)
               if not o.startswith('model.test_cfg.rcnn')] + _on_training_images(shapes)
    before = _untrained_metrics(M2F_COCO_QUICK, options, tmp_path)
    proc = run_tool(['tools/train.py', M2F_COCO_QUICK, '--work-dir', tmp_path, '--cfg-options',
                     *options, 'train_cfg.max_iters=48', 'train_cfg.val_interval=48',
                     'param_scheduler.1.begin=4', 'param_scheduler.1.end=48',
                     'default_hooks.checkpoint.interval=48'], timeout=600)
    losses = _losses(tmp_path)
    assert len(losses) == 48
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses
    assert 'coco/segm_mAP' in proc.stdout + proc.stderr
    after = _trained_metrics(tmp_path)
    assert after['coco/segm_mAP_50'] > before['coco/segm_mAP_50'], (before, after)
    _image_demo(M2F_COCO_QUICK, _last_checkpoint(tmp_path),
                sorted((shapes / 'val').glob('*'))[:2], tmp_path / 'demo', num_classes=4)


@pytest.fixture(scope='module')
def panoptic_shapes(module_tmp):
    """A generated COCO-panoptic shapes set of 8 + 4 images of IMG px."""
    root = module_tmp('coco_panoptic_shapes')
    gen = load_script('tools/data/make_coco_panoptic_shapes.py')
    gen.make_coco_panoptic_shapes(str(root), num_train=8, num_val=4, size=IMG, seed=0,
                                  max_objects=3)
    return root


def test_mask2former_panoptic_quickstart_learns_the_training_images(panoptic_shapes, tmp_path):
    # mmdet's LoadPanopticAnnotations and CocoPanopticMetric import it (requirements/stack*.txt)
    pytest.importorskip('panopticapi', reason='needs panopticapi '
                        '(pip install --no-deps panopticapi-lite==0.2.0)')
    options = [
        *(f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
          for key in (f'dataset.data_root={panoptic_shapes}/', 'batch_size=4')),
        f'train_dataloader.dataset.pipeline.2.scale=({IMG},{IMG})',
        f'val_dataloader.dataset.pipeline.1.scale=({IMG},{IMG})',
        f'test_dataloader.dataset.pipeline.1.scale=({IMG},{IMG})',
        *_on_training_images(panoptic_shapes, panoptic=True),
        'default_hooks.logger.interval=1', 'param_scheduler.0.end=4', 'randomness.seed=0',
    ]
    before = _untrained_metrics(M2F_PANOPTIC_QUICK, options, tmp_path)
    proc = run_tool(['tools/train.py', M2F_PANOPTIC_QUICK, '--work-dir', tmp_path,
                     '--cfg-options', *options, 'train_cfg.max_iters=48',
                     'train_cfg.val_interval=48', 'param_scheduler.1.begin=4',
                     'param_scheduler.1.end=48', 'default_hooks.checkpoint.interval=48'],
                    timeout=600)
    losses = _losses(tmp_path)
    assert len(losses) == 48
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses
    assert 'Panoptic Evaluation Results' in proc.stdout + proc.stderr
    # PQ of the things and of the stuff class, each above the untrained model's
    after = _trained_metrics(tmp_path)
    for key in ('coco_panoptic/PQ', 'coco_panoptic/PQ_th', 'coco_panoptic/PQ_st'):
        assert after[key] > before[key], (key, before, after)
    _image_demo(M2F_PANOPTIC_QUICK, _last_checkpoint(tmp_path),
                sorted((panoptic_shapes / 'val').glob('*'))[:2], tmp_path / 'demo',
                num_classes=4)


# --------------------------------------------------------------------------------------------
# RAVLT-B: where mmdet / mmseg ship a Swin-B Mask2Former (COCO panoptic, ADE20K at 640x640);
# the ADE20K one is stepped by the RAVLT-S test above
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('config', list(M2F_B), ids=lambda p: p.stem)
def test_mask2former_ravlt_b_is_the_swin_b_config_with_ravlt(config):
    # Swin-B's recipe: data (ADE20K: 640x640 crops), schedule and optimizer
    base, head = M2F_B[config]
    cfg = assert_openmmlab_mask2former_with_ravlt(config, base, head, 'b')
    # RAVLT's parameter rules in place of Swin's (no Swin name is left to match nothing)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert not [k for k in keys if 'stages' in k or 'relative_position' in k
                or 'absolute_pos_embed' in k or k == 'backbone.norm']
    assert all(keys[k] == dict(lr_mult=1.0, decay_mult=0.0)
               for k in ('query_embed', 'query_feat', 'level_embed'))


CONFIG_ONLY = sorted([*(CONFIGS / 'dino').glob('*.py'), *(CONFIGS / 'mask2former').glob('*.py')])


@pytest.mark.parametrize('config', CONFIG_ONLY, ids=lambda p: p.stem)
def test_zoo_lists_the_config_and_its_backbone_loads_the_imagenet_weights(
        config, imagenet_weights):
    name = zoo.name_of_config(str(config))
    assert name == config.stem and not zoo.has_weights(name)
    cfg = Config.fromfile(config)
    backbone = zoo.get(name)['Metadata']['Backbone']
    assert cfg.model.backbone.init_cfg.checkpoint == zoo.weights_url(backbone)
    # the release's file of the zoo backbone, loaded strictly by the config's init_cfg
    checkpoint, expected = imagenet_weights(cfg.model.backbone.arch)
    cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    model = build_model(cfg)
    model.init_weights()
    assert_backbone_loaded(model, expected)
    assert sum(p.numel() for p in model.parameters()) == zoo.measured(name)['params']


# Backbone parameters the query heads' rules exempt from weight decay: norms (LayerNorms, the
# stem's and downsamplings' BNs, the output norms), layer scales and position convolutions
NO_DECAY = re.compile(r'norm|\.gamma_[12]$|\.pos\.|\.attn\.lepe\.|patch_embed\.proj\.(1|4|7|10)\.')


@pytest.mark.parametrize('config', CONFIG_ONLY, ids=lambda p: p.stem)
def test_parameter_rules_name_parameters_and_give_each_group_its_decay(config):
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg)
    names = {id(p): name for name, p in model.named_parameters()}
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert not [key for key in keys if not any(key in name for name in names.values())]
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    lr, decay = optimizer.defaults['lr'], optimizer.defaults['weight_decay']
    groups = {names[id(p)]: group for group in optimizer.param_groups for p in group['params']}
    backbone = {name: group for name, group in groups.items() if name.startswith('backbone.')}
    assert len(backbone) == len(list(model.backbone.parameters()))
    for name, group in backbone.items():
        assert group['lr'] == pytest.approx(0.1 * lr), name
        assert group['weight_decay'] == (0. if NO_DECAY.search(name) else decay), name
    exempt = [name for name in backbone if NO_DECAY.search(name)]
    for part in ('norm1', 'extra_norms', 'gamma_1', '.pos.', 'attn.lepe', 'downsample.norm'):
        assert any(part in name for name in exempt), part
