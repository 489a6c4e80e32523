# RetinaNet 1x, RAVLT-L (paper: 104M, 482G, 50.9 box AP).
_base_ = './retinanet_ravlt_s_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='checkpoints/ravlt_l_in1k.pth')),
    neck=dict(in_channels=[192, 448, 640]))
