"""Effective receptive field (RepLKNet's method) of backbones, side by side in one figure.

    python tools/analysis/erf.py MODEL [MODEL ...] --images DIR [--num-images 50]
        [--shape 1024 1024] [--stage -1] [--random] [--grad abs|relu]
        [--thresholds 0.2 0.3 0.5 0.99] [--labels LABEL ...] [--device cpu|cuda] [--seed 0]
        [--save-maps] [--cfg-options KEY=VALUE ...] [--out-dir work_dirs/erf]

MODEL is a backbone given as
  * a config (a file, a name of the model zoo such as ``mask-rcnn_ravlt-s_fpn_amp-1x_coco``, or an
    ``mmdet::`` / ``mmseg::`` name such as ``mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``):
    its ``model.backbone`` with the ImageNet weights its ``init_cfg`` (or ``model.pretrained``)
    names, loaded by the backbone's own ``init_weights`` (downloaded once into the torch hub
    cache), and the mean, std and channel order of its ``model.data_preprocessor``;
  * an ImageNet backbone of the zoo (``ravlt-t_in1k`` ... ``ravlt-l_in1k``): the authors' weights;
  * a backbone of ravlt_dense.tools.benchmark.models (``ravlt_s_rala``, ``swin_t``, ``r50``,
    ``convnext_t``, ...): the architecture only, as these carry no weights.
``--random`` (or weights that cannot be had: no network, no torchvision for ``torchvision://``
weights) measures each backbone with the weights it is built with (PyTorch's default
initialisation of its layers, ``--seed``); the figure and the table then say "architecture
only".

For each model, each of the first ``--num-images`` images of DIR (sorted by name) is resized
to ``--shape`` and normalised as the model's data preprocessor does; the contribution map is
the gradient of the centre point of stage ``--stage``'s output (the sum of its channels' ReLU)
with respect to the image, absolute (``--grad relu``: rectified, as RepLKNet's code), summed
over colour channels and averaged over the images; the heat map is ``log10(map + 1)``
rescaled to [0, 1]; the table gives, for each share t, the smallest centred square holding t
of the heat map's total, as a share of the image area (RepLKNet's table); see
ravlt_dense.tools.analysis.erf. ``--stage`` counts the backbone's stages as its ``out_indices`` do
(0 = stride 4 in the detection backbones); -1 is the last map it returns.

Writes erf.png, erf.md and erf.csv (and with --save-maps erf_MODEL.npy, the mean contribution
map) to --out-dir, all at the end of the run, each whole or not at all.
"""
import argparse
import contextlib
import copy
import csv
import io
import logging
import os
import os.path as osp
import re
import sys
import time
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, DictAction

from ravlt_dense import zoo
from ravlt_dense.checkpoint import CheckpointDownloadError, CorruptCheckpointError
from ravlt_dense.tools import names
from ravlt_dense.tools.analysis.erf import (
    GRADS,
    THRESHOLDS,
    ERFResult,
    effective_receptive_field,
    probe_stage,
)
from ravlt_dense.tools.benchmark import models as benchmark_models  # the benchmark's backbones
from ravlt_dense.tools.cli import add_shape_argument, parsed_shape
from ravlt_dense.tools.images import collect_images, read_image, unique_stem

# ImageNet statistics in RGB, mmdet's and mmseg's defaults: for models without a config
IMAGENET = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
RANDOM = 'random (architecture only)'
# Why weights could not be had: no network or file, a download cut short, a loader's package
# missing (mmengine's torchvision:// needs torchvision). A checkpoint that does not fit the
# model is an error, not a reason to go on without it.
UNAVAILABLE = (OSError, ImportError, CheckpointDownloadError, CorruptCheckpointError)


