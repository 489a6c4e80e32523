# RetinaNet with a RAVLT-S backbone and FPN: mmdet's retinanet_r50_fpn with the backbone swapped.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'

custom_imports = dict(imports=['ravlt_dense'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='RAVLT',
        arch='s',
        drop_path_rate=0.15,
        # RetinaNet uses P3-P7: the stride-4 stage gets no output norm (it would go unused).
        out_indices=(1, 2, 3),
        norm_eval=True,  # the stem's and downsamplings' BN statistics stay fixed, as in the release
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # P6 from the last backbone map, P7 from P6, as in mmdet's RetinaNet.
    neck=dict(in_channels=[128, 320, 512], start_level=0, add_extra_convs='on_input'))
