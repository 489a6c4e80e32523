# Mask R-CNN 1x, RAVLT-L (paper: 114M, 501G, 52.3 box AP / 46.4 mask AP).
_base_ = './maskrcnn_ravlt_s_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='checkpoints/ravlt_l_in1k.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