class Subject(NamedTuple):
    """One backbone to measure, ready to run."""
    name: str  # as given on the command line
    label: str  # in the figure and the table
    backbone: nn.Module
    weights: str  # where its weights came from, or RANDOM (+ why)
    preprocess: dict  # mean, std, bgr_to_rgb
    output: int  # the position of --stage among the backbone's outputs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('models', nargs='+', metavar='MODEL',
                   help='backbones: config files, zoo names, mmdet::/mmseg:: configs or '
                   'benchmark backbone names (see below)')
    p.add_argument('--images', required=True, help='folder of images (sub-folders included)')
    p.add_argument('--num-images', type=int, default=50,
                   help='images to average over, the first of the folder (default: 50, '
                   "RepLKNet's)")
    add_shape_argument(p, help='images are resized to', default=(1024, 1024))
    p.add_argument('--stage', type=int, default=-1,
                   help='stage whose output centre is measured (default: -1, the last)')
    p.add_argument('--random', action='store_true',
                   help='random weights: the architecture only')
    p.add_argument('--grad', choices=GRADS, default='abs',
                   help="abs: the gradient's absolute value (default); relu: the gradient "
                   "rectified, as RepLKNet's code takes it")
    p.add_argument('--thresholds', type=float, nargs='+', default=list(THRESHOLDS),
                   help='shares of the contribution for the area table (default: 0.2 0.3 0.5 '
                   '0.99)')
    p.add_argument('--labels', nargs='+',
                   help="the models' names in the figure and the table, in order")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--seed', type=int, default=0, help='seed of the random weights')
    p.add_argument('--save-maps', action='store_true',
                   help='also write each mean contribution map as erf_MODEL.npy')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the configs, e.g. a local copy of the weights: '
                   'model.backbone.init_cfg.checkpoint=PATH')
    p.add_argument('--out-dir', default='work_dirs/erf')
    args = p.parse_args(argv)
    args.shape = parsed_shape(p, args.shape)
    if args.num_images < 1:
        p.error(f'--num-images must be at least 1, got {args.num_images}')
    bad = [t for t in args.thresholds if not 0 < t <= 1]
    if bad:
        p.error(f'--thresholds are shares of the contribution in (0, 1], got {bad}')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}, but torch sees no CUDA device (use --device cpu)')
    if args.labels and len(args.labels) != len(args.models):
        p.error(f'--labels gives {len(args.labels)} label(s) for {len(args.models)} model(s)')
    if len(set(args.models)) != len(args.models):
        p.error('a MODEL is given twice')
    return args


# ----------------------------------------------------------------------------- the models
def imagenet_backbones() -> Dict[str, dict]:
    """The zoo's ImageNet backbones (``ravlt-s_in1k``...) by name."""
    try:
        return {name: m for name, m in zoo.models().items() if m['Metadata'].get('Variant')}
    except FileNotFoundError:  # installed without the configs: no zoo
        return {}


def unknown_model(name: str, why: str = '') -> SystemExit:
    return SystemExit(
        f'Unknown MODEL {name!r}{": " + why if why else ""}. A MODEL is an ImageNet backbone of '
        f'the zoo ({", ".join(imagenet_backbones())}), a benchmark backbone '
        f'({", ".join(benchmark_models.BACKBONES)}), a config file, a config of the zoo '
        f'({", ".join(zoo_config_names())}) or an mmdet::/mmseg:: config '
        f'(e.g. mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py)')


def zoo_config_names() -> List[str]:
    try:
        return zoo.config_names()
    except FileNotFoundError:
        return []


def is_config(name: str) -> bool:
    return osp.isfile(name) or name.endswith('.py') or '::' in name or name in zoo_config_names()


