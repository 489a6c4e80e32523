# RetinaNet 1x, RAVLT-B (paper: 57M, 353G, 49.8 box AP).
_base_ = './retinanet_ravlt_s_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/ravlt_b_in1k.pth')),
    neck=dict(in_channels=[192, 384, 512]))
