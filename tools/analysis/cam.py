"""Class activation maps (Grad-CAM, EigenCAM) of a detector or segmentor at any layer, drawn
over the images.

    python tools/analysis/cam.py CONFIG CHECKPOINT IMAGE_OR_DIR [...] [--out-dir work_dirs/cam]
        [--target-layers backbone.layers.2 [...]] [--method gradcam eigencam]
        [--target-det 0] [--class NAME] [--panel FILE] [--device cpu] [--cfg-options ...]
    python tools/analysis/cam.py ZOO_NAME IMAGE_OR_DIR [...]  # mask-rcnn_ravlt-s_fpn_amp-1x_coco
    python tools/analysis/cam.py CONFIG CHECKPOINT --preview-model  # every layer's name

CONFIG is a config file, a name of the model zoo (its config and weights; ``--weights``
replaces them) or an ``mmdet::`` / ``mmseg::`` config name; CHECKPOINT a file, URL or zoo name,
loaded as tools/test.py loads it. The config's ``default_scope`` says which it is:

* mmdet detector: the map explains the score of one detection: ``--target-det N`` is its
  place among the image's detections sorted by score (0, the default: the top-scoring one),
  counted among the detections of ``--class`` only when that is given;
* mmseg segmentor: the map explains one class (``--class``; default: the class predicted on
  most pixels): the sum of its logits over the pixels predicted as it.

Images go through the config's test pipeline and the model's data preprocessor, and the
model's own predict forward gives the score (ravlt_dense.tools.analysis.cam explains how).
``--target-layers`` are module names as ``model.named_modules()`` gives them (default: the
backbone's second-to-last stage, stride 16). For every image NAME it writes (each file whole,
or not at all):

    OUT_DIR/NAME_METHOD_LAYER.png   the map over the image, with the detection's box or the
                                    outline of the class's pixels
    FILE                            (--panel FILE) the images' maps side by side
    OUT_DIR/cam.json                the target of every image and the files written
"""
import argparse
import io
import json
import os
import os.path as osp
import sys
import tempfile
import time

import numpy as np
from mmengine.config import Config, DictAction

from ravlt_dense.checkpoint import find_checkpoint
from ravlt_dense.tools.analysis import cam as C
from ravlt_dense.tools.images import collect_images, read_image, unique_stem
from ravlt_dense.tools.inference import default_device, resolve_demo_model

# Rows of --panel at most: a figure for a few images, not for a data set.
PANEL_ROWS = 12
# The process's file creation mask (read by setting it: there is no other way).
UMASK = os.umask(0)
os.umask(UMASK)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', metavar='CONFIG',
                        help='config file (then its CHECKPOINT: file, URL or zoo name), a name '
                        'of the model zoo (configs/metafile.yml), or an mmdet::/mmseg:: name')
    parser.add_argument('inputs', nargs='*', metavar='IMAGE',
                        help='image files and/or folders of images, after the CHECKPOINT when '
                        'CONFIG is a config')
    parser.add_argument('--weights', help="checkpoint (file, URL) instead of the zoo's")
    parser.add_argument('--out-dir', default='work_dirs/cam', help='where the maps are written')
    parser.add_argument('--target-layers', nargs='+', metavar='LAYER',
                        help='module names (model.named_modules()), one map each; default: the '
                        "backbone's second-to-last stage (e.g. backbone.layers.2)")
    parser.add_argument('--method', nargs='+', choices=C.METHODS, default=list(C.METHODS),
                        help='CAM methods (default: both)')
    parser.add_argument('--target-det', type=int, default=0, metavar='N',
                        help='detectors: the detection explained, by its place among the '
                        'detections sorted by score (0: the top-scoring one)')
    parser.add_argument('--class', dest='class_name', metavar='NAME',
                        help='detectors: take the detection among those of this class; '
                        'segmentors: the class explained (default: the one on most pixels)')
    parser.add_argument('--alpha', type=float, default=0.5,
                        help='opacity of the heat map over the image, in (0, 1]')
    parser.add_argument('--panel', metavar='FILE',
                        help=f'also write one figure (PNG) of the maps of the first {PANEL_ROWS} '
                        'images side by side')
    parser.add_argument('--preview-model', action='store_true',
                        help='print the names of the layers and exit')
    parser.add_argument('--device', help="'cpu' or a GPU such as 'cuda:0' (default: cuda:0 if "
                        'available)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, e.g. model.test_cfg.rcnn.'
                        'score_thr=0.3')
    args = parser.parse_args(argv)
    try:
        named, args.inputs = resolve_demo_model(args.model, args.inputs, args.weights,
                                                need_inputs=False)
        args.config, args.checkpoint = named.config, named.weights
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    if find_checkpoint(args.checkpoint) is None:
        parser.error(f'checkpoint not found: {args.checkpoint}')
    if not args.preview_model:
        if not args.inputs:
            parser.error('no input images given')
        try:
            args.images = collect_images(args.inputs)
            for path in args.images:  # a bad input fails before the model loads
                read_image(path)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
    if args.target_det < 0:
        parser.error(f'--target-det must be 0 or more, got {args.target_det}')
    if not 0 < args.alpha <= 1:
        parser.error(f'--alpha must be in (0, 1], got {args.alpha}')
    args.device = args.device or default_device()
    return args


