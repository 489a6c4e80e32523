# RetinaNet 1x, RAVLT-S, COCO detection (paper: 34M params, 244G FLOPs, 48.3 box AP).
#   python tools/train.py configs/retinanet_ravlt_s_coco.py
_base_ = [
    './_base_/models/retinanet_ravlt_s_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './_base_/schedules/ravlt_det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
