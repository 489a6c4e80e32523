# UperNet (with the usual auxiliary FCN head on stage 3) with a RAVLT backbone (RAVLT-S here;
# variants change arch and in_channels).
_base_ = 'mmseg::_base_/models/upernet_swin.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'

custom_imports = dict(imports=['ravlt_dense', 'ravlt_dense.datasets'], allow_failed_imports=False)

# BN, not mmseg's SyncBN: SyncBN fails in single-process and CPU runs, and the backbone's BNs
# are frozen (norm_eval) anyway; on 8 GPUs the heads' BNs then normalise 2 images per GPU.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='RAVLT',
        arch='s',
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=320, num_classes=150, norm_cfg=norm_cfg))
