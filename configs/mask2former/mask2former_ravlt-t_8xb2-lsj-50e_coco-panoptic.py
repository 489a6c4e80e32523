# Mask2Former, RAVLT-T, COCO panoptic segmentation, 50 epochs: the RAVLT-S config with RAVLT-T
# (as mmdet's Swin-T beside Swin-S). Config only: no trained weights of this model exist.
_base_ = './mask2former_ravlt-s_8xb2-lsj-50e_coco-panoptic.py'

pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'

model = dict(
    backbone=dict(
        arch='t', drop_path_rate=0.1, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]))
# RAVLT-T's blocks in the parameter rules (the RAVLT-S config's name RAVLT-S's); the
# head's query and level embeddings keep theirs (full lr, no decay)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            _delete_=True,
            query_embed=embed_multi,
            query_feat=embed_multi,
            level_embed=embed_multi,
            **_base_.ravlt_custom_keys.t)))
