# Cascade Mask R-CNN 3x with multi-scale training, RAVLT-L; paper figures in configs/metafile.yml.
_base_ = './cascade-mask-rcnn_ravlt-s_fpn_amp-ms-crop-3x_coco.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
