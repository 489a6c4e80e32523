"""Generate a small, deterministic semantic-segmentation dataset in the ADE20K layout.

Each image is a sky over ground, split by a wavy horizon, with 1..4 circles, squares and
triangles of random colour on top. Label PNGs follow ADE20K's reduce-zero-label convention:
0 is "unlabelled" (here the 1-px, blended rim of every shape) and classes are 1..K, so with
``reduce_zero_label=True`` mmseg trains on 0..K-1 and ignores the rim. Written layout::

    OUT/images/training/000000.jpg      OUT/annotations/training/000000.png
    OUT/images/validation/000000.jpg    OUT/annotations/validation/000000.png

Usage: python tools/data/make_ade_shapes.py [--out data/ade_shapes] [--num-train 96] ...
"""
import os

import cv2
import numpy as np

import shapes_common as sc  # this folder is sys.path[0] when run as a script

CLASSES = ('sky', 'ground', 'circle', 'square', 'triangle')  # labels 1..K in the PNGs
PALETTE = ((70, 130, 180), (140, 110, 60), (220, 20, 60), (0, 160, 80), (250, 170, 30))
SHAPE_LABELS = (3, 4, 5)
MAX_SHAPES = 4
SPLIT_DIRS = (('train', 'training'), ('val', 'validation'))


def _horizon(rng, size):
    """Per-column row of the horizon: between about 18% and 72% of the height."""
    height, width = sc.hw(size)
    x = np.arange(width, dtype=np.float32) / width
    level = rng.uniform(0.3, 0.6)
    for _ in range(2):
        level = level + rng.uniform(0, 0.06) * np.sin(2 * np.pi * rng.uniform(0.5, 3) * x
                                                      + rng.uniform(0, 2 * np.pi))
    return level * height


def _sky(rng, size, yy, horizon):
    """Blue gradient, paler towards the horizon, with soft white clouds."""
    top = sc.random_rgb(rng, sat=(0.35, 0.8), val=(0.55, 0.95), hue=(0.55, 0.66))
    low = sc.random_rgb(rng, sat=(0.05, 0.35), val=(0.75, 1.0), hue=(0.5, 0.66))
    t = (yy / horizon[None, :]).clip(0, 1)[..., None]
    sky = top + t * (low - top)
    clouds = (sc.smooth_noise(rng, size, int(rng.integers(4, 9))) - 0.55).clip(0, 0.3) / 0.3
    clouds = (clouds * rng.uniform(0.3, 0.9))[..., None]
    return sky + clouds * (245 - sky)


def _ground(rng, size, yy):
    """Brown-green earth: noisy blend of two colours with horizontal furrows."""
    family = dict(hue=(0.05, 0.35), sat=(0.35, 0.85), val=(0.25, 0.7))
    c0, c1 = sc.random_rgb(rng, **family), sc.random_rgb(rng, **family)
    furrows = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 12) * yy / sc.hw(size)[0]
                                 + rng.uniform(0, 2 * np.pi))
    t = 0.6 * sc.smooth_noise(rng, size, int(rng.integers(6, 13))) + 0.4 * furrows
    return c0 + t[..., None] * (c1 - c0)


def _shape_rim(label):
    """Pixels of a shape class with a 4-neighbour of another label (the image border does not count)."""
    h, w = label.shape
    padded = np.pad(label, 1, mode='edge')
    differs = np.zeros(label.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        differs |= padded[dy:dy + h, dx:dx + w] != label
    return differs & np.isin(label, SHAPE_LABELS)


def _render(rng, size):
    """Return an RGB uint8 image and its uint8 label map (0 = unlabelled, 1..K = CLASSES)."""
    height, width = sc.hw(size)
    yy = np.mgrid[0:height, 0:width][0].astype(np.float32)
    horizon = _horizon(rng, size)
    is_sky = yy < horizon[None, :]
    label = np.where(is_sky, 1, 2).astype(np.uint8)
    img = np.where(is_sky[..., None], _sky(rng, size, yy, horizon), _ground(rng, size, yy))
    for _ in range(rng.integers(1, MAX_SHAPES + 1)):
        cls = int(rng.choice(SHAPE_LABELS))
        mask = sc.random_shape_mask(rng, CLASSES[cls - 1], size)
        rgb = sc.contrasting_rgb(rng, img[mask].mean(axis=0), sat=(0.5, 1.0), val=(0.35, 1.0))
        sc.paint(img, mask, rgb, rng)
        label[mask] = cls
    # The rim is blended like an anti-aliased edge, so label 0 marks genuinely mixed pixels.
    rim = _shape_rim(label)
    img[rim] = cv2.GaussianBlur(img, (3, 3), 0)[rim]
    label[rim] = 0
    return sc.to_uint8(img, rng, sigma=3), label


def _make_split(out_dir, split, folder, num, size, seed):
    img_dir = os.path.join(out_dir, 'images', folder)
    ann_dir = os.path.join(out_dir, 'annotations', folder)
    sc.prepare_split_dir(img_dir, '.jpg')
    sc.prepare_split_dir(ann_dir, '.png')
    pixels = np.zeros(len(CLASSES) + 1, np.int64)
    for index in range(num):
        img, label = _render(sc.image_rng(seed, split, index), size)
        sc.write_image(os.path.join(img_dir, f'{index:06d}.jpg'), img, (cv2.IMWRITE_JPEG_QUALITY, 95))
        sc.write_image(os.path.join(ann_dir, f'{index:06d}.png'), label)
        pixels += np.bincount(label.ravel(), minlength=len(pixels))
    return dict(images=num, img_dir=img_dir, ann_dir=ann_dir,
                ignore_fraction=float(pixels[0] / pixels.sum()),
                class_pixels={name: int(n) for name, n in zip(CLASSES, pixels[1:])})


def make_ade_shapes(out_dir='data/ade_shapes', num_train=96, num_val=24, size=128, seed=0):
    """Write the dataset to ``out_dir`` and return a summary: per split its counts and paths."""
    sc.check_args(size, seed, num_train=num_train, num_val=num_val)
    summary = dict(out_dir=out_dir, classes=CLASSES, palette=PALETTE)
    for (split, folder), num in zip(SPLIT_DIRS, (num_train, num_val)):
        info = _make_split(out_dir, split, folder, num, size, seed)
        print(f'[ade_shapes] {folder}: {num} images, {100 * info["ignore_fraction"]:.1f}% pixels '
              f'unlabelled -> {info["img_dir"]}', flush=True)
        summary[split] = info
    return summary


def main(argv=None):
    args = sc.parse_args(argv, __doc__.split('\n\n')[0], out='data/ade_shapes')
    summary = make_ade_shapes(args.out, args.num_train, args.num_val, args.size, args.seed)
    print(f'[ade_shapes] done: classes (labels 1..{len(CLASSES)}) {", ".join(CLASSES)}')
    for split, _ in SPLIT_DIRS:
        print(f'  {split}: images {summary[split]["img_dir"]}, labels {summary[split]["ann_dir"]}')


if __name__ == '__main__':
    main()
