"""Drawing and I/O helpers shared by the synthetic shape-dataset generators in tools/data.

Sizes are a side (square images) or (height, width). Images are built as float32 RGB arrays in [0, 255] and only quantised when written. Shapes are
drawn with cv2 (pixel centres at integer coordinates); polygons are written in COCO coordinates
(pixel i spans [i, i + 1]).
"""
import argparse
import colorsys
import glob
import os
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

MIN_SIZE = 32
SPLIT_CODES = {'train': 0, 'val': 1}

# Vertex count and the radii the vertices cycle through, as fractions of the circumradius.
_VERTICES = {
    'circle': (64, (1.0, )),
    'square': (4, (1.0, )),
    'triangle': (3, (1.0, )),
    'star': (10, (1.0, 0.45)),
}
_SHIFT = 4  # fractional bits for cv2.fillPoly: sub-pixel vertex precision, still deterministic


def hw(size) -> Tuple[int, int]:
    """(height, width) of a size given as a side or as (height, width)."""
    if isinstance(size, (tuple, list)):
        height, width = size
        return int(height), int(width)
    return int(size), int(size)


def check_args(size, seed, **counts):
    """Raise ValueError with a readable message for arguments no dataset can be built from."""
    if min(hw(size)) < MIN_SIZE:
        raise ValueError(f'size must be at least {MIN_SIZE}, got {size}')
    if seed < 0:
        raise ValueError(f'seed must be non-negative, got {seed}')
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f'{name} must be at least 1, got {value}')


def parse_args(argv: Optional[Sequence[str]], description: str, out: str,
               **options: tuple) -> argparse.Namespace:
    """The command line of a generator: ``--out --num-train --num-val --shape H W --seed`` and
    its own integer ``options``, checked as :func:`check_args` checks them (argparse reports a
    bad value). ``args.size`` is the side of square images, else (height, width).

    Args:
        argv (Sequence[str], optional): The arguments; None reads ``sys.argv``.
        description (str): What the generator makes (the help's first line).
        out (str): Default output folder.
        **options (tuple): Further options, ``name=(default, help)``: an integer option, or a
            choice among a tuple of strings (the first is the default); ``max_objects`` becomes
            ``--max-objects``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--out', default=out, help='output folder')
    parser.add_argument('--num-train', type=int, default=96, help='training images')
    parser.add_argument('--num-val', type=int, default=24, help='validation images')
    # the tools' --shape (ravlt_dense.tools.cli), without importing the package into a data script
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'), default=[128],
                        help='image height and width (px), e.g. 800 1333, or one size for a '
                        'square image (default: 128)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    for name, (default, help_text) in options.items():
        flag = '--' + name.replace('_', '-')
        if isinstance(default, tuple):
            parser.add_argument(flag, choices=default, default=default[0], help=help_text)
        else:
            parser.add_argument(flag, type=int, default=default, help=help_text)
    args = parser.parse_args(argv)
    if len(args.shape) > 2:
        parser.error(f'--shape takes H W (or one size for a square), got {len(args.shape)} values')
    args.size = args.shape[0] if len(set(args.shape)) == 1 else tuple(args.shape)
    try:
        check_args(args.size, args.seed, num_train=args.num_train, num_val=args.num_val,
                   **{name: getattr(args, name) for name, (default, _) in options.items()
                      if not isinstance(default, tuple)})
    except ValueError as err:
        parser.error(str(err))
    return args


def image_rng(seed, split, index):
    """Random stream of one image.

    Each image gets its own stream, so an image does not change when the number of images, or
    the other split, does.
    """
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def prepare_split_dir(path, suffix):
    """Create ``path`` and delete the numbered files (``000000<suffix>``...) a larger run left there.

    mmseg lists image folders, so stale files would silently enlarge a regenerated dataset.
    """
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, '[0-9]' * 6 + suffix)):
        os.remove(stale)


def random_rgb(rng, sat, val, hue=(0.0, 1.0)):
    """RGB colour (float, 0..255) drawn uniformly in the given HSV ranges (each in 0..1)."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return np.array(rgb, np.float32) * 255


def contrasting_rgb(rng, ref, sat, val, min_dist=80.0, tries=10):
    """Random colour at least ``min_dist`` (RGB distance) from ``ref`` if one turns up in ``tries``.

    Keeps an object visible against what it is painted on without making colour a class cue.
    """
    for _ in range(tries):
        rgb = random_rgb(rng, sat, val)
        if np.linalg.norm(rgb - ref) >= min_dist:
            break
    return rgb


