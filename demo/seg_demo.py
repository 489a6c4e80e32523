"""Segment images with a trained RAVLT segmentor and write overlays and label maps.

    python demo/seg_demo.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [...] --out-dir OUT
        [--device cpu] [--opacity 0.5] [--slide --crop-size 512 512 --stride 341 341]
    python demo/seg_demo.py ZOO_NAME IMAGE_OR_FOLDER [...]
        # ZOO_NAME e.g. upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512

CHECKPOINT is a file, URL or zoo name, ours or the authors' mmseg 0.x release (converted on load,
by the loader of tools/test.py); a name of the model zoo (configs/metafile.yml) as MODEL brings
its config and the authors' weights (downloaded once into the torch hub cache).

For every input image ``NAME.ext`` it writes
    OUT/vis/NAME.png    the image with the predicted classes painted over it (and their names)
    OUT/pred/NAME.png   the label map: one uint8 class index (0..K-1, the checkpoint's classes)
                        per pixel, the format mmseg's inferencer writes
Inference goes through mmseg's ``MMSegInferencer`` (its test pipeline, model and visualizer).
``--slide`` switches the model to sliding-window inference for images larger than the training
crops: crops of ``--crop-size`` every ``--stride`` pixels, logits averaged where they overlap.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence

import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.utils import ProgressBar, import_modules_from_strings

from ravlt_dense.checkpoint import find_checkpoint
from ravlt_dense.tools.images import collect_images, read_image, unique_stem
from ravlt_dense.tools.inference import add_model_arguments, default_device, resolve_demo_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_model_arguments(
        parser, example='configs/sem_fpn/fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512.py')
    parser.add_argument('--out-dir', default='work_dirs/seg_demo',
                        help='writes OUT_DIR/vis/*.png (overlays) and OUT_DIR/pred/*.png (labels)')
    parser.add_argument('--device', default=None,
                        help='torch device, e.g. cpu or cuda:0 (default: cuda:0 if available)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the painted classes in the overlays, in (0, 1]')
    parser.add_argument('--no-labels', action='store_true',
                        help='do not write class names on the overlays')
    parser.add_argument('--slide', action='store_true',
                        help='sliding-window inference (for images larger than the crops)')
    parser.add_argument('--crop-size', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'),
                        help='window size of --slide')
    parser.add_argument('--stride', type=int, nargs=2, default=[341, 341], metavar=('H', 'W'),
                        help='window stride of --slide')
    args = parser.parse_args(argv)
    if not 0 < args.opacity <= 1:
        parser.error(f'--opacity must be in (0, 1], got {args.opacity}')
    if min(args.crop_size) < 1 or min(args.stride) < 1:
        parser.error('--crop-size and --stride must be positive')
    if any(s > c for s, c in zip(args.stride, args.crop_size)):
        parser.error(f'--stride {args.stride} larger than --crop-size {args.crop_size} would '
                     'leave pixels no window covers')
    return args


def load_config(config: str, slide: bool = False, crop_size=(512, 512),
                stride=(341, 341), scale_factor=None) -> Config:
    """The config for inference: RAVLT registered, sliding windows if ``slide``, and the test
    pipeline's Resize replaced by ``scale_factor`` (a float, or (w, h) factors) if given."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'Config not found: {config}')
    cfg = Config.fromfile(config)
    if cfg.get('custom_imports'):
        # MMSegInferencer builds the model without reading custom_imports: register RAVLT here.
        import_modules_from_strings(**cfg.custom_imports)
    if slide:
        cfg.model.test_cfg = dict(mode='slide', crop_size=tuple(crop_size), stride=tuple(stride))
    if scale_factor is not None:
        pipeline = cfg.test_dataloader.dataset.pipeline
        resizes = [i for i, t in enumerate(pipeline) if t['type'].split('.')[-1] == 'Resize']
        resize = dict(type='Resize', scale_factor=scale_factor, keep_ratio=False)
        if resizes:
            pipeline[resizes[0]] = resize
        else:  # after the image is loaded
            pipeline.insert(1, resize)
    # The demo writes its files itself: no visualizer backend (it would want a save_dir).
    cfg.visualizer.vis_backends = None
    # Inference needs no backbone initialisation: the segmentor checkpoint holds every weight.
    cfg.model.backbone.pop('init_cfg', None)
    return cfg