def backbone_config(name: str, cfg_options: Optional[dict], stage: int):
    """(backbone config, data preprocessor, default scope) of MODEL given as a config."""
    try:
        file = names.resolve_model(name).config
    except (ValueError, FileNotFoundError) as error:
        raise unknown_model(name, str(error))
    if not osp.isfile(file):
        raise SystemExit(f'MODEL {name}: config file not found: {file}')
    try:
        cfg = Config.fromfile(file)  # runs the config's custom_imports (ravlt_dense for RAVLT)
    except ImportError as error:  # e.g. mmdet's ConvNeXt configs import mmpretrain
        raise SystemExit(f'MODEL {name}: its config cannot be loaded here: '
                         f'{error.__cause__ or error} (install the package it imports, or '
                         'leave the model out)')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    backbone = copy.deepcopy(cfg.get('model', {}).get('backbone'))
    if not backbone:
        raise SystemExit(f'MODEL {name}: the config {file} has no model.backbone')
    # mmseg's (and older mmdet's) model.pretrained: what the segmentor hands its backbone
    pretrained = cfg.model.get('pretrained')
    if pretrained and not backbone.get('init_cfg') and not backbone.get('pretrained'):
        backbone.init_cfg = dict(type='Pretrained', checkpoint=pretrained)
    out_indices = backbone.get('out_indices')
    if stage >= 0 and out_indices is not None and stage not in tuple(out_indices):
        # a stage the head does not take (e.g. RetinaNet's stride 4): have the backbone return it
        backbone.out_indices = tuple(sorted({*out_indices, stage}))
    preprocess = {k: cfg.model.get('data_preprocessor', {}).get(k, v)
                  for k, v in IMAGENET.items()}
    return backbone, preprocess, cfg.get('default_scope', 'mmdet')


def build_from_config(name: str, backbone_cfg, scope: str, stage: int) -> nn.Module:
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(scope)
    try:
        return MODELS.build(backbone_cfg)
    except KeyError as error:  # a type no registry knows (e.g. mmpretrain.ConvNeXt, not installed)
        raise SystemExit(f'MODEL {name}: cannot build its backbone {backbone_cfg.type!r}: '
                         f'{error} (is the package that registers it installed?)')
    except (ValueError, AssertionError, IndexError) as error:
        if stage >= 0 and 'out_indices' in backbone_cfg:
            raise SystemExit(f'--stage {stage}: MODEL {name} has no such stage (building its '
                             f'{backbone_cfg.type} with out_indices={backbone_cfg.out_indices} '
                             f'failed: {error})')
        raise


def short_label(name: str, backbone_cfg) -> str:
    """'RAVLT-S', 'ResNet-50', 'SwinTransformer' ... from a backbone config."""
    kind = str(backbone_cfg.get('type', 'backbone')).split('.')[-1]
    arch, depth = backbone_cfg.get('arch'), backbone_cfg.get('depth')
    size = arch.upper() if isinstance(arch, str) and len(arch) == 1 else arch if isinstance(
        arch, str) else depth
    return f'{kind}-{size}' if size else kind


def checkpoint_of(backbone: nn.Module) -> Optional[str]:
    """The checkpoint a built backbone loads in ``init_weights``: its ``init_cfg``'s (mmengine's
    ``Pretrained``, or a bare ``checkpoint`` key as mmdet's PVT configs give it) or its
    ``pretrained`` argument; None when it names none."""
    init_cfg = getattr(backbone, 'init_cfg', None)
    if isinstance(init_cfg, dict) and init_cfg.get('type', 'Pretrained') == 'Pretrained':
        return init_cfg.get('checkpoint')
    pretrained = getattr(backbone, 'pretrained', None)
    return pretrained if isinstance(pretrained, str) else None


@contextlib.contextmanager
def quiet_mmengine():
    """mmengine's INFO lines off (an init_weights with a checkpoint lists every parameter)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def initialise(build: Callable[[bool], nn.Module], random: bool, name: str, seed: int):
    """(backbone, where its weights came from): the checkpoint its config names, loaded by its
    own ``init_weights``, unless ``random`` or it cannot be had; else the weights the
    architecture is built with (PyTorch's default initialisation of each layer, seeded;
    ``init_weights`` is not run: mmdet's ResNet would zero the last norm of every block)."""
    backbone = build(not random)
    if random:
        return backbone, f'{RANDOM}: --random'
    source = checkpoint_of(backbone)
    if not source:
        return backbone, f'{RANDOM}: no weights named'
    try:
        with quiet_mmengine():
            backbone.init_weights()
    except UNAVAILABLE as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f'WARNING: {name}: its weights ({source}) cannot be had ({cause}); measuring the '
              'architecture only (random weights)', file=sys.stderr, flush=True)
        torch.manual_seed(seed)  # the same random weights as with --random
        return build(False), f'{RANDOM}: weights not available'
    print(f'{name}: weights loaded from {source}', flush=True)
    return backbone, f'pretrained: {source}'


