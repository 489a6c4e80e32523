# Mask R-CNN 1x, RAVLT-S, COCO instance segmentation; paper figures in configs/metafile.yml.
#   python tools/train.py configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py       # 1 GPU
#   bash tools/dist_train.sh configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py 8  # 8 x 2
# The backbone starts from the authors' ImageNet weights (`pretrained`, downloaded once); a local
# copy: --cfg-options model.backbone.init_cfg.checkpoint=PATH; from scratch: ...init_cfg=None.
_base_ = [
    '../_base_/models/mask-rcnn_ravlt-s_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/ravlt_det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
