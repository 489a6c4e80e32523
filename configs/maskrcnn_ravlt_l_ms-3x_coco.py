# Mask R-CNN 3x with multi-scale training, RAVLT-L (paper: 114M, 501G, 53.6 box AP / 47.3 mask AP).
_base_ = './maskrcnn_ravlt_s_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='checkpoints/ravlt_l_in1k.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
