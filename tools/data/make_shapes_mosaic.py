"""Paste the images of a generated shapes set onto one large canvas, with its ground truth.

A large image whose objects keep the small size they have in the shapes set (15-60 px), for
the sliced and sliding-window inference of demo/large_image_demo.py: tiles at their native
scale in rows, cycling through the split's images, on a grey canvas of ``--shape H W``.

    python tools/data/make_shapes_mosaic.py data/coco_shapes data/mosaic.png --shape 3000 4000
        -> data/mosaic.png and data/mosaic.json (COCO format: the one image, its boxes and
           polygons; from a set of tools/data/make_coco_shapes.py)
    python tools/data/make_shapes_mosaic.py data/ade_shapes data/mosaic_seg.png --shape 768 1024
        -> data/mosaic_seg.png and data/mosaic_seg_labels.png (from a set of
           tools/data/make_ade_shapes.py: its label values, 0 = unlabelled around the tiles)

The split is ``val`` (``validation`` in the ADE layout) unless ``--split`` says otherwise.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Iterator, List, Tuple

import cv2
import numpy as np

CANVAS_GREY = 114  # the canvas around the tiles: mmdet's padding grey


def tile_origins(canvas_hw: Tuple[int, int], tile_hw: Tuple[int, int]) -> List[Tuple[int, int]]:
    """Top-left (x, y) of every whole tile that fits the canvas, row by row."""
    (height, width), (th, tw) = canvas_hw, tile_hw
    return [(x, y) for y in range(0, height - th + 1, th) for x in range(0, width - tw + 1, tw)]


def checked_origins(canvas_hw, tile_hw) -> List[Tuple[int, int]]:
    """:func:`tile_origins`; ValueError when not one tile fits."""
    origins = tile_origins(canvas_hw, tile_hw)
    if not origins:
        raise ValueError(f'the canvas {canvas_hw[0]}x{canvas_hw[1]} (H x W) is smaller than '
                         f'one image of the set ({tile_hw[0]}x{tile_hw[1]})')
    return origins


def cycle(items: list, count: int) -> Iterator:
    """``count`` items, going round ``items`` as often as needed."""
    return (items[i % len(items)] for i in range(count))


def read_tile(path: str, flag=cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imread(path, flag)
    if img is None:
        raise ValueError(f'cannot read {path}')
    return img


def coco_mosaic(data: str, split: str, shape: Tuple[int, int]) -> Tuple[np.ndarray, dict]:
    """The canvas and its COCO annotations, from a COCO-layout shapes set."""
    ann_file = osp.join(data, 'annotations', f'instances_{split}.json')
    with open(ann_file) as f:
        coco = json.load(f)
    by_image = {img['id']: [] for img in coco['images']}
    for ann in coco['annotations']:
        by_image[ann['image_id']].append(ann)
    first = coco['images'][0]
    origins = checked_origins(shape, (first['height'], first['width']))
    canvas = np.full((*shape, 3), CANVAS_GREY, np.uint8)
    annotations = []
    for (x, y), image in zip(origins, cycle(coco['images'], len(origins))):
        tile = read_tile(osp.join(data, split, image['file_name']))
        canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        for ann in by_image[image['id']]:
            bx, by, bw, bh = ann['bbox']
            polygons = [[v + (x if i % 2 == 0 else y) for i, v in enumerate(poly)]
                        for poly in ann['segmentation']]
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=1,
                                    bbox=[bx + x, by + y, bw, bh], segmentation=polygons))
    return canvas, dict(images=[], annotations=annotations, categories=coco['categories'])


def ade_mosaic(data: str, split: str, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The canvas and its label map (0, unlabelled, around the tiles), from an ADE-layout
    shapes set."""
    img_dir, ann_dir = osp.join(data, 'images', split), osp.join(data, 'annotations', split)
    names = sorted(osp.splitext(n)[0] for n in os.listdir(img_dir))
    if not names:
        raise ValueError(f'no images in {img_dir}')
    first = read_tile(osp.join(img_dir, names[0] + '.jpg'))
    origins = checked_origins(shape, first.shape[:2])
    canvas = np.full((*shape, 3), CANVAS_GREY, np.uint8)
    labels = np.zeros(shape, np.uint8)
    for (x, y), name in zip(origins, cycle(names, len(origins))):
        tile = read_tile(osp.join(img_dir, name + '.jpg'))
        label = read_tile(osp.join(ann_dir, name + '.png'), cv2.IMREAD_UNCHANGED)
        th, tw = tile.shape[:2]
        canvas[y:y + th, x:x + tw] = tile
        labels[y:y + th, x:x + tw] = label
    return canvas, labels


def write_atomically(path: str, write) -> None:
    """``write(tmp)`` into a temporary name beside ``path`` (same extension), then rename."""
    folder, name = osp.split(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = osp.splitext(name)
    tmp = osp.join(folder, f'.{stem}.tmp{os.getpid()}{ext}')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if osp.lexists(tmp):
            os.remove(tmp)


def imwrite(path: str, img: np.ndarray) -> None:
    def write(tmp):
        if not cv2.imwrite(tmp, img):
            raise ValueError(f'cannot write {path} (an image extension such as .png or .jpg?)')
    write_atomically(path, write)


def make_mosaic(data: str, out: str, shape: Tuple[int, int], split: str = None) -> dict:
    """Write the mosaic of the shapes set ``data`` (COCO or ADE layout) to ``out`` and its
    ground truth beside it (``OUT.json``, or ``OUT_labels.png``); return what was written."""
    height, width = shape
    stem = osp.splitext(out)[0]
    if osp.isdir(osp.join(data, 'images')):  # ADE layout
        canvas, labels = ade_mosaic(data, split or 'validation', shape)
        truth = stem + '_labels.png'
        imwrite(out, canvas)
        imwrite(truth, labels)
        return dict(image=out, labels=truth)
    canvas, coco = coco_mosaic(data, split or 'val', shape)
    coco['images'] = [dict(id=1, file_name=osp.basename(out), height=height, width=width)]
    truth = stem + '.json'
    imwrite(out, canvas)
    def write_json(tmp):
        with open(tmp, 'w') as f:
            json.dump(coco, f)
    write_atomically(truth, write_json)
    return dict(image=out, annotations=truth, instances=len(coco['annotations']))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('data', help='a shapes set (tools/data/make_coco_shapes.py or '
                        'make_ade_shapes.py output)')
    parser.add_argument('out', help='the mosaic image to write (.png, .jpg)')
    parser.add_argument('--shape', type=int, nargs=2, default=[3000, 4000], metavar=('H', 'W'),
                        help='canvas height and width (default: 3000 4000)')
    parser.add_argument('--split', help="the set's split (default: val / validation)")
    args = parser.parse_args(argv)
    if not osp.isdir(args.data):
        parser.error(f'shapes set not found: {args.data} (make one with '
                     'tools/data/make_coco_shapes.py or tools/data/make_ade_shapes.py)')
    if min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        written = make_mosaic(args.data, args.out, tuple(args.shape), args.split)
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f'make_shapes_mosaic: error: {err}')
    print(', '.join(f'{k}: {v}' for k, v in written.items()))


if __name__ == '__main__':
    main()
