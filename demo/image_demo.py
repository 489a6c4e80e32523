"""Run a trained detector on images and write visualisations (PNG) and predictions (JSON).

    python demo/image_demo.py CONFIG CHECKPOINT IMAGE_OR_DIR [IMAGE_OR_DIR ...] \
        [--out-dir outputs] [--pred-score-thr 0.3] [--device cpu|cuda:0]
    python demo/image_demo.py ZOO_NAME IMAGE_OR_DIR [...]  # mask-rcnn_ravlt-s_fpn_amp-1x_coco

CHECKPOINT is a file, URL or zoo name, ours or the authors' mmdet 2.x release (converted on load,
by the loader of tools/test.py); a name of the model zoo (configs/metafile.yml) as MODEL brings
its config and the authors' weights (downloaded once into the torch hub cache). Class names come
from the checkpoint, else the config's dataset.

For every image NAME.EXT it writes OUT_DIR/vis/NAME.png (predictions drawn by mmdet's visualizer)
and OUT_DIR/preds/NAME.json (one entry per instance with score >= --pred-score-thr: class, score,
box x1 y1 x2 y2 in pixels of the input image and, for instance segmentation, the mask as COCO
RLE). Inference goes through mmdet's DetInferencer, so the config's test pipeline applies.
"""
import argparse
import json
import os
import os.path as osp
import sys

import cv2

# importing ravlt_dense registers RAVLT and the types found in our checkpoints
from ravlt_dense.checkpoint import find_checkpoint
from ravlt_dense.tools.images import collect_images, read_image, unique_stem
from ravlt_dense.tools.inference import add_model_arguments, default_device, resolve_demo_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_model_arguments(parser, example='configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py')
    parser.add_argument('--out-dir', default='outputs', help='where vis/ and preds/ go')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='keep (draw and save) instances with at least this score')
    parser.add_argument('--device', default=None,
                        help="'cpu' or a GPU such as 'cuda:0' (default: cuda:0 if available)")
    args = parser.parse_args(argv)
    try:
        named, args.inputs = resolve_demo_model(args.model, args.inputs, args.weights)
        args.config, args.checkpoint = named.config, named.weights
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    if find_checkpoint(args.checkpoint) is None:
        parser.error(f'checkpoint not found: {args.checkpoint}')
    args.device = args.device or default_device()
    if not 0 <= args.pred_score_thr <= 1:
        parser.error(f'--pred-score-thr must be in [0, 1], got {args.pred_score_thr}')
    try:
        args.images = checked_images(args.inputs)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    return args


def checked_images(inputs):
    """Files as given, folders expanded to their images; every one decoded once up front, so a
    bad input fails before the model loads and names itself."""
    images = collect_images(inputs)
    for path in images:
        read_image(path)
    return images


def instances_to_json(prediction: dict, classes, score_thr: float) -> list:
    """The DetInferencer's parallel lists -> one dict per instance above the threshold."""
    instances = []
    masks = prediction.get('masks')
    for i, (label, score) in enumerate(zip(prediction['labels'], prediction['scores'])):
        if score < score_thr:
            continue
        inst = dict(label=label, class_name=classes[label] if label < len(classes) else None,
                    score=round(float(score), 5),
                    bbox=[round(float(v), 2) for v in prediction['bboxes'][i]])
        if masks is not None:
            inst['mask'] = masks[i]  # COCO RLE: {'size': [h, w], 'counts': str}
        instances.append(inst)
    return instances


def main(argv=None):
    args = parse_args(argv)
    from ravlt_dense.apis import RAVLTDetInferencer
    inferencer = RAVLTDetInferencer(model=args.config, weights=args.checkpoint, device=args.device,
                            show_progress=False)
    classes = list(inferencer.model.dataset_meta.get('classes', []))
    vis_dir, pred_dir = osp.join(args.out_dir, 'vis'), osp.join(args.out_dir, 'preds')
    os.makedirs(vis_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)
    used = set()
    for path in args.images:
        # File paths (not arrays): the inferencer then reads them itself and draws in RGB.
        result = inferencer(path, return_vis=True, no_save_vis=True, no_save_pred=True,
                            pred_score_thr=args.pred_score_thr)
        name = unique_stem(path, used)
        vis_file = osp.join(vis_dir, name + '.png')
        vis = result['visualization'][0]  # drawn on the image at its own size
        cv2.imwrite(vis_file, vis[:, :, ::-1])
        height, width = vis.shape[:2]
        instances = instances_to_json(result['predictions'][0], classes, args.pred_score_thr)
        pred_file = osp.join(pred_dir, name + '.json')
        with open(pred_file, 'w') as f:
            json.dump(dict(image=path, height=height, width=width, classes=classes,
                           pred_score_thr=args.pred_score_thr, instances=instances), f)
        print(f'{path}: {len(instances)} instance(s) with score >= {args.pred_score_thr} '
              f'-> {vis_file}, {pred_file}', flush=True)


if __name__ == '__main__':
    sys.exit(main())
