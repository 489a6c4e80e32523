# UperNet + RAVLT-B on ADE20K: the RAVLT-S recipe with the B backbone.
_base_ = './upernet_ravlt_s_ade20k.py'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint='checkpoints/ravlt_b_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 512]),
    auxiliary_head=dict(in_channels=384))
