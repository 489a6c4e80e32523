# The name this config had before configs/ took mmdet's naming convention, kept so that
#   python tools/train.py configs/maskrcnn_ravlt_s_coco.py
# still trains what it always trained: Mask R-CNN 1x with RAVLT-S on COCO, whose config is now
# configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py (use that name: this file only
# inherits it). Every old zoo name maps to its new one in configs/renamed.yml.
_base_ = ['./mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py']