def resolve_model(name: str, args) -> Subject:
    """Build MODEL ``name`` with its weights (or random ones) and its preprocessing."""
    torch.manual_seed(args.seed)  # each model's random weights, whatever the order
    name = zoo.current_name(name)  # an old zoo name: its model's name now
    output = args.stage
    if is_config(name):
        backbone_cfg, preprocess, scope = backbone_config(name, args.cfg_options, args.stage)

        def build(with_weights):
            cfg = copy.deepcopy(backbone_cfg)
            if not with_weights:
                cfg.init_cfg = None
                cfg.pop('pretrained', None)
            return build_from_config(name, cfg, scope, args.stage)
        label = short_label(name, backbone_cfg)
        if args.stage >= 0 and 'out_indices' in backbone_cfg:
            output = tuple(backbone_cfg.out_indices).index(args.stage)
    elif name in imagenet_backbones():
        from ravlt_dense.models.backbones.ravlt import RAVLT
        variant, url = zoo.variant(name), zoo.weights_url(name)

        def build(with_weights):
            init_cfg = dict(type='Pretrained', checkpoint=url) if with_weights else None
            return RAVLT(variant, init_cfg=init_cfg)
        label, preprocess = f'RAVLT-{variant.upper()}', IMAGENET
    elif name in benchmark_models.BACKBONES:
        missing = benchmark_models.missing_requirement(name, 'backbone')
        if missing:
            raise SystemExit(f'MODEL {name} cannot be built here: {missing}')
        entry = benchmark_models.BACKBONES[name]

        def build(with_weights):
            return entry.build(tuple(args.shape))
        label, preprocess = entry.description, IMAGENET
    else:
        raise unknown_model(name)
    backbone, weights = initialise(build, args.random, name, args.seed)
    return Subject(name, label, backbone.to(args.device), weights, preprocess, output)


# ----------------------------------------------------------------------------- the images
def image_files(folder: str, num: int) -> List[str]:
    """The first ``num`` images of ``folder`` (sorted, sub-folders included)."""
    if not osp.isdir(folder):
        raise SystemExit(f'--images {folder}: no such folder' if not osp.exists(folder) else
                         f'--images {folder}: not a folder (give the folder of the images)')
    try:
        return collect_images([folder], recursive=True)[:num]
    except FileNotFoundError as error:
        raise SystemExit(f'--images: {error}')