def load_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('custom_imports'):  # mmseg's inferencer does not import them
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    # The checkpoint holds every weight: no backbone initialisation (no ImageNet download).
    if isinstance(cfg.model.get('backbone'), dict):
        cfg.model.backbone.pop('init_cfg', None)
    cfg.visualizer.vis_backends = None  # this tool writes its own files
    return cfg


def config_task(cfg: Config) -> str:
    """'det' or 'seg', from the config's ``default_scope`` (else its model's registry)."""
    scope = cfg.get('default_scope')
    if scope in ('mmdet', 'mmseg'):
        return scope[2:]
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    model_type = cfg.model.get('type')
    for task, registry in (('det', DET_MODELS), ('seg', SEG_MODELS)):
        if registry.get(model_type) is not None:
            return task
    raise SystemExit(f'cam: error: {osp.basename(cfg.filename)} is neither an mmdet detector '
                     f'nor an mmseg segmentor (default_scope {scope!r}, model type '
                     f'{model_type!r})')


def build_inferencer(cfg: Config, task: str, checkpoint: str, device: str):
    """mmdet's or mmseg's inferencer with the project's weights loading: the model, its test
    pipeline and its classes, as the demos use them."""
    from ravlt_dense.apis import RAVLTDetInferencer, RAVLTSegInferencer
    if task == 'det':
        return RAVLTDetInferencer(model=cfg, weights=checkpoint, device=device,
                                  show_progress=False)
    return RAVLTSegInferencer(model=cfg, weights=checkpoint, device=device)


