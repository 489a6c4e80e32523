# Cascade Mask R-CNN 3x with multi-scale training, RAVLT-L (paper: 152M, 979G, 55.6 box AP /
# 48.0 mask AP).
_base_ = './cascade-maskrcnn_ravlt_s_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='checkpoints/ravlt_l_in1k.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
