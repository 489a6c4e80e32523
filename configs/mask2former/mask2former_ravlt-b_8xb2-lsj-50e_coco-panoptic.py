# Mask2Former, RAVLT-B, COCO panoptic segmentation, 50 epochs: the RAVLT-S config with RAVLT-B
# (as mmdet's Swin-B beside Swin-T/S; the recipe is the same for every backbone).
# Config only: no trained weights of this model exist.
_base_ = './mask2former_ravlt-s_8xb2-lsj-50e_coco-panoptic.py'

pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth'

model = dict(
    backbone=dict(
        arch='b', drop_path_rate=0.4, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[96, 192, 384, 512]))
# RAVLT-B's blocks in the parameter rules (the RAVLT-S config's name RAVLT-S's); the
# head's query and level embeddings keep theirs (full lr, no decay)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            _delete_=True,
            query_embed=embed_multi,
            query_feat=embed_multi,
            level_embed=embed_multi,
            **_base_.ravlt_custom_keys.b)))
