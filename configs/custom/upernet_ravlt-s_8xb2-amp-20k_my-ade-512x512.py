# UperNet + RAVLT-S fine-tuned on a semantic-segmentation data set of your own in the ADE20K
# layout (README: "Train on your own data"). Set the first block to your data (or copy this
# file and edit the copy), then
#     python tools/train.py configs/custom/upernet_ravlt-s_8xb2-amp-20k_my-ade-512x512.py
# Layout: an image and a label map of the same name (single-channel PNG of class indices):
#     data/my_ade/images/training/*.jpg      data/my_ade/annotations/training/*.png
#     data/my_ade/images/validation/*.jpg    data/my_ade/annotations/validation/*.png
# As it stands it trains on the generated shapes set: python tools/data/make_ade_shapes.py
# --out data/my_ade. Model and recipe:
# configs/upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py (512x512 crops, AdamW, fp16
# AMP on a GPU and fp32 without one) over a shorter schedule (20k iterations); the backbone
# starts from the zoo's ImageNet-1k weights of RAVLT-S (ravlt-s_in1k, downloaded once).
_base_ = '../upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py'

# ---- your data ----
data_root = 'data/my_ade'
classes = ('sky', 'ground', 'circle', 'square', 'triangle')
palette = [[70, 130, 180], [140, 110, 60], [220, 20, 60], [0, 160, 80], [250, 170, 30]]
# True (ADE20K's convention): the PNGs store class i as i + 1 and 0 = unlabelled (ignored).
# False: they store class i as i, and 255 = ignored.
reduce_zero_label = True
# ADE20K's 160k iterations are for its 20k images: scale with the size of your set.
max_iters = 20000
# --------------------

num_classes = len(classes)
model = dict(
    decode_head=dict(num_classes=num_classes), auxiliary_head=dict(num_classes=num_classes))
# configs/_base_/datasets/ade20k.py's pipelines with this set's classes in the label check.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # mmseg's LoadAnnotations (reduce_zero_label: the dataset's) + the label check
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs')
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=reduce_zero_label)
train_dataloader = dict(
    dataset=dict(
        _delete_=True,  # not the ADE20KDataset of the base, with its 150 classes
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 10)
default_hooks = dict(checkpoint=dict(interval=max_iters // 10))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters)
]
