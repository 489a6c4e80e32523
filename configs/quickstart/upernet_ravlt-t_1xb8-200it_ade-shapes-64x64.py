# Quick start: UperNet + RAVLT-T from scratch on the synthetic shapes set, a few minutes on a
# 2-core CPU:
#     python tools/data/make_ade_shapes.py   # -> data/ade_shapes
#     python tools/train.py configs/quickstart/upernet_ravlt-t_1xb8-200it_ade-shapes-64x64.py
# The UperNet of configs/upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py with RAVLT-T,
# the shapes classes and 64/32 channels in the decode/auxiliary heads (512/256 there: at 64x64
# inputs those convolutions would cost several times the backbone); data and recipe in
# configs/_base_/seg_ade_shapes.py.
_base_ = ['../_base_/models/upernet_ravlt-s.py', '../_base_/seg_ade_shapes.py']

model = dict(
    data_preprocessor=dict(size=(64, 64)),
    # From scratch: the stem's BNs must learn their statistics (norm_eval=False), and so short a
    # schedule needs no drop path.
    backbone=dict(arch='t', init_cfg=None, norm_eval=False, drop_path_rate=0.),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=64, num_classes=5),
    auxiliary_head=dict(in_channels=256, channels=32, num_classes=5))

# One seed for every quick start (tools/misc/init_checkpoint.py's default too): mmengine's Runner
# seeds Python's, NumPy's and torch's generators with it before it builds the model, and hands
# it to the samplers (shuffling) and the loader workers. deterministic=False leaves cuDNN free
# to pick its fastest algorithms on a GPU.
randomness = dict(seed=0, deterministic=False)
