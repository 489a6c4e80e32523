# Quick start: RetinaNet + RAVLT-T from scratch on the synthetic shapes set (128 px images) on a
# CPU, evaluated with mmdet's CocoMetric (bbox), 8 epochs = 192 iterations (its figures: the
# README's quick start, `make quickstart`):
#     python tools/data/make_coco_shapes.py      # -> data/coco_shapes
#     python tools/train.py configs/quickstart/retinanet_ravlt-t_fpn_1xb4-8e_coco-shapes.py
# The model of configs/retinanet/retinanet_ravlt-t_fpn_amp-1x_coco.py with a slimmer head for 4
# classes; data and CPU recipe in configs/_base_/det_coco_shapes.py.
_base_ = ['../_base_/models/retinanet_ravlt-s_fpn.py', '../_base_/det_coco_shapes.py']

model = dict(
    # RAVLT-T from scratch: the BNs must learn their statistics, no drop path for so short a run.
    backbone=dict(arch='t', init_cfg=None, norm_eval=False, drop_path_rate=0.),
    neck=dict(in_channels=[128, 256, 512], out_channels=128),
    bbox_head=dict(
        num_classes=4,
        in_channels=128,
        feat_channels=128,
        # Shapes are 15-60 px wide: anchors from 16 px (stride 8) to 256 px (stride 128).
        anchor_generator=dict(octave_base_scale=2)))

# Boxes only: no masks to load or evaluate.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale={{_base_.img_scale}}, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale={{_base_.img_scale}}, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator

# One seed for every quick start (tools/misc/init_checkpoint.py's default too): mmengine's Runner
# seeds Python's, NumPy's and torch's generators with it before it builds the model, and hands
# it to the samplers (shuffling) and the loader workers. deterministic=False leaves cuDNN free
# to pick its fastest algorithms on a GPU.
randomness = dict(seed=0, deterministic=False)
