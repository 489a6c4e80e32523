# Semantic FPN + RAVLT-S on ADE20K: the RAVLT-T recipe with the S backbone.
_base_ = './fpn_ravlt_t_ade20k.py'
model = dict(
    backbone=dict(arch='s', init_cfg=dict(checkpoint='checkpoints/ravlt_s_in1k.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
