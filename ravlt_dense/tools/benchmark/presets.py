"""The benchmark's presets: named sets of defaults for its command line."""

# cuda-detection: RAVLT-T/S in both mixes, RALA's kernels on and off, against Swin-T and
# ConvNeXt-T at a detection input on CUDA in fp16, in about 5 minutes. Swin-T is mmdet's (the
# baseline, where mmcv's ops are built) and timm's; ConvNeXt-T is timm's, which imports where
# mmpretrain does not (beside transformers 5).
PRESETS = {
    'cuda-detection': dict(
        models=['ravlt_s', 'swin_t', 'swin_t_timm', 'ravlt_s_rala', 'convnext_t_timm',
                'ravlt_t', 'ravlt_t_rala'],
        shape=[(800, 1216)], batch=[1, 8], train_batch=2, device='cuda', dtype='float16',
        paths=['fast', 'fast-nokernel'], compile='inductor', repeat=10, warmup=3, no_flops=True,
        budget=330, timeout=150),
}


def as_flags(preset: dict) -> str:
    """A preset as the command line it stands for."""
    flags = []
    for key, value in preset.items():
        flag = '--' + key.replace('_', '-')
        if value is True:
            flags.append(flag)
        elif key == 'shape':
            flags += [f'{flag} {h} {w}' for h, w in value]
        else:
            value = ' '.join(map(str, value)) if isinstance(value, list) else value
            flags.append(f'{flag} {value}')
    return ' '.join(flags)
