# UperNet + RAVLT-S on ADE20K, 160k iterations, 512x512 crops, batch 16 (2 per GPU x 8 GPUs).
# The release's recipe: AdamW lr 6e-5, betas (0.9, 0.999), wd 0.01 with no decay on norms,
# 1500 linear warm-up iterations then poly (power 1.0), fp16 with a static loss scale of 512.
# Variants B/L inherit this file.
_base_ = [
    '../_base_/models/upernet_ravlt-s.py', '../_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',  # without a GPU tools/train.py trains it in fp32, with a warning
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # Every BatchNorm/LayerNorm whatever its name (the stem's BNs are patch_embed.proj.{1,4,7,10}).
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000)
]
# lr 6e-5 is for a total batch of 16: --auto-scale-lr rescales it for other GPU counts.
auto_scale_lr = dict(enable=False, base_batch_size=16)
