# Semantic FPN with a RAVLT backbone (RAVLT-T here; variants change arch and in_channels).
_base_ = 'mmseg::_base_/models/fpn_r50.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'

custom_imports = dict(imports=['ravlt_dense', 'ravlt_dense.datasets'], allow_failed_imports=False)

# BN, not mmseg's SyncBN: SyncBN fails in single-process and CPU runs, and the backbone's BNs
# keep their running statistics (norm_eval; their affine weights still train) anyway; on 8 GPUs
# the head's BN then normalises 2 images per GPU.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='RAVLT',
        arch='t',
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150, norm_cfg=norm_cfg))
