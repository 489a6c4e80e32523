# Cascade Mask R-CNN 3x with multi-scale training, RAVLT-B (paper: 105M, 851G, 55.3 box AP /
# 47.7 mask AP).
_base_ = './cascade-maskrcnn_ravlt_s_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/ravlt_b_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
