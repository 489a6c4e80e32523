"""Generate a small, deterministic panoptic dataset of shapes in COCO's panoptic format.

The images and things are those of make_coco_shapes.py (same seed, same images): the four shapes
are thing classes (one segment per visible shape), and everything else is one stuff segment,
``background``. Written layout (COCO panoptic's, with mmdet's CocoPanopticDataset names)::

    OUT/train/000000.png ...                   images
    OUT/annotations/panoptic_train.json        images, segments_info per image, categories
    OUT/annotations/panoptic_train/000000.png  segment ids as RGB (id = R + 256 G + 256^2 B)
    OUT/annotations/instances_train.json       the things as COCO instances (for CocoMetric)
    (and the same for val)

In an mmdet config: ``data_prefix=dict(img='train/', seg='annotations/panoptic_train/')``,
``ann_file='annotations/panoptic_train.json'`` and ``metainfo=dict(classes=CLASSES + STUFF,
thing_classes=CLASSES, stuff_classes=STUFF)``. Loading the PNGs for training
(LoadPanopticAnnotations) and evaluating PQ (CocoPanopticMetric) need ``panopticapi``.

Usage: python tools/data/make_coco_panoptic_shapes.py [--out data/coco_panoptic_shapes] ...
"""
import json
import os

import numpy as np

import make_coco_shapes as mcs  # this folder is sys.path[0] when run as a script
import shapes_common as sc

CLASSES = mcs.CLASSES  # things, category ids 1..4
STUFF = ('background', )  # stuff, category id 5


def id_to_rgb(ids):
    """COCO panoptic's colour encoding of segment ids (panopticapi.utils.id2rgb)."""
    ids = np.asarray(ids, dtype=np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], axis=-1).astype(np.uint8)


def _segment(mask, segment_id, category_id):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(id=segment_id, category_id=category_id, iscrowd=0, area=int(mask.sum()),
                bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1])


def _make_split(out_dir, split, num, size, seed, max_objects):
    img_dir = os.path.join(out_dir, split)
    seg_dir = os.path.join(out_dir, 'annotations', f'panoptic_{split}')
    sc.prepare_split_dir(img_dir, '.png')
    sc.prepare_split_dir(seg_dir, '.png')
    images, panoptic, instances = [], [], []
    for index in range(num):
        rng = sc.image_rng(seed, split, index)
        img, things = mcs._render(rng, size, max_objects)
        file_name = f'{index:06d}.png'
        sc.write_image(os.path.join(img_dir, file_name), img)
        image_id = index + 1
        height, width = sc.hw(size)
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        ids = np.zeros((height, width), dtype=np.uint32)  # 0: unlabelled (none is left)
        segments = []
        for label, mask in things:
            segment_id = len(segments) + 1
            ids[mask] = segment_id
            segments.append(_segment(mask, segment_id, label + 1))
            instances.append(mcs._annotation(mask, label, image_id, len(instances) + 1))
        background = ids == 0
        if background.any():
            segment_id = len(segments) + 1
            ids[background] = segment_id
            segments.append(_segment(background, segment_id, len(CLASSES) + 1))
        sc.write_image(os.path.join(seg_dir, file_name), id_to_rgb(ids))
        panoptic.append(dict(image_id=image_id, file_name=file_name, segments_info=segments))
    categories = [dict(id=i + 1, name=name, supercategory='shape', isthing=1)
                  for i, name in enumerate(CLASSES)]
    categories += [dict(id=len(CLASSES) + i + 1, name=name, supercategory='stuff', isthing=0)
                   for i, name in enumerate(STUFF)]
    files = {}
    for kind, annotations, cats in (('panoptic', panoptic, categories),
                                    ('instances', instances, categories[:len(CLASSES)])):
        files[kind] = os.path.join(out_dir, 'annotations', f'{kind}_{split}.json')
        with open(files[kind], 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=cats), f,
                      separators=(',', ':'))
    return dict(images=num, things=len(instances), img_dir=img_dir, seg_dir=seg_dir,
                ann_file=files['panoptic'], instances_file=files['instances'])


def make_coco_panoptic_shapes(out_dir='data/coco_panoptic_shapes', num_train=96, num_val=24,
                              size=128, seed=0, max_objects=4):
    """Write the dataset to ``out_dir`` and return a summary: per split its counts and paths."""
    sc.check_args(size, seed, num_train=num_train, num_val=num_val, max_objects=max_objects)
    os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
    summary = dict(out_dir=out_dir, thing_classes=CLASSES, stuff_classes=STUFF)
    for split, num in (('train', num_train), ('val', num_val)):
        info = _make_split(out_dir, split, num, size, seed, max_objects)
        print(f'[coco_panoptic_shapes] {split}: {info["images"]} images, {info["things"]} '
              f'things + background -> {info["img_dir"]}', flush=True)
        summary[split] = info
    return summary


def main(argv=None):
    args = sc.parse_args(argv, __doc__.split('\n\n')[0], out='data/coco_panoptic_shapes',
                         max_objects=(4, 'most shapes per image'))
    make_coco_panoptic_shapes(args.out, args.num_train, args.num_val, args.size, args.seed,
                              args.max_objects)


if __name__ == '__main__':
    main()
