# RetinaNet 1x, RAVLT-S, COCO detection; paper figures in configs/metafile.yml.
#   python tools/train.py configs/retinanet/retinanet_ravlt-s_fpn_amp-1x_coco.py
_base_ = [
    '../_base_/models/retinanet_ravlt-s_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/ravlt_det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
