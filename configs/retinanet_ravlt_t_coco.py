# RetinaNet 1x, RAVLT-T (paper: 24M, 201G, 45.9 box AP).
_base_ = './retinanet_ravlt_s_coco.py'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/ravlt_t_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512]))
