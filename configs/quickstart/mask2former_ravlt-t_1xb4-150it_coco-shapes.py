# Quick start: Mask2Former instance segmentation + RAVLT-T from scratch on the synthetic COCO
# shapes set (128 px images, boxes and masks) on a CPU, evaluated with mmdet's CocoMetric
# (150 iterations train in about 90 s on 2 cores: segm mAP 0.123, bbox mAP 0.067; 0.000
# untrained; QUICK_MODELS=mask2former bash tools/quickstart.sh):
#     python tools/data/make_coco_shapes.py      # -> data/coco_shapes
#     python tools/train.py configs/quickstart/mask2former_ravlt-t_1xb4-150it_coco-shapes.py
# The model of configs/mask2former/mask2former_ravlt-s_8xb2-lsj-50e_coco.py with RAVLT-T, the
# 4 shapes classes and the slim head of mask2former_ravlt-t_1xb8-120it_ade-shapes-64x64.py: 64
# channels (256 there), 1 pixel-decoder layer (6), 3 transformer-decoder layers (9), 20 queries
# (100), 1024 sampled points per mask (12544). Batches are padded to 128x128 (1024x1024
# there), without the large-scale jitter of the COCO recipe.
_base_ = '../mask2former/mask2former_ravlt-s_8xb2-lsj-50e_coco.py'

classes = ('circle', 'square', 'triangle', 'star')  # make_coco_shapes.CLASSES
num_classes = len(classes)
data_root = 'data/coco_shapes/'
img_scale = (128, 128)
channels = 64
max_iters = 150

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=img_scale, img_pad_value=0, pad_mask=True,
             mask_pad_value=0, pad_seg=False)
    ]),
    # RAVLT-T from scratch: the BNs must learn their statistics, no drop path for so short a run.
    backbone=dict(arch='t', init_cfg=None, norm_eval=False, drop_path_rate=0.),
    panoptic_head=dict(
        in_channels=[64, 128, 256, 512],
        feat_channels=channels,
        out_channels=channels,
        num_things_classes=num_classes,
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
    panoptic_fusion_head=dict(num_things_classes=num_classes),
    train_cfg=dict(num_points=1024),
    test_cfg=dict(max_per_image=20))

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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
        data_prefix=dict(_delete_=True, img='train/'),  # no panoptic 'seg' folder
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(_delete_=True, img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
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