def normalised_images(files: Sequence[str], shape: Sequence[int], preprocess: dict,
                      device: str) -> Iterator[torch.Tensor]:
    """Each file as a (1, 3, H, W) tensor: resized to ``shape`` and normalised as the model's
    data preprocessor does (read one at a time)."""
    import mmcv
    mean = torch.tensor(preprocess['mean'], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocess['std'], dtype=torch.float32).view(1, 3, 1, 1)
    for file in files:
        img = mmcv.imresize(read_image(file), (shape[1], shape[0]), interpolation='bicubic')
        if preprocess['bgr_to_rgb']:
            img = img[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        yield ((x - mean) / std).to(device)


# ----------------------------------------------------------------------------- the outputs
def map_names(names: Sequence[str]) -> List[str]:
    """The .npy file of each MODEL: erf_STEM.npy, STEM unique among them."""
    taken = set()
    stems = [re.sub(r'[^A-Za-z0-9_.-]+', '_', osp.basename(name.split('::')[-1]))
             for name in names]
    return [f'erf_{unique_stem(stem, taken)}.npy' for stem in stems]


def stage_number(subject: Subject, result: ERFResult) -> int:
    """The stage as out_indices counts it (the output's position where it has none)."""
    out_indices = getattr(subject.backbone, 'out_indices', None)
    try:
        return int(tuple(out_indices)[result.stage.index])
    except (TypeError, IndexError):
        return result.stage.index


def percent(share: float) -> str:
    return f'{100 * share:.3g}%'


def table_rows(subjects, results, args) -> List[dict]:
    rows = []
    for subject, result in zip(subjects, results):
        row = dict(model=subject.name, backbone=subject.label, weights=subject.weights,
                   stage=stage_number(subject, result), map_height=result.stage.height,
                   map_width=result.stage.width, stride=result.stage.stride,
                   images=result.images, skipped=result.skipped, height=args.shape[0],
                   width=args.shape[1], grad=args.grad)
        for t, (side, share) in result.shares.items():
            row[f'area_{100 * t:g}'] = round(share, 6)
            row[f'side_{100 * t:g}'] = side
        rows.append(row)
    return rows


def markdown(rows: List[dict], args, source: str) -> str:
    thresholds = [f'{100 * t:g}' for t in args.thresholds]
    lines = [
        '# Effective receptive field', '',
        f'{source}, resized to {args.shape[0]}x{args.shape[1]} ({args.device}): the gradient '
        "of the centre of the stage's output (the sum of its channels' ReLU) with respect to "
        f"the image ({'absolute' if args.grad == 'abs' else 'rectified'}, summed over colour "
        'channels, averaged over the images). Each cell: the smallest centred '
        'square that holds t of the log-scaled contribution, as a share of the input area '
        "(RepLKNet's table). Random weights measure the architecture only.", '',
        '| model | backbone | weights | stage (map, stride) | images | '
        + ' | '.join(f't = {t}%' for t in thresholds) + ' |',
        '|' + '---|' * (5 + len(thresholds))]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backbone']} | {r['weights']} | {r['stage']} "
            f"({r['map_height']}x{r['map_width']}, {r['stride']}) | {r['images']} | "
            + ' | '.join(percent(r[f'area_{t}']) for t in thresholds) + ' |')
    return '\n'.join(lines) + '\n'


