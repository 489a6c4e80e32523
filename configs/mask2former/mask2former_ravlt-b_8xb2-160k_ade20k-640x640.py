# Mask2Former, RAVLT-B, ADE20K semantic segmentation, 160k iterations, 640x640 crops: mmseg's
# Swin-B config (mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py)
# with the Swin-B replaced by RAVLT-B from the authors' ImageNet-1k weights (224 px). Config
# only: no trained weights of this model exist.
#   bash tools/dist_train.sh configs/mask2former/mask2former_ravlt-b_8xb2-160k_ade20k-640x640.py 8
# mmseg trains its Swin-B (and larger) Mask2Formers on 640x640 crops of images resized to a
# short side of 320-1280 (ade20k_640x640), Swin-T/S on 512x512: this config keeps the Swin-B
# recipe, data pipeline included. All four RAVLT outputs (strides 4-32, 96/192/384/512 channels)
# feed the head. AdamW lr 1e-4, wd 0.05, grad clip 0.01, poly, batch 16; the backbone learns at
# 0.1x without decay on its norms, layer scales and position convolutions
# (../_base_/schedules/ravlt_query_head_paramwise.py).
# Data at data/ade/ADEChallengeData2016 (mmseg's layout).
_base_ = [
    'mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py',
    '../_base_/schedules/ravlt_query_head_paramwise.py'
]

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth'

custom_imports = dict(
    imports=['mmdet.models', 'ravlt_dense', 'ravlt_dense.datasets'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='RAVLT',
        arch='b',
        drop_path_rate=0.4,
        out_indices=(0, 1, 2, 3),
        norm_eval=True,  # BN statistics fixed (eval mode), as in every RAVLT config
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 512]))

# The base's rules name Swin's parameters: RAVLT's replace them; the head's query and level
# embeddings keep theirs (full lr, no decay).
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            _delete_=True,
            query_embed=embed_multi,
            query_feat=embed_multi,
            level_embed=embed_multi,
            **_base_.ravlt_custom_keys.b)))
