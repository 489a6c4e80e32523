# Mask R-CNN 1x, RAVLT-B (the release's "m"; paper: 67M, 372G, 51.2 box AP / 45.7 mask AP).
_base_ = './maskrcnn_ravlt_s_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/ravlt_b_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