def count_windows(model) -> None:
    """A progress bar over the sliding windows of each image (mmseg's ``slide_inference``
    calls ``encode_decode`` once per window): a large image takes minutes."""
    slide, encode_decode = model.slide_inference, model.encode_decode

    def slide_with_progress(inputs, batch_img_metas):
        (h_crop, w_crop), (h_stride, w_stride) = model.test_cfg.crop_size, model.test_cfg.stride
        h_img, w_img = inputs.shape[2:]
        rows = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1  # as slide_inference
        cols = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        progress = ProgressBar(rows * cols)  # windows done, windows per second, ETA

        def counted(*args, **kwargs):
            logits = encode_decode(*args, **kwargs)
            progress.update()
            return logits

        model.encode_decode = counted
        try:
            return slide(inputs, batch_img_metas)
        finally:
            del model.encode_decode  # the class's method again
            sys.stdout.write('\n')

    model.slide_inference = slide_with_progress


def build_inferencer(cfg: Config, checkpoint: str, device: str):
    """mmseg's inferencer with the project's weights loading, labelled with the model's
    classes (``ravlt_dense.apis.RAVLTSegInferencer``)."""
    from ravlt_dense.apis import RAVLTSegInferencer
    return RAVLTSegInferencer(model=cfg, weights=checkpoint, device=device)


def run(config: str, checkpoint: str, inputs: Sequence[str], out_dir: str,
        device: Optional[str] = None, opacity: float = 0.5, with_labels: bool = True,
        slide: bool = False, crop_size=(512, 512), stride=(341, 341),
        scale_factor=None) -> List[dict]:
    """Segment ``inputs``; return per image its input and the two files written.

    ``scale_factor`` replaces the test pipeline's Resize (see :func:`load_config`).
    """
    if find_checkpoint(checkpoint) is None:
        raise FileNotFoundError(f'Checkpoint not found: {checkpoint} (train one with '
                                'tools/train.py, or give the path or URL of a released one)')
    images = collect_images(inputs)
    cfg = load_config(config, slide, crop_size, stride, scale_factor)
    inferencer = build_inferencer(cfg, checkpoint, device or default_device())
    if slide:
        count_windows(inferencer.model)
    visualizer = inferencer.visualizer
    visualizer.alpha = opacity

    vis_dir, pred_dir = osp.join(out_dir, 'vis'), osp.join(out_dir, 'pred')
    os.makedirs(vis_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)
    written, taken = [], set()
    for path in images:
        img = read_image(path)
        sample = inferencer(img, return_datasamples=True)
        label = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
        stem = unique_stem(path, taken)
        vis_file, pred_file = osp.join(vis_dir, f'{stem}.png'), osp.join(pred_dir, f'{stem}.png')
        visualizer.add_datasample(stem, mmcv.bgr2rgb(img), sample, draw_gt=False,
                                  with_labels=with_labels, out_file=vis_file)
        mmcv.imwrite(label, pred_file)
        written.append(dict(image=path, vis=vis_file, pred=pred_file))
        print(f'{path} -> {vis_file}, {pred_file}', flush=True)
    return written


def main(argv=None):
    args = parse_args(argv)
    named, inputs = resolve_demo_model(args.model, args.inputs, args.weights)
    return run(named.config, named.weights, inputs, args.out_dir, device=args.device,
               opacity=args.opacity, with_labels=not args.no_labels, slide=args.slide,
               crop_size=args.crop_size, stride=args.stride)


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'seg_demo: error: {err}')
