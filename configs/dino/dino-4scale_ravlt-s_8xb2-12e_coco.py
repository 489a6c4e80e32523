# DINO 4-scale, RAVLT-S, COCO detection, 12 epochs: mmdet's DINO config
# (dino/dino-4scale_r50_8xb2-12e_coco.py) with the ResNet-50 replaced by RAVLT-S from the authors'
# ImageNet-1k weights. Config only: no trained weights of this model exist.
#   python tools/train.py configs/dino/dino-4scale_ravlt-s_8xb2-12e_coco.py        # 1 GPU
#   bash tools/dist_train.sh configs/dino/dino-4scale_ravlt-s_8xb2-12e_coco.py 8   # 8 x 2 images
# The 4 scales: RAVLT's stride 8, 16 and 32 maps (out_indices 1-3, 128/320/512 channels for S)
# are mapped to 256 channels by the ChannelMapper, whose extra stride-2 conv on the stride-32
# map makes the fourth (stride 64) level, as with ResNet's C3-C5.
# The recipe is mmdet's: AdamW lr 1e-4, wd 1e-4, grad clip 0.1, batch 16, lr x0.1 after epoch
# 11, DETR's multi-scale + crop augmentation; the backbone learns at 0.1x, as in mmdet's Swin
# DINO config, and its norms, layer scales and position convolutions are not decayed, as in
# the Mask2Former configs (mmdet's Swin DINO config decays them:
# ../_base_/schedules/ravlt_query_head_paramwise.py says why). fp32 as mmdet's DINO.
_base_ = [
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
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
        out_indices=(1, 2, 3),
        norm_eval=True,  # BN statistics fixed (eval mode), as in every RAVLT config
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 320, 512]))

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.ravlt_custom_keys.s}}))
