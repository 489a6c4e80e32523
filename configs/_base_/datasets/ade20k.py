# ADE20K (150 classes, 512x512 crops) as in mmseg's base, with a label loader that names the file
# of a bad label map, and the release's batch of 2 images per GPU (x 8 GPUs = 16).
_base_ = 'mmseg::_base_/datasets/ade20k.py'

num_classes = 150
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # mmseg's LoadAnnotations (reduce_zero_label: the dataset's, True) + the label check
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    # An image smaller than the crop comes out smaller; SegDataPreProcessor(size=crop_size)
    # pads it to the crop with label 255 (ignored by the loss).
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # Labels are loaded after Resize: metrics compare at the original resolution.
    # mmseg's LoadAnnotations (reduce_zero_label: the dataset's, True) + the label check
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
