"""The benchmark's presets: each answers one question a user asks, with the models, input sizes,
batches and repeats that question needs. ``--preset NAME`` sets its values as defaults; flags
given as well override them (``--budget`` caps a preset's run where time is short)."""
import textwrap
from typing import Dict, NamedTuple, Optional

# Sizes every model here tiles exactly: all have a last stage of stride 32.
COCO_TEST = (800, 1344)  # mmdet's 1333x800 resize, padded to a multiple of 32
DETECTION = (800, 1216)  # the detection input of the backbone tables (docs/benchmarks.md)
ADE_CROP = (512, 512)
IMAGENET = (224, 224)


class Preset(NamedTuple):
    question: str  # what the user asks, in the user's words
    runs: str  # what it measures, in words
    flags: dict  # the values it gives the command line's options (argparse's dests)


PRESETS: Dict[str, Preset] = {
    'maskrcnn-gpu': Preset(
        'How fast is RAVLT against Swin-T under Mask R-CNN on my GPU?',
        'whole Mask R-CNN models (the COCO configs, random weights) with RAVLT-T, RAVLT-S and '
        'Swin-T at the COCO test size 800x1344, batch 1 as tools/test.py runs them, fp32; '
        'median of 10 passes after 3',
        dict(level='model', models=['maskrcnn_ravlt_t', 'maskrcnn_ravlt_s', 'maskrcnn_swin_t'],
             shape=[COCO_TEST], batch=[1], device='cuda', dtype='float32', repeat=10, warmup=3,
             no_flops=True)),
    'detection-backbones-gpu': Preset(
        'How fast are RAVLT-T and RAVLT-S against Swin-T and ConvNeXt-T at a detection input on '
        'my GPU, in inference, training and compiled, and what do RALA\'s fused kernels add?',
        'backbones at 800x1216 in fp16 autocast: RAVLT-T/S in both mixes with RALA\'s kernels on '
        'and off, Swin-T (mmdet\'s and timm\'s), ConvNeXt-T (timm\'s); batch-1 latency, batch-8 '
        'images/s, a batch-2 training step, inductor-compiled batch 8; median of 10 passes '
        'after 3',
        dict(models=['ravlt_s', 'swin_t', 'swin_t_timm', 'ravlt_s_rala', 'convnext_t_timm',
                     'ravlt_t', 'ravlt_t_rala'],
             shape=[DETECTION], batch=[1, 8], train_batch=2, device='cuda', dtype='float16',
             paths=['fast', 'fast-nokernel'], compile='inductor', repeat=10, warmup=3,
             no_flops=True)),
    'throughput-gpu': Preset(
        'Which backbone serves most images per second in batch on my GPU?',
        'backbones in batches of 16, fp16 autocast, at 512x512 (an ADE20K crop) and 800x1216 '
        '(a COCO image): RAVLT-T/S/B and RAVLT-S all-RALA against Swin-T (mmdet\'s and timm\'s), '
        'Swin-S, ResNet-50, ConvNeXt-T (timm\'s) and PVTv2-b2; images/s, median of 10 passes '
        'after 3',
        dict(models=['ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_s_rala', 'swin_t', 'swin_t_timm',
                     'swin_s', 'r50', 'convnext_t_timm', 'pvtv2_b2'],
             shape=[ADE_CROP, DETECTION], batch=[16], device='cuda', dtype='float16', repeat=10,
             warmup=3, no_flops=True)),
    'latency-cpu': Preset(
        'Does RAVLT run fast on my CPU?',
        'backbones, one image at a time (batch 1), fp32: RAVLT-T and RAVLT-S in the released '
        'mix and all-RALA against Swin-T and ResNet-50, at 224x224 (ImageNet) and 800x1216 (a '
        'COCO image); median of 5 passes after 1 (CPU timings are noisy)',
        dict(models=['ravlt_t', 'ravlt_s', 'ravlt_t_rala', 'ravlt_s_rala', 'swin_t', 'r50'],
             shape=[IMAGENET, DETECTION], batch=[1], device='cpu', dtype='float32', repeat=5,
             warmup=1, no_flops=True)),
    'fast-path-cpu': Preset(
        'How much faster is RAVLT\'s fast path than the paper\'s formulas written out, on my '
        'CPU?',
        'RAVLT-T/S/B/L backbones on the fast and the reference path, batch 1, fp32, at '
        '224x224, 512x512 and 800x1216; median of 3 passes after 1',
        dict(models=['ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_l'],
             shape=[IMAGENET, ADE_CROP, DETECTION], batch=[1], device='cpu', dtype='float32',
             paths=['fast', 'reference'], repeat=3, warmup=1, no_flops=True)),
}
# Earlier names, kept working.
ALIASES = {'cuda-detection': 'detection-backbones-gpu'}


def resolve(name: Optional[str]) -> Optional[str]:
    """The preset's current name (``name`` may be an earlier one), or None for no preset."""
    return ALIASES.get(name, name)


def as_flags(flags: dict) -> str:
    """A preset's values as the command line they stand for."""
    out = []
    for key, value in flags.items():
        flag = '--' + key.replace('_', '-')
        if value is True:
            out.append(flag)
        elif key == 'shape':
            out += [f'{flag} {h} {w}' for h, w in value]
        else:
            value = ' '.join(map(str, value)) if isinstance(value, list) else value
            out.append(f'{flag} {value}')
    return ' '.join(out)


def help_text(width: int = 100) -> str:
    """The presets for ``--help``: per preset its question, what it runs and its flags."""
    lines = ['presets (--preset NAME; flags given as well override its values):']
    indent = ' ' * 6
    for name, preset in PRESETS.items():
        old = [a for a, target in ALIASES.items() if target == name]
        lines.append(f'  {name}' + (f' (also: {", ".join(old)})' if old else '') + ':')
        for text in (preset.question, 'runs: ' + preset.runs,
                     '= ' + as_flags(preset.flags)):
            lines += textwrap.wrap(text, width, initial_indent=indent,
                                   subsequent_indent=indent + '  ', break_on_hyphens=False)
    return '\n'.join(lines)
