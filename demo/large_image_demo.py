"""Run a trained detector or segmentor on very large images (aerial, satellite, gigapixel scans)
by patches, where one pass over the downsized image would miss the small objects.

    python demo/large_image_demo.py IMAGE_OR_DIR CONFIG CHECKPOINT [--out-dir outputs]
        [--patch-size 640] [--patch-overlap-ratio 0.25] [--batch-size 1] [--score-thr 0.3]
        [--merge-iou-thr 0.25] [--merge-nms-type nms] [--full-image-pass]
        [--compare [--compare-crop X Y W H] [--compare-width 1600]]
    python demo/large_image_demo.py IMAGE ZOO_NAME [...]   # mask-rcnn_ravlt-s_fpn_amp-1x_coco

The arguments are those of mmdet's demo/large_image_demo.py; the model is a config and its
CHECKPOINT (file, URL or zoo name, ours or the authors' release), or a name of the model zoo.

Detectors (mmdet): the image is cut into square patches of ``--patch-size`` px that overlap by
``--patch-overlap-ratio`` (SAHI's ``slice_image``, as mmdet's demo does); each batch of patches
goes through the config's test pipeline and model (mmdet's DetInferencer), and the patches'
boxes, moved to the image's coordinates, are merged by NMS (``mmdet.utils.large_image``).
``--full-image-pass`` adds one pass over the whole image, resized by the test pipeline, for
objects larger than a patch; ``--no-slice`` runs that pass alone. Instance masks are not
merged: the result holds boxes. For every image NAME it writes OUT_DIR/vis/NAME.png (drawn by
mmdet's visualizer) and OUT_DIR/preds/NAME.json (as demo/image_demo.py: class, score, box per
instance with score >= --score-thr). ``--compare`` also runs the single resized pass and writes
OUT_DIR/compare/NAME.png (the two results side by side, scaled to ``--compare-width`` px; on
``--compare-crop``, a region of the image, for a look at small objects) and
OUT_DIR/preds/NAME_resized.json.

Segmentors (mmseg): mmseg's sliding-window inference (``test_cfg`` mode='slide') through
demo/seg_demo.py, with windows that cover ``--patch-size`` px of the image, overlapping by
``--patch-overlap-ratio``, each resized as the test pipeline resizes a patch of that size; it
writes OUT_DIR/vis/NAME.png and OUT_DIR/pred/NAME.png, the label map at the image's full size.
"""
import argparse
import importlib.util
import io
import os.path as osp
import sys
from typing import List, Sequence, Tuple

import cv2
import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.fileio import dump, put
from mmengine.utils import ProgressBar

from ravlt_dense.tools.images import collect_images, read_image, unique_stem
from ravlt_dense.tools.inference import default_device

# importing ravlt_dense registers RAVLT and the types found in our checkpoints
from ravlt_dense.tools.saving import ATOMIC_BACKEND

import seg_demo  # demo/ is sys.path[0] when this runs as a script
from video_demo import det_inferencer, is_segmentor, model_and_checkpoint

ATOMIC = dict(backend=ATOMIC_BACKEND)  # files written whole (temporary name, then renamed)
DEFAULT_PATCH = dict(det=640, seg=512)  # mmdet's demo; ADE20K's crops


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('img', help='image file, or a folder of images')
    parser.add_argument('model', help='config file, or a name of the model zoo '
                        '(configs/metafile.yml)')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint file or URL (a zoo name brings its own)')
    parser.add_argument('--weights', help="checkpoint (file or URL) instead of the zoo's")
    parser.add_argument('--out-dir', default='outputs', help='where vis/ and preds/ go')
    parser.add_argument('--device', default=None,
                        help="'cpu' or a GPU such as 'cuda:0' (default: cuda:0 if available)")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='keep (draw and save) instances with at least this score')
    parser.add_argument('--patch-size', type=int, default=None,
                        help=f'side of the patches in image pixels (default: '
                        f'{DEFAULT_PATCH["det"]} for detectors, {DEFAULT_PATCH["seg"]} for '
                        'segmentors)')
    parser.add_argument('--patch-overlap-ratio', type=float, default=0.25,
                        help='overlap of neighbouring patches, as a share of their side')
    parser.add_argument('--batch-size', type=int, default=1, help='patches per forward pass')
    parser.add_argument('--merge-iou-thr', type=float, default=0.25,
                        help='IoU above which the NMS merging the patches drops a box')
    parser.add_argument('--merge-nms-type', default='nms', choices=['nms', 'soft_nms'],
                        help="NMS of the merging (mmcv's)")
    parser.add_argument('--full-image-pass', action='store_true',
                        help='also detect on the whole image resized, and merge (objects '
                        'larger than a patch)')
    parser.add_argument('--no-slice', action='store_true',
                        help='only the pass over the whole image resized (as image_demo.py)')
    parser.add_argument('--compare', action='store_true',
                        help='also write the single resized pass and a side-by-side figure')
    parser.add_argument('--compare-width', type=int, default=1600,
                        help='width in px of the --compare figure (at most the image\'s own)')
    parser.add_argument('--compare-crop', type=int, nargs=4, metavar=('X', 'Y', 'W', 'H'),
                        help='draw the --compare figure on this region of the image (pixels)')
    args = parser.parse_args(argv)
    check_options(parser, args)
    try:
        args.config, args.checkpoint = model_and_checkpoint(args.model, args.checkpoint,
                                                            args.weights)
        args.images = checked_images(args.img)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    args.device = args.device or default_device()
    return args


