# Mask R-CNN 1x, RAVLT-S, COCO instance segmentation (paper: 44M params, 262G FLOPs,
# 49.8 box AP / 44.6 mask AP).
#   python tools/train.py configs/maskrcnn_ravlt_s_coco.py                    # 1 GPU
#   bash tools/dist_train.sh configs/maskrcnn_ravlt_s_coco.py 8               # the paper's 8 x 2
# Needs checkpoints/ravlt_s_in1k.pth (ImageNet weights); set model.backbone.init_cfg=None to
# train from scratch.
_base_ = [
    './_base_/models/maskrcnn_ravlt_s_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/ravlt_det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
