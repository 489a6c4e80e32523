"""Generate a small, deterministic instance-segmentation dataset of shapes in COCO format.

Every image shows 1..max_objects shapes of random size, position, rotation and colour on a
textured background; later shapes occlude earlier ones and the annotations describe the visible
parts only. Written layout (use ``data_prefix=dict(img='train/')`` and ``metainfo=dict(classes=CLASSES)``
in an mmdet config)::

    OUT/train/000000.png ...            OUT/annotations/instances_train.json
    OUT/val/000000.png ...              OUT/annotations/instances_val.json

``--layout coco2017`` writes COCO 2017's names instead (``train2017/``,
``annotations/instances_train2017.json``, ...) and names the four shapes as COCO's categories
1-4 (of COCO's 80, all listed), so that the COCO configs (``data/coco/``) train and evaluate on
the set unchanged, e.g. at
COCO's image size: ``--layout coco2017 --out data/coco --shape 800 1333``.

Usage: python tools/data/make_coco_shapes.py [--out data/coco_shapes] [--num-train 96] ...
"""
import json
import os

import numpy as np

import shapes_common as sc  # this folder is sys.path[0] when run as a script

CLASSES = ('circle', 'square', 'triangle', 'star')
# COCO's 80 categories in mmdet's order (CocoDataset.METAINFO): the coco2017 layout lists them
# all, so that a COCO model's every label has a category in the evaluation; the four shapes are
# the first four.
COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'teddy bear', 'hair drier', 'toothbrush')
# The suffix of the split names and the category names written, by layout.
LAYOUTS = {'shapes': ('', CLASSES), 'coco2017': ('2017', COCO_CLASSES)}
MIN_AREA = 30  # px: smaller visible remnants are not recognisable, so they are not annotated
PLACEMENT_TRIES = 10


def _render(rng, size, max_objects):
    """Return an RGB uint8 image and its instances as (class index, visible mask) pairs."""
    img = sc.textured_background(rng, size)
    labels, masks = [], []
    for _ in range(rng.integers(1, max_objects + 1)):
        label = int(rng.integers(len(CLASSES)))
        for _ in range(PLACEMENT_TRIES):
            mask = sc.random_shape_mask(rng, CLASSES[label], size)
            occluded = [m & ~mask for m in masks]
            # COCO polygons cannot carry holes: a shape may not land inside what is visible of another.
            if not any(sc.has_holes(m) for m in occluded):
                break
        else:
            continue
        rgb = sc.contrasting_rgb(rng, img[mask].mean(axis=0), sat=(0.6, 1.0), val=(0.45, 1.0))
        sc.paint(img, mask, rgb, rng)
        labels.append(label)
        masks = occluded + [mask]
    instances = [(lb, m) for lb, m in zip(labels, masks) if m.sum() >= MIN_AREA]
    return sc.to_uint8(img, rng, sigma=4), instances


def _annotation(mask, label, image_id, ann_id):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=label + 1,
        # Tight box of the mask, as pycocotools.mask.toBbox computes it.
        bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        area=int(mask.sum()),
        iscrowd=0,
        segmentation=sc.mask_to_polygons(mask))


def _make_split(out_dir, split, num, size, seed, max_objects, layout):
    suffix, names = LAYOUTS[layout]
    img_dir = os.path.join(out_dir, split + suffix)
    ann_file = os.path.join(out_dir, 'annotations', f'instances_{split}{suffix}.json')
    sc.prepare_split_dir(img_dir, '.png')
    images, annotations = [], []
    for index in range(num):
        rng = sc.image_rng(seed, split, index)
        img, instances = _render(rng, size, max_objects)
        file_name = f'{index:06d}.png'
        sc.write_image(os.path.join(img_dir, file_name), img)
        image_id = index + 1
        height, width = sc.hw(size)
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        for label, mask in instances:
            annotations.append(_annotation(mask, label, image_id, len(annotations) + 1))
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(names)]
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f,
                  separators=(',', ':'))
    return dict(images=num, instances=len(annotations), img_dir=img_dir, ann_file=ann_file)


def make_coco_shapes(out_dir='data/coco_shapes', num_train=96, num_val=24, size=128, seed=0,
                     max_objects=4, layout='shapes'):
    """Write the dataset to ``out_dir`` and return a summary: per split its counts and paths.

    ``size`` is the side of square images or (height, width); ``layout`` one of LAYOUTS.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'layout must be one of {", ".join(LAYOUTS)}, got {layout!r}')
    sc.check_args(size, seed, num_train=num_train, num_val=num_val, max_objects=max_objects)
    os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
    summary = dict(out_dir=out_dir, classes=LAYOUTS[layout][1])
    for split, num in (('train', num_train), ('val', num_val)):
        info = _make_split(out_dir, split, num, size, seed, max_objects, layout)
        print(f'[coco_shapes] {split}: {info["images"]} images, {info["instances"]} instances '
              f'-> {info["img_dir"]}', flush=True)
        summary[split] = info
    return summary


def main(argv=None):
    args = sc.parse_args(argv, __doc__.split('\n\n')[0], out='data/coco_shapes',
                         max_objects=(4, 'most shapes per image'),
                         layout=(tuple(LAYOUTS), 'folder and file names (and category names)'))
    summary = make_coco_shapes(args.out, args.num_train, args.num_val, args.size, args.seed,
                               args.max_objects, args.layout)
    print(f'[coco_shapes] done: classes {", ".join(summary["classes"][:len(CLASSES)])}')
    for split in ('train', 'val'):
        print(f'  {split}: images {summary[split]["img_dir"]}, annotations {summary[split]["ann_file"]}')


if __name__ == '__main__':
    main()
