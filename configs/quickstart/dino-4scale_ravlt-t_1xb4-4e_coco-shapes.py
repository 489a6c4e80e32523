# Quick start: DINO 4-scale + RAVLT-T from scratch on the synthetic shapes set (128 px images)
# on a CPU, boxes only, evaluated with mmdet's CocoMetric:
#     python tools/data/make_coco_shapes.py      # -> data/coco_shapes
#     python tools/train.py configs/quickstart/dino-4scale_ravlt-t_1xb4-4e_coco-shapes.py
# The model of configs/dino/dino-4scale_ravlt-s_8xb2-12e_coco.py with RAVLT-T and a slim
# transformer for 4 classes: 2 encoder and 2 decoder layers with 512-wide FFNs, 100 queries and
# 20 denoising queries (6 + 6 layers, 2048, 900 + 100 there). The width stays 256: mmdet's DINO
# decoder encodes the reference points with 128 features per coordinate, whatever embed_dims.
# DINO picks its queries among the encoder's tokens: at 128 px there are 340 (16x16 + 8x8 + 4x4
# + 2x2), enough for 100 queries (the COCO config's 900 need images of about 250 px or more).
# mmcv's multi-scale deformable attention runs through its PyTorch path on a CPU
# (grid_sample per level). 4 epochs (96 iterations) train in about 70 s on 2 cores: bbox mAP
# 0.113 (0.000 untrained; QUICK_MODELS=dino bash tools/quickstart.sh).
_base_ = '../dino/dino-4scale_ravlt-s_8xb2-12e_coco.py'

classes = ('circle', 'square', 'triangle', 'star')  # make_coco_shapes.CLASSES
data_root = 'data/coco_shapes/'
img_scale = (128, 128)

model = dict(
    num_queries=100,
    # RAVLT-T from scratch: the BNs must learn their statistics, no drop path for so short a run.
    backbone=dict(arch='t', init_cfg=None, norm_eval=False, drop_path_rate=0.),
    neck=dict(in_channels=[128, 256, 512]),
    encoder=dict(
        num_layers=2,
        layer_cfg=dict(
            ffn_cfg=dict(feedforward_channels=512))),
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(
            ffn_cfg=dict(feedforward_channels=512))),
    bbox_head=dict(num_classes=len(classes)),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
    test_cfg=dict(max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# Loading 128 px images is cheap next to the model: workers would only compete for the cores.
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Plain fp32 AdamW from scratch: every parameter at the same lr (the 0.1x backbone of the COCO
# recipe is for fine-tuning ImageNet weights), no decay on norms, DETR's tight gradient clip
# relaxed to 1.0 for a random initialisation.
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    logger=dict(interval=8),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

# One seed for every quick start (tools/misc/init_checkpoint.py's default too).
randomness = dict(seed=0, deterministic=False)
