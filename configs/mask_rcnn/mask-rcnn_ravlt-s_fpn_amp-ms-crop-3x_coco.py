# Mask R-CNN 3x with multi-scale training, RAVLT-S; paper figures in configs/metafile.yml.
_base_ = [
    '../_base_/models/mask-rcnn_ravlt-s_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/ravlt_det_adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]
