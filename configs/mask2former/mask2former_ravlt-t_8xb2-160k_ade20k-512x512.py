# Mask2Former, RAVLT-T, ADE20K, 160k iterations: the RAVLT-S config with RAVLT-T (as mmseg's
# Swin-T beside Swin-S). Config only: no trained weights of this model exist.
_base_ = './mask2former_ravlt-s_8xb2-160k_ade20k-512x512.py'

pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'

model = dict(
    backbone=dict(
        arch='t', drop_path_rate=0.1, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]))
