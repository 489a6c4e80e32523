# UperNet + RAVLT-L on ADE20K: the RAVLT-S recipe with the L backbone.
_base_ = './upernet_ravlt_s_ade20k.py'
model = dict(
    backbone=dict(arch='l', init_cfg=dict(checkpoint='checkpoints/ravlt_l_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))