def smooth_noise(rng, size, cells):
    """Value noise in [0, 1]: a ``cells`` x ``cells`` random grid upsampled to ``size``."""
    height, width = hw(size)
    grid = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def textured_background(rng, size, sat=(0.05, 0.45), val=(0.25, 0.9)):
    """Two-colour background blended by smooth noise, a linear gradient or stripes at a random angle."""
    c0, c1 = random_rgb(rng, sat, val), random_rgb(rng, sat, val)
    height, width = hw(size)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    theta = rng.uniform(0, np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    kind = rng.integers(3)
    if kind == 0:
        t = smooth_noise(rng, size, int(rng.integers(3, 9)))
    elif kind == 1:
        t = (proj - proj.min()) / np.ptp(proj)
    else:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 10) * proj + rng.uniform(0, 2 * np.pi))
    # Fine noise over every kind, so no background is flat or perfectly regular.
    t = 0.8 * t + 0.2 * smooth_noise(rng, size, 16)
    return c0 + t[..., None] * (c1 - c0)


def shape_polygon(kind, center, radius, angle):
    """(N, 2) float vertices of shape ``kind`` with circumradius ``radius``, rotated by ``angle``."""
    num, radii = _VERTICES[kind]
    theta = angle + 2 * np.pi * np.arange(num) / num
    r = radius * np.resize(radii, num)
    return np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], axis=1)


def fill_polygon(poly, size):
    """Boolean mask of ``size`` of the pixels whose centres lie inside ``poly``."""
    mask = np.zeros(hw(size), np.uint8)
    pts = np.round(poly * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask.astype(bool)


def random_shape_mask(rng, kind, size, scale=(0.12, 0.45)):
    """Mask of a randomly placed and rotated shape whose diameter is ``scale`` x the image's
    shorter side."""
    height, width = hw(size)
    radius = rng.uniform(*scale) * min(height, width) / 2
    # Centres stay half a radius inside the image: shapes may be clipped by the border, never lost.
    cx, cy = rng.uniform(radius / 2, np.array([width, height]) - 1 - radius / 2)
    poly = shape_polygon(kind, (cx, cy), radius, rng.uniform(0, 2 * np.pi))
    return fill_polygon(poly, size)


def paint(img, mask, rgb, rng):
    """Paint ``rgb`` into ``img`` (in place) where ``mask`` is set, with a random linear shading."""
    ys, xs = np.nonzero(mask)
    gx, gy = rng.uniform(-0.3, 0.3, 2)
    shade = 1 + gx * (xs / mask.shape[1] - 0.5) + gy * (ys / mask.shape[0] - 0.5)
    img[ys, xs] = rgb * shade[:, None].astype(np.float32)


def to_uint8(img, rng, sigma):
    """Quantise a float image after adding Gaussian pixel noise of std ``sigma``."""
    noisy = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.round(noisy).clip(0, 255).astype(np.uint8)


def has_holes(mask):
    """Whether ``mask`` encloses background (cv2 topology: 8-connected foreground)."""
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0, :, 3] >= 0).any())


def mask_to_polygons(mask):
    """COCO polygons (flat [x0, y0, x1, y1, ...] lists) that rasterise back to exactly ``mask``.

    cv2 contours run through the centres of boundary pixels, so pycocotools fills only some of
    those pixels and none of a 1-px sliver. Tracing a 2x nearest-upsampled copy instead puts each
    vertex a quarter pixel beyond the centre of a boundary pixel: every pixel of ``mask`` lies
    strictly inside the polygons and every other pixel strictly outside. Holes cannot be
    expressed (COCO merges polygons by union): callers keep masks hole-free.
    """
    up = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Upsampled pixel u spans [u / 2, (u + 1) / 2] in COCO coordinates: its centre is (u + 0.5) / 2.
    return [((c.reshape(-1, 2) + 0.5) / 2).ravel().tolist() for c in contours]


def write_image(path, array, params=()):
    """Write an RGB (H, W, 3) or single-channel (H, W) uint8 array; raise if cv2 cannot."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, array, list(params)):
        raise OSError(f'could not write {path}')
