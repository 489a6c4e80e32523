# Semantic FPN + RAVLT-L on ADE20K: the RAVLT-T recipe with the L backbone.
_base_ = './fpn_ravlt_t_ade20k.py'
model = dict(
    backbone=dict(arch='l', init_cfg=dict(checkpoint='checkpoints/ravlt_l_in1k.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
