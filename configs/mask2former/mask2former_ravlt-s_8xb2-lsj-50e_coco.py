# Mask2Former, RAVLT-S, COCO instance segmentation (80 thing classes), 50 epochs with
# large-scale jitter (1024x1024 crops):
# mmdet's config (mask2former/mask2former_r50_8xb2-lsj-50e_coco.py) with the ResNet-50
# replaced by RAVLT-S from the authors' ImageNet-1k weights. Config only: no trained weights of
# this model exist.
#   python tools/train.py configs/mask2former/mask2former_ravlt-s_8xb2-lsj-50e_coco.py
#   bash tools/dist_train.sh configs/mask2former/mask2former_ravlt-s_8xb2-lsj-50e_coco.py 8
# All four RAVLT outputs (strides 4-32, 64/128/320/512 channels for S) feed the head: its
# deformable pixel decoder refines the stride 8-32 maps and adds the stride-4 map to make the
# per-pixel embeddings the 100 queries' masks are read from.
# The recipe is mmdet's: AdamW lr 1e-4, wd 0.05, grad clip 0.01, 368750 iterations (50 epochs)
# of batch 16, lr x0.1 at 327778 and 355092; the backbone learns at 0.1x and, as mmdet's Swin
# Mask2Former configs exempt Swin's norms and position tables, its norms, layer scales and
# position convolutions are not decayed (../_base_/schedules/ravlt_query_head_paramwise.py).
# Drop path: RAVLT-S's own (0.15).
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    '../_base_/schedules/ravlt_query_head_paramwise.py'
]

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'

custom_imports = dict(imports=['ravlt_dense'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='RAVLT',
        arch='s',
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        norm_eval=True,  # BN statistics fixed (eval mode), as in every RAVLT config
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.ravlt_custom_keys.s}}))
