# Mask R-CNN 3x with multi-scale training, RAVLT-B (paper: 67M, 372G, 52.7 box AP / 46.4 mask AP).
_base_ = './maskrcnn_ravlt_s_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/ravlt_b_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
