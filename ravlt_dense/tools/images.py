"""Image inputs of the demos: files and folders, each checked and named when it is unusable."""
import os
import os.path as osp
from typing import List, Sequence

import mmcv
import numpy as np

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')


def collect_images(inputs: Sequence[str], recursive: bool = False) -> List[str]:
    """Files as given plus the images (by extension, sorted) of each folder; raise if none.

    Args:
        inputs (Sequence[str]): Image files and folders.
        recursive (bool): Also take the images of sub-folders. Defaults to False.
    """
    images = []
    for item in inputs:
        if osp.isdir(item):
            if recursive:
                names = (osp.join(root, f) for root, _, files in os.walk(item) for f in files)
            else:
                names = (osp.join(item, f) for f in os.listdir(item))
            found = sorted(name for name in names if name.lower().endswith(IMG_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f'No images ({", ".join(IMG_EXTENSIONS)}) in folder {item}')
            images += found
        elif osp.isfile(item):
            images.append(item)
        else:
            raise FileNotFoundError(f'Input image or folder not found: {item}')
    return images


def unique_stem(path: str, taken: set) -> str:
    """The file name of ``path`` without its extension, made unique among ``taken`` (which it
    joins): ``a.jpg`` and ``a.png``, or two ``a.jpg`` of different folders, give ``a`` and
    ``a_1``, so that their results do not overwrite each other.

    Args:
        path (str): An input image.
        taken (set): Names already given out in this run; updated.
    """
    stem = osp.splitext(osp.basename(path))[0]
    name, n = stem, 1
    while name in taken:
        name, n = f'{stem}_{n}', n + 1
    taken.add(name)
    return name


def read_image(path: str) -> np.ndarray:
    """BGR uint8 image (the order mm pipelines expect); ValueError naming an unreadable file."""
    try:
        img = mmcv.imread(path, flag='color')
    except Exception as err:
        raise ValueError(f'Cannot decode the image {path}: {err}') from err
    if img is None:  # cv2 returns None for data it cannot decode
        raise ValueError(f'Cannot decode the image {path}: the file is corrupt or not an image')
    return img
