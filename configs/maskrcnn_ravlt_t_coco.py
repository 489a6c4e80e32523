# Mask R-CNN 1x, RAVLT-T (paper: 33M, 219G, 47.3 box AP / 42.7 mask AP).
_base_ = './maskrcnn_ravlt_s_coco.py'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/ravlt_t_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
