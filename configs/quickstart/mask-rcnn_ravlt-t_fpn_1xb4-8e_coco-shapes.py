# Quick start: Mask R-CNN + RAVLT-T from scratch on the synthetic shapes set (128 px images) on a
# CPU, evaluated with mmdet's CocoMetric (bbox and segm), 8 epochs = 192 iterations (its figures:
# the README's quick start, `make quickstart`):
#     python tools/data/make_coco_shapes.py      # -> data/coco_shapes
#     python tools/train.py configs/quickstart/mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes.py
# The model of configs/mask_rcnn/mask-rcnn_ravlt-t_fpn_amp-1x_coco.py with slimmer heads for 4
# classes; data and CPU recipe in configs/_base_/det_coco_shapes.py.
_base_ = ['../_base_/models/mask-rcnn_ravlt-s_fpn.py', '../_base_/det_coco_shapes.py']

num_classes = 4
model = dict(
    # RAVLT-T from scratch: the BNs of the stem and downsamplings must learn their statistics
    # (norm_eval=False), and so short a schedule needs no drop path.
    backbone=dict(arch='t', init_cfg=None, norm_eval=False, drop_path_rate=0.),
    # Neck and heads at 128 channels (COCO: 256) and fewer RoIs: on a CPU the heads, not the
    # backbone, would otherwise take most of the time at 128 px.
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(
        in_channels=128,
        feat_channels=128,
        # Shapes are 15-60 px wide: anchors from 16 px (stride 4) to 256 px (stride 64).
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=512, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128, num_classes=num_classes)),
    # A handful of objects per image: far fewer proposals and RoIs than COCO's defaults.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

# One seed for every quick start (tools/misc/init_checkpoint.py's default too): mmengine's Runner
# seeds Python's, NumPy's and torch's generators with it before it builds the model, and hands
# it to the samplers (shuffling) and the loader workers. deterministic=False leaves cuDNN free
# to pick its fastest algorithms on a GPU.
randomness = dict(seed=0, deterministic=False)
