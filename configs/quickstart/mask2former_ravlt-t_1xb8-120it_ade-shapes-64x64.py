# Quick start: Mask2Former + RAVLT-T from scratch on the synthetic shapes set (semantic labels,
# ADE20K layout): 120 iterations train in about 50 s on 2 cores, mIoU 50.05 (3.95 untrained;
# QUICK_MODELS=mask2former-ade bash tools/quickstart.sh):
#     python tools/data/make_ade_shapes.py   # -> data/ade_shapes
#     python tools/train.py configs/quickstart/mask2former_ravlt-t_1xb8-120it_ade-shapes-64x64.py
# The model of configs/mask2former/mask2former_ravlt-s_8xb2-160k_ade20k-512x512.py with RAVLT-T,
# the 5 shapes classes and a slim head: 64 channels (256 there), 1 pixel-decoder layer (6),
# 3 transformer-decoder layers (9, one round over the three scales), 20 queries (100) and
# 1024 sampled points per mask in the losses (12544). Data and CPU recipe as
# configs/_base_/seg_ade_shapes.py (64x64 images).
_base_ = '../mask2former/mask2former_ravlt-s_8xb2-160k_ade20k-512x512.py'

data_root = 'data/ade_shapes'
# tools/data/make_ade_shapes.py CLASSES / PALETTE (as configs/_base_/seg_ade_shapes.py)
classes = ('sky', 'ground', 'circle', 'square', 'triangle')
palette = [[70, 130, 180], [140, 110, 60], [220, 20, 60], [0, 160, 80], [250, 170, 30]]
num_classes = 5
img_scale = (64, 64)
crop_size = (64, 64)
channels = 64
max_iters = 120

model = dict(
    data_preprocessor=dict(size=crop_size),
    # From scratch: the stem's BNs must learn their statistics (norm_eval=False), and so short a
    # schedule needs no drop path.
    backbone=dict(arch='t', init_cfg=None, norm_eval=False, drop_path_rate=0.),
    decode_head=dict(
        in_channels=[64, 128, 256, 512],
        feat_channels=channels,
        out_channels=channels,
        num_classes=num_classes,
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
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
        train_cfg=dict(num_points=1024)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    # mmseg's LoadAnnotations (reduce_zero_label: the dataset's, True) + the label check
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs')
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
# Loading small images is cheap next to the model: workers would only compete for the cores.
train_dataloader = dict(
    _delete_=True,
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    _delete_=True,
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# Plain fp32 AdamW from scratch: every parameter at the same lr (the 0.1x backbone of the ADE20K
# recipe is for fine-tuning ImageNet weights), no decay on norms, the recipe's tight gradient
# clip (0.01) relaxed to 1.0 for a random initialisation.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=30, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None))

# One seed for every quick start (tools/misc/init_checkpoint.py's default too).
randomness = dict(seed=0, deterministic=False)
