# Semantic FPN + RAVLT-T on ADE20K, 80k iterations, 512x512 crops, batch 16 (2 per GPU x 8 GPUs).
# The release's recipe: AdamW lr 1e-4, wd 1e-4, poly decay, fp16. Variants S/B/L inherit this file.
_base_ = [
    '../_base_/models/fpn_ravlt-t.py', '../_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',  # without a GPU tools/train.py trains it in fp32, with a warning
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=80000, by_epoch=False)
]
# lr 1e-4 is for a total batch of 16: --auto-scale-lr rescales it for other GPU counts.
auto_scale_lr = dict(enable=False, base_batch_size=16)
