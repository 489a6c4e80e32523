# Cascade Mask R-CNN 3x with multi-scale training, RAVLT-S; paper figures in configs/metafile.yml.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/ravlt_det_adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'

custom_imports = dict(imports=['ravlt_dense'], allow_failed_imports=False)


def cascade_bbox_head(target_stds):
    # Like mmdet's Swin cascade configs: 4 shared convs + 1 fc with BN, GIoU on decoded boxes.
    return dict(
        type='ConvFCBBoxHead',
        num_shared_convs=4,
        num_shared_fcs=1,
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=target_stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='BN', requires_grad=True),  # BN, not SyncBN: runs on 1 GPU and CPU
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    backbone=dict(
        _delete_=True,
        type='RAVLT',
        arch='s',
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]),
    roi_head=dict(bbox_head=[
        cascade_bbox_head([0.1, 0.1, 0.2, 0.2]),
        cascade_bbox_head([0.05, 0.05, 0.1, 0.1]),
        cascade_bbox_head([0.033, 0.033, 0.067, 0.067]),
    ]))
