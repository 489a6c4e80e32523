# 3x: 36 epochs, lr x0.1 after epochs 27 and 33, 1000 warm-up iterations (as the Swin 3x
# configs the release follows).
_base_ = './ravlt_det_adamw_1x.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
