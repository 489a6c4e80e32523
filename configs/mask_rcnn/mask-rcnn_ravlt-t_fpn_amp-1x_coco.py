# Mask R-CNN 1x, RAVLT-T; paper figures in configs/metafile.yml.
_base_ = './mask-rcnn_ravlt-s_fpn_amp-1x_coco.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
