# Semantic FPN + RAVLT-B on ADE20K: the RAVLT-T recipe with the B backbone.
_base_ = './fpn_ravlt_t_ade20k.py'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint='checkpoints/ravlt_b_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
