# Quick start: Mask2Former panoptic segmentation + RAVLT-T from scratch on the synthetic COCO
# panoptic shapes set (128 px images, 4 thing classes + 1 stuff class) on a CPU, evaluated with
# mmdet's CocoPanopticMetric (PQ, SQ, RQ):
#     python tools/data/make_coco_panoptic_shapes.py      # -> data/coco_panoptic_shapes
#     python tools/train.py \
#         configs/quickstart/mask2former_ravlt-t_1xb4-150it_coco-panoptic-shapes.py
# 150 iterations train in about 80 s on 2 cores: PQ 29.3 (things 12.0, the stuff class 98.6;
# 0.0 untrained; QUICK_MODELS=mask2former-panoptic bash tools/quickstart.sh).
# Needs panopticapi (requirements/stack*.txt: panopticapi-lite, installed without its numpy<2).
# The model of configs/mask2former/mask2former_ravlt-t_8xb2-lsj-50e_coco-panoptic.py with the
# shapes classes and the slim head of mask2former_ravlt-t_1xb4-150it_coco-shapes.py: 64
# channels (256 there), 1 pixel-decoder layer (6), 3 transformer-decoder layers (9), 20 queries
# (100), 1024 sampled points per mask (12544). Batches are padded to 128x128 (1024x1024
# there), without the large-scale jitter of the COCO recipe.
_base_ = '../mask2former/mask2former_ravlt-t_8xb2-lsj-50e_coco-panoptic.py'

thing_classes = ('circle', 'square', 'triangle', 'star')  # make_coco_panoptic_shapes.CLASSES
stuff_classes = ('background', )  # make_coco_panoptic_shapes.STUFF
num_things_classes = len(thing_classes)
num_stuff_classes = len(stuff_classes)
num_classes = num_things_classes + num_stuff_classes
metainfo = dict(classes=thing_classes + stuff_classes, thing_classes=thing_classes,
                stuff_classes=stuff_classes)
data_root = 'data/coco_panoptic_shapes/'
img_scale = (128, 128)
channels = 64
max_iters = 150

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=img_scale, img_pad_value=0, pad_mask=True,
             mask_pad_value=0, pad_seg=True, seg_pad_value=255)
    ]),
    # RAVLT-T from scratch: the BNs must learn their statistics, no drop path for so short a run.
    backbone=dict(init_cfg=None, norm_eval=False, drop_path_rate=0.),
    panoptic_head=dict(
        feat_channels=channels,
        out_channels=channels,
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        num_queries=20,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=channels),
                    ffn_cfg=dict(embed_dims=channels, feedforward_channels=4 * channels))),
            positional_encoding=dict(num_feats=channels // 2)),
        positional_encoding=dict(num_feats=channels // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=channels),
                cross_attn_cfg=dict(embed_dims=channels),
                ffn_cfg=dict(embed_dims=channels, feedforward_channels=4 * channels))),
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes,
                              num_stuff_classes=num_stuff_classes),
    train_cfg=dict(num_points=1024),
    # a panoptic segment needs its query's class score above object_mask_thr (mmdet's default
    # 0.8): 0.3 lets a model of a few hundred iterations show the things it has learnt
    test_cfg=dict(max_per_image=20, object_mask_thr=0.3))

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadPanopticAnnotations'),
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
        metainfo=metainfo,
        ann_file='annotations/panoptic_train.json',
        data_prefix=dict(img='train/', seg='annotations/panoptic_train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/panoptic_val.json',
        data_prefix=dict(img='val/', seg='annotations/panoptic_val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# PQ only (the COCO recipe adds CocoMetric's box and mask AP of the things)
val_evaluator = dict(
    _delete_=True,
    type='CocoPanopticMetric',
    ann_file=data_root + 'annotations/panoptic_val.json',
    seg_prefix=data_root + 'annotations/panoptic_val/')
test_evaluator = val_evaluator

# Plain fp32 AdamW from scratch: every parameter at the same lr (the 0.1x backbone of the COCO
# recipe is for fine-tuning ImageNet weights), no decay on norms, the recipe's tight gradient
# clip (0.01) relaxed to 1.0 for a random initialisation.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=30, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters, dynamic_intervals=None)
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=10)

# One seed for every quick start (tools/misc/init_checkpoint.py's default too).
randomness = dict(seed=0, deterministic=False)