def check_options(parser, args) -> None:
    """The options' values, before anything is read or loaded."""
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if args.patch_size is not None and args.patch_size < 32:
        parser.error(f'--patch-size must be at least 32 px, got {args.patch_size}')
    if not 0 <= args.patch_overlap_ratio < 1:
        parser.error(f'--patch-overlap-ratio must be in [0, 1), got {args.patch_overlap_ratio}')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    if not 0 < args.merge_iou_thr <= 1:
        parser.error(f'--merge-iou-thr must be in (0, 1], got {args.merge_iou_thr}')
    if args.no_slice and (args.full_image_pass or args.compare):
        parser.error('--no-slice runs the resized pass alone: it does not go with '
                     '--full-image-pass or --compare')
    if args.compare_width < 64:
        parser.error(f'--compare-width must be at least 64 px, got {args.compare_width}')
    if args.compare_crop and (min(args.compare_crop[:2]) < 0 or min(args.compare_crop[2:]) < 1):
        parser.error(f'--compare-crop X Y W H: a region inside the image, got {args.compare_crop}')


def checked_images(img: str) -> List[str]:
    """The images of ``img`` (a file or a folder), each decoded once so that a bad one fails
    before the model loads."""
    images = collect_images([img])
    for path in images:
        read_image(path)
    return images


# ------------------------------------------------------------------------------------------
# Detection: SAHI's slices, mmdet's inferencer, mmdet's NMS merging
# ------------------------------------------------------------------------------------------
class SlicedDetector:
    """mmdet's DetInferencer (RAVLT's weights loading) run on overlapping patches."""

    def __init__(self, config: str, checkpoint: str, device: str, patch_size: int = 640,
                 overlap: float = 0.25, batch_size: int = 1, merge_iou_thr: float = 0.25,
                 merge_nms_type: str = 'nms'):
        self.inferencer = det_inferencer(config, checkpoint, device)
        self.patch_size, self.overlap, self.batch_size = patch_size, overlap, batch_size
        self.nms_cfg = dict(type=merge_nms_type, iou_threshold=merge_iou_thr)

    def predict(self, images: Sequence[np.ndarray]) -> list:
        """One DetDataSample per BGR image, masks dropped (a patch's masks are patch-sized:
        the merged result keeps boxes only)."""
        samples = self.inferencer(list(images), batch_size=len(images), return_datasamples=True,
                                  no_save_pred=True)['predictions']
        for sample in samples:
            if 'masks' in sample.pred_instances:
                del sample.pred_instances.masks
        return samples

    def slices(self, img: np.ndarray):
        """SAHI's SliceImageResult: ``images`` (BGR patches) and their ``starting_pixels``."""
        from sahi.slicing import slice_image
        return slice_image(img, slice_height=self.patch_size, slice_width=self.patch_size,
                           overlap_height_ratio=self.overlap, overlap_width_ratio=self.overlap,
                           auto_slice_resolution=False, verbose=False)

    def __call__(self, img: np.ndarray, full_image_pass: bool = False):
        """The merged DetDataSample of a BGR image, and the number of patches."""
        from mmdet.utils.large_image import merge_results_by_nms
        sliced = self.slices(img)
        patches, offsets = list(sliced.images), [tuple(p) for p in sliced.starting_pixels]
        progress = ProgressBar(len(patches))  # patches done, patches per second, ETA
        results = []
        for start in range(0, len(patches), self.batch_size):
            batch = patches[start:start + self.batch_size]
            results += self.predict(batch)
            progress.update(len(batch))
        sys.stdout.write('\n')
        if full_image_pass:
            results += self.predict([img])
            offsets.append((0, 0))
        merged = merge_results_by_nms(results, offsets, src_image_shape=img.shape[:2],
                                      nms_cfg=self.nms_cfg)
        return merged, len(patches)

    def resized_pass(self, img: np.ndarray):
        """The DetDataSample of one pass over the whole image (resized by the test pipeline)."""
        return self.predict([img])[0]


