# Data and CPU recipe of the quick-start configs: the synthetic shapes set in the ADE20K layout
# (python tools/data/make_ade_shapes.py, 128x128 images), trained from scratch in a few minutes
# on a 2-core CPU: images are halved to 64x64 (shapes stay 8-30 px wide) and the decoders are
# slimmed in the quick-start configs. Plain fp32 OptimWrapper: AMP needs a GPU.
_base_ = 'mmseg::_base_/default_runtime.py'

data_root = 'data/ade_shapes'
# tools/data/make_ade_shapes.py CLASSES / PALETTE (labels 1..K in the PNGs, 0 = unlabelled);
# tests/test_configs/test_seg_configs.py keeps these in sync with the generator.
classes = ('sky', 'ground', 'circle', 'square', 'triangle')
palette = [[70, 130, 180], [140, 110, 60], [220, 20, 60], [0, 160, 80], [250, 170, 30]]
num_classes = 5
img_scale = (64, 64)
crop_size = (64, 64)
max_iters = 200

train_pipeline = [
    dict(type='LoadImageFromFile'),
    # mmseg's LoadAnnotations (reduce_zero_label: the dataset's, True) + the label check
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    # An image smaller than the crop comes out smaller; SegDataPreProcessor(size=crop_size)
    # pads it to the crop with label 255 (ignored by the loss).
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # Predictions are scaled back to the original size, where the labels are compared.
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # mmseg's LoadAnnotations (reduce_zero_label: the dataset's, True) + the label check
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
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=50, end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