def csv_text(rows: List[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def figure(subjects, results, rows, args, path: str) -> None:
    """The heat maps side by side (up to 5 a row), one colour bar, written as PNG to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    # The upper half of RdYlGn: how RepLKNet's seaborn heatmap (center=0) shows [0, 1] maps.
    cmap = ListedColormap(plt.get_cmap('RdYlGn')(np.linspace(0.5, 1, 256)))
    n = len(subjects)
    cols = n if n <= 5 else 4
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(2.5 * cols + 0.8, 3.1 * -(-n // cols)),
                             squeeze=False, layout='constrained')
    for ax in axes.flat[n:]:
        ax.axis('off')
    shown = [t for t in args.thresholds if t in (0.5, 0.99)] or args.thresholds[-1:]
    for ax, subject, result, row in zip(axes.flat, subjects, results, rows):
        image = ax.imshow(result.heat, cmap=cmap, vmin=0, vmax=1, interpolation='bilinear')
        ax.set_xticks([])
        ax.set_yticks([])
        weights = 'architecture only' if subject.weights.startswith(RANDOM) else 'pretrained'
        ax.set_title(f'{subject.label}\n{weights}, stage {row["stage"]}', fontsize=9)
        ax.set_xlabel('area holding ' + ', '.join(
            f'{100 * t:g}%: {percent(result.shares[t][1])}' for t in shown), fontsize=7.5)
    every_random = all(s.weights.startswith(RANDOM) for s in subjects)
    fig.suptitle(f'Effective receptive field, {results[0].images} image(s) at '
                 f'{args.shape[0]}x{args.shape[1]}'
                 + ('\narchitecture only (random weights)' if every_random else ''),
                 fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02,
                 label='log10(contribution + 1), rescaled')
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=80, bbox_inches='tight', pad_inches=0.05)
    plt.close(fig)
    # A 256-colour palette: the maps' noise makes full-colour PNGs several times larger.
    from PIL import Image
    buffer.seek(0)
    Image.open(buffer).convert('RGB').quantize(256).save(path, format='PNG', optimize=True)


def publish(writers: Dict[str, Callable[[str], None]]) -> None:
    """Write every file under a temporary name beside it, then rename them all: the outputs
    appear whole, and none of them if any write fails."""
    temps = {}
    try:
        for path, write in writers.items():
            os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
            temps[path] = osp.join(osp.dirname(osp.abspath(path)),
                                   f'.{osp.basename(path)}.tmp{os.getpid()}')
            write(temps[path])
    except BaseException:
        for temp in temps.values():
            if osp.exists(temp):
                os.remove(temp)
        raise
    for path, temp in temps.items():
        os.replace(temp, path)


def write_text(text: str) -> Callable[[str], None]:
    def write(path):
        with open(path, 'w') as f:
            f.write(text)
    return write


def write_array(array: np.ndarray) -> Callable[[str], None]:
    def write(path):
        with open(path, 'wb') as f:  # a file object: np.save would append .npy to the name
            np.save(f, array.astype(np.float32))
    return write


# ----------------------------------------------------------------------------- the run
def measure(subject: Subject, files: Sequence[str], args) -> ERFResult:
    from mmengine.utils import ProgressBar
    print(f'{subject.name}: {len(files)} image(s) at {args.shape[0]}x{args.shape[1]}, '
          f'{subject.weights}', flush=True)
    bar = ProgressBar(len(files))
    images = normalised_images(files, args.shape, subject.preprocess, args.device)
    result = effective_receptive_field(subject.backbone, images, subject.output, args.grad,
                                       args.thresholds, progress=bar.update)
    sys.stdout.write('\n')
    if result.skipped:
        print(f'{subject.name}: {result.skipped} image(s) left out (gradient not finite)')
    return result


def check_stage(subject: Subject, args) -> None:
    """The stage exists and its stride divides --shape: SystemExit naming the model if not."""
    blank = torch.zeros(1, 3, *args.shape, device=args.device)
    try:
        probe_stage(subject.backbone, blank, subject.output)
    except IndexError as error:
        raise SystemExit(f'--stage {args.stage}: MODEL {subject.name}: {error}')
    except ValueError as error:
        raise SystemExit(f'--shape {args.shape[0]} {args.shape[1]}: MODEL {subject.name}: '
                         f'{error}')


def main(argv=None):
    args = parse_args(argv)
    files = image_files(args.images, args.num_images)
    source = f'{len(files)} image(s) from {args.images}'
    if len(files) < args.num_images:
        print(f'{args.images} has {len(files)} image(s), fewer than --num-images '
              f'{args.num_images}: measuring on all of them')
    started = time.time()
    subjects = [resolve_model(name, args) for name in args.models]
    if args.labels:
        subjects = [s._replace(label=label) for s, label in zip(subjects, args.labels)]
    for subject in subjects:  # every model's errors before the long work
        check_stage(subject, args)
    results = [measure(subject, files, args) for subject in subjects]
    rows = table_rows(subjects, results, args)
    text = markdown(rows, args, source)
    out = args.out_dir
    writers = {osp.join(out, 'erf.md'): write_text(text),
               osp.join(out, 'erf.csv'): write_text(csv_text(rows)),
               osp.join(out, 'erf.png'): lambda path: figure(subjects, results, rows, args,
                                                             path)}
    if args.save_maps:
        names = map_names([s.name for s in subjects])
        writers.update({osp.join(out, file): write_array(r.scores)
                        for file, r in zip(names, results)})
    publish(writers)
    print(text)
    print(f'Wrote {", ".join(sorted(osp.basename(p) for p in writers))} to {out} '
          f'({time.time() - started:.0f} s)')
    return rows


if __name__ == '__main__':
    main()
