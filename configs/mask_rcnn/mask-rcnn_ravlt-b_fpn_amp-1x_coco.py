# Mask R-CNN 1x, RAVLT-B (the release's "m"); paper figures in configs/metafile.yml.
_base_ = './mask-rcnn_ravlt-s_fpn_amp-1x_coco.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 512]))
