# UperNet + RAVLT-B on ADE20K: the RAVLT-S recipe with the B backbone.
_base_ = './upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py'

# the authors' ImageNet-1k weights, downloaded once into the torch hub cache
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 512]),
    auxiliary_head=dict(in_channels=384))