def instances(sample, classes: Sequence[str], score_thr: float) -> List[dict]:
    """The instances of a DetDataSample with score >= ``score_thr``, as demo/image_demo.py
    writes them (class, score, box x1 y1 x2 y2 in image pixels)."""
    pred = sample.pred_instances
    keep = (pred.scores >= score_thr).nonzero().flatten().tolist()
    return [dict(label=int(pred.labels[i]),
                 class_name=classes[int(pred.labels[i])] if pred.labels[i] < len(classes) else None,
                 score=round(float(pred.scores[i]), 5),
                 bbox=[round(float(v), 2) for v in pred.bboxes[i]]) for i in keep]


def write_json(obj: dict, path: str) -> None:
    dump(obj, path, file_format='json', backend_args=ATOMIC)


def write_image(img_bgr: np.ndarray, path: str) -> None:
    ok, data = cv2.imencode(osp.splitext(path)[1], img_bgr)
    if not ok:
        raise ValueError(f'cannot encode {path}')
    put(data.tobytes(), path, backend_args=ATOMIC)


def write_figure(img_bgr: np.ndarray, path: str) -> None:
    """A PNG with a 256-colour palette: a figure a tenth the size of the full-colour one."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(mmcv.bgr2rgb(img_bgr)).quantize(256).save(buffer, 'PNG', optimize=True)
    put(buffer.getvalue(), path, backend_args=ATOMIC)


def draw(visualizer, img_bgr: np.ndarray, sample, score_thr: float) -> np.ndarray:
    """The image (BGR) with the instances drawn by mmdet's visualizer (which works in RGB)."""
    visualizer.add_datasample('large_image', mmcv.bgr2rgb(img_bgr), sample, draw_gt=False,
                              show=False, pred_score_thr=score_thr)
    return mmcv.rgb2bgr(visualizer.get_image())


