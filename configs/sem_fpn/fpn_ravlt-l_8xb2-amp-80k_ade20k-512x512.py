# Semantic FPN + RAVLT-L on ADE20K: the RAVLT-T recipe with the L backbone.
_base_ = './fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'
model = dict(
    backbone=dict(arch='l', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
