# Optimisation recipe of the RAVLT detection release, 1x (12 epochs, lr x0.1 after epochs 8
# and 11): mmdet's schedule_1x (500-iteration linear warm-up, MultiStepLR) with AdamW and fp16.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    # fp16 with dynamic loss scaling; without a GPU tools/train.py trains in fp32 instead
    # (ravlt_dense.tools.precision, with a warning)
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # No decay on the weights and biases of BN and LayerNorm (all norms, incl. extra_norms),
    # as the release; the layer-scale gammas decay like the other weights. The RoPE frequencies
    # (`RoPE.angle`) are a buffer, so the optimiser never sees them.
    paramwise_cfg=dict(norm_decay_mult=0.))

# The lr above is for 16 images per iteration (2 per GPU x 8 GPUs); --auto-scale-lr rescales it
# linearly for other batch sizes.
auto_scale_lr = dict(enable=False, base_batch_size=16)