def compare_figure(visualizer, img_bgr: np.ndarray, panels: Sequence[Tuple[str, object]],
                   score_thr: float, width: int, crop=None) -> np.ndarray:
    """The panels' results side by side on the image (or its region ``crop``: x, y, w, h)
    scaled to ``width`` px in all (never enlarged), each under its title and its count of
    detections in the whole image; boxes are drawn at a constant line width, so that they stay
    visible at any scale."""
    gap, band = 8, 32
    x, y, w, h = crop or (0, 0, img_bgr.shape[1], img_bgr.shape[0])
    region = img_bgr[y:y + h, x:x + w]
    scale = min(1., (width - gap * (len(panels) - 1)) / len(panels) / region.shape[1])
    small = mmcv.imrescale(region, scale)
    palette = visualizer.dataset_meta.get('palette') or [(220, 20, 60)]
    drawn = []
    for title, sample in panels:
        pred = sample.pred_instances
        pred = pred[pred.scores >= score_thr]
        boxes = pred.bboxes - pred.bboxes.new_tensor([x, y, x, y])
        inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < region.shape[1]) & \
            (boxes[:, 1] < region.shape[0])
        boxes = (boxes[inside] * scale).clamp(min=0)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=small.shape[1] - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=small.shape[0] - 1)
        visualizer.set_image(mmcv.bgr2rgb(small))
        if len(boxes):
            colors = [tuple(palette[int(label) % len(palette)])
                      for label in pred.labels[inside]]
            visualizer.draw_bboxes(boxes, edge_colors=colors, line_widths=2)
        header = np.full((band, small.shape[1], 3), 255, np.uint8)
        cv2.putText(header, f'{title}: {len(pred)} detections', (6, band - 10),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        drawn.append(np.concatenate([header, mmcv.rgb2bgr(visualizer.get_image())]))
    spacer = np.full((drawn[0].shape[0], gap, 3), 255, np.uint8)
    row = [drawn[0]]
    for panel in drawn[1:]:
        row += [spacer, panel]
    return np.concatenate(row, axis=1)


def check_sahi() -> None:
    """Sliced detection needs SAHI's slicing: say how to get it before the model loads."""
    if importlib.util.find_spec('sahi') is None:
        sys.exit('large_image_demo: error: sliced detection needs SAHI: pip install sahi==0.12.8 '
                 '(or pip install -e ".[demo]" in a clone); --no-slice runs without it')


def detect(args) -> None:
    if not args.no_slice:
        check_sahi()
    patch = args.patch_size or DEFAULT_PATCH['det']
    detector = SlicedDetector(args.config, args.checkpoint, args.device, patch,
                              args.patch_overlap_ratio, args.batch_size, args.merge_iou_thr,
                              args.merge_nms_type)
    visualizer = detector.inferencer.visualizer
    classes = list(detector.inferencer.model.dataset_meta.get('classes', []))
    used = set()
    for path in args.images:
        img = read_image(path)
        name = unique_stem(path, used)
        height, width = img.shape[:2]
        if args.compare_crop and not (args.compare_crop[0] < width and
                                      args.compare_crop[1] < height):
            sys.exit(f'large_image_demo: error: --compare-crop {args.compare_crop} starts '
                     f'outside {path} ({width}x{height})')
        base = dict(image=path, height=height, width=width, classes=classes,
                    pred_score_thr=args.score_thr, patches=0)
        print(f'{path}: {width}x{height}', flush=True)
        if args.no_slice:
            result, info = detector.resized_pass(img), base
        else:
            result, patches = detector(img, args.full_image_pass)
            info = dict(base, patches=patches, patch_size=patch,
                        patch_overlap_ratio=args.patch_overlap_ratio,
                        full_image_pass=args.full_image_pass)
        found = instances(result, classes, args.score_thr)
        vis_file = osp.join(args.out_dir, 'vis', name + '.png')
        pred_file = osp.join(args.out_dir, 'preds', name + '.json')
        write_image(draw(visualizer, img, result, args.score_thr), vis_file)
        write_json(dict(info, instances=found), pred_file)
        print(f'{path}: {len(found)} instance(s) with score >= {args.score_thr} from '
              f'{info["patches"] or "no"} patch(es) -> {vis_file}, {pred_file}', flush=True)
        if args.compare:
            resized = detector.resized_pass(img)
            resized_found = instances(resized, classes, args.score_thr)
            write_json(dict(base, instances=resized_found),
                       osp.join(args.out_dir, 'preds', name + '_resized.json'))
            figure = compare_figure(visualizer, img, [('one resized pass', resized),
                                                      (f'{info["patches"]} patches', result)],
                                    args.score_thr, args.compare_width, args.compare_crop)
            compare_file = osp.join(args.out_dir, 'compare', name + '.png')
            write_figure(figure, compare_file)
            print(f'{path}: {len(resized_found)} instance(s) from one resized pass -> '
                  f'{compare_file}', flush=True)


# ------------------------------------------------------------------------------------------
# Segmentation: mmseg's sliding windows through demo/seg_demo.py
# ------------------------------------------------------------------------------------------
def patch_scale_factor(cfg: Config, patch: int) -> Tuple[float, float]:
    """(w, h) factors by which the config's test pipeline resizes a patch x patch image: the
    factors that make a window of the rescaled image see what a patch would."""
    pipeline = cfg.test_dataloader.dataset.pipeline
    resize = next((t for t in pipeline if t['type'].split('.')[-1] == 'Resize'), None)
    if resize is None:
        return 1., 1.
    if resize.get('scale') is None:
        factor = resize.get('scale_factor') or 1.
        return tuple(factor) if isinstance(factor, (tuple, list)) else (factor, factor)
    scale = resize['scale']
    scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
    if resize.get('keep_ratio', False):
        _, factor = mmcv.rescale_size((patch, patch), scale, return_scale=True)
        return factor, factor
    return scale[0] / patch, scale[1] / patch


def slide_windows(cfg: Config, patch: int, overlap: float):
    """(scale factor, crop_size (h, w), stride (h, w)) of seg_demo's sliding windows."""
    fx, fy = patch_scale_factor(cfg, patch)
    crop = (max(1, round(patch * fy)), max(1, round(patch * fx)))
    stride = tuple(max(1, round(c * (1 - overlap))) for c in crop)
    return (fx, fy), crop, stride


def segment(args) -> None:
    patch = args.patch_size or DEFAULT_PATCH['seg']
    factor, crop, stride = slide_windows(Config.fromfile(args.config), patch,
                                         args.patch_overlap_ratio)
    print(f'sliding windows of {patch} px of the image (the model sees {crop[1]}x{crop[0]}, '
          f'stride {stride[1]}x{stride[0]})', flush=True)
    seg_demo.run(args.config, args.checkpoint, args.images, args.out_dir, device=args.device,
                 slide=True, crop_size=crop, stride=stride, scale_factor=factor)


def main(argv=None):
    args = parse_args(argv)
    if is_segmentor(args.config):
        if args.no_slice or args.full_image_pass or args.compare:
            sys.exit('large_image_demo: error: --no-slice, --full-image-pass and --compare are '
                     'options of detectors; segmentors run sliding windows '
                     '(demo/seg_demo.py runs one pass over the resized image)')
        segment(args)
    else:
        detect(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