def write_atomically(path: str, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file in the same folder: whole or not at all."""
    folder = osp.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix=osp.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's 0600 -> what open() would have given
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def write_png(path: str, rgb: np.ndarray) -> None:
    import cv2
    ok, png = cv2.imencode('.png', np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f'cannot encode {path}')
    write_atomically(path, png.tobytes())


def write_panel(path: str, rows, columns) -> None:
    """One row per image: the image with its target, then each map (``columns`` titles)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                             figsize=(2.1 * len(columns), 2.3 * len(rows)))
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=80)
    plt.close(fig)
    # 256 colours: a quarter of the size of the full-colour figure, the same to the eye
    from PIL import Image
    figure = Image.open(buffer).convert('RGB').quantize(256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    figure.save(buffer, format='png', optimize=True)
    write_atomically(path, buffer.getvalue())


def preview(model) -> None:
    for name, module in model.named_modules():
        if name:
            print(f'{name}  ({type(module).__name__})')


def checked_layers_and_class(args, model, classes):
    """The layers (default: the backbone's second stage) and --class, checked against the
    model: SystemExit naming what is wrong."""
    try:
        layers = args.target_layers or [C.default_layer(model)]
        for layer in layers:
            C.find_layer(model, layer)
        if args.class_name is not None:
            C.class_index(classes, args.class_name)
    except ValueError as err:
        raise SystemExit(f'cam: error: {err}')
    return layers


def target_chooser(args, task, classes):
    """``sample -> (Target, score_fn)`` of the command line, and what it looks for."""
    if task == 'det':
        wanted = f'detection {args.target_det}' + (
            f' of class {args.class_name}' if args.class_name else '')
        return (lambda sample: C.detection_target(sample, classes, args.target_det,
                                                  args.class_name)), wanted
    return (lambda sample: C.segmentation_target(sample, classes, args.class_name)), \
        f'pixel of class {args.class_name}'


def draw_and_write(args, path, stem, result):
    """The overlays of one image's maps, written; (record for cam.json, drawings)."""
    image = read_image(path)[:, :, ::-1]
    target = result.target
    drawings = [C.overlay(image, np.zeros(image.shape[:2], np.float32), target, alpha=0.0)]
    maps = {}
    for method, per_layer in result.maps.items():
        for layer, cam in per_layer.items():
            drawing = C.overlay(image, cam, target, alpha=args.alpha)
            file = osp.join(args.out_dir, f'{stem}_{method}_{layer}.png')
            write_png(file, drawing)
            maps[f'{method}/{layer}'] = dict(file=file, **C.pointing(cam, target))
            drawings.append(drawing)
            if cam.max() == 0 and method in C.GRADIENT_METHODS:
                print(f'  {C.METHOD_TITLES[method]} at {layer} is zero everywhere: the target '
                      'does not depend on this layer', flush=True)
    box = dict(index=target.index, bbox=target.box) if target.box is not None else {}
    area = float(C.target_region(target, image.shape[:2]).mean())  # an even map's share
    record = dict(image=path, target=dict(label=target.label, class_name=target.class_name,
                                          score=target.score, area_share=area, **box),
                  maps=maps)
    return record, drawings


def pointing_table(records) -> str:
    """Per map kind: in how many images its peak lies in the target, and the mean share of
    the map inside the target."""
    keys = list(records[0]['maps'])
    names = {key: '{} {}'.format(C.METHOD_TITLES[key.split('/')[0]], key.split('/')[1])
             for key in keys}
    width = max(len(name) for name in names.values()) + 2
    lines = [f'{"map":<{width}}peak in target   share in target']
    for key in keys:
        found = [r['maps'][key] for r in records]
        peaks = sum(m['peak_in_target'] for m in found)
        share = sum(m['energy_in_target'] for m in found) / len(found)
        lines.append(f'{names[key]:<{width}}{f"{peaks}/{len(found)}":<17}{share:.2f}')
    area = sum(r['target']['area_share'] for r in records) / len(records)
    lines.append(f'(the targets cover {area:.2f} of their images: a map spread evenly would '
                 'have that share in them)')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    task = config_task(cfg)
    inferencer = build_inferencer(cfg, task, args.checkpoint, args.device)
    model = inferencer.model.eval()
    if args.preview_model:
        return preview(model)
    classes = list(model.dataset_meta.get('classes') or [])
    layers = checked_layers_and_class(args, model, classes)
    choose, wanted = target_chooser(args, task, classes)

    total = len(args.images)
    print(f'{total} image(s); {", ".join(args.method)} at {", ".join(layers)} of '
          f'{osp.basename(args.config)} ({args.device}) -> {args.out_dir}', flush=True)
    records, panel_rows, taken = [], [], set()
    for i, path in enumerate(args.images, 1):
        start = time.perf_counter()
        data = C.model_inputs(model, inferencer.pipeline, path)
        try:
            result = C.class_activation_maps(model, data, layers, args.method, choose)
        except C.CAMError as err:
            raise SystemExit(f'cam: error: {err}')
        if result is None:
            print(f'[{i}/{total}] {path}: no {wanted}; skipped', flush=True)
            continue
        stem = unique_stem(path, taken)
        record, drawings = draw_and_write(args, path, stem, result)
        records.append(record)
        if len(panel_rows) < PANEL_ROWS:
            panel_rows.append((f'{stem}\n{result.target.label_text()}', drawings))
        print(f'[{i}/{total}] {path}: {result.target.describe()} -> {len(record["maps"])} '
              f'map(s) ({time.perf_counter() - start:.1f} s)', flush=True)
    if not records:
        raise SystemExit(f'cam: error: no image has a {wanted}: nothing written')
    summary = dict(config=args.config, checkpoint=args.checkpoint, task=task, layers=layers,
                   methods=args.method, classes=classes, images=records)
    if args.panel:
        columns = ['image and target'] + [f'{C.METHOD_TITLES[m]}\n{layer}'
                                          for m in args.method for layer in layers]
        summary['panel'] = args.panel
        write_panel(args.panel, panel_rows, columns)
    write_atomically(osp.join(args.out_dir, 'cam.json'),
                     json.dumps(summary, indent=1).encode())
    print(pointing_table(records))
    print(f'{len(records)} of {total} image(s) -> {args.out_dir}'
          + (f', panel {summary["panel"]}' if args.panel else ''))


if __name__ == '__main__':
    sys.exit(main())
