"""Transforms that catch bad segmentation data early, naming the file.

mmseg's own loaders fail far from the cause on bad label maps: an undecodable PNG ends in
``'NoneType' object has no attribute 'squeeze'`` inside ``LoadAnnotations``, and a value that is
no class (say 200 with 150 classes) is not an error at all -- the cross-entropy loss raises a
device-side assert on GPU, and ``IoUMetric`` silently drops it from its histograms.
"""
from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Check that the label map of a sample decodes and holds only class indices or ignore.

    Goes right *before* ``LoadAnnotations`` (it decodes the file itself, so a corrupt PNG is
    reported with its path rather than crashing inside the loader) and checks the values as
    they are stored in the file, so the message shows what the user will find there.

    Valid stored values: ``0..num_classes - 1``, or with ``reduce_zero_label`` ``0..num_classes``
    (0 = unlabelled, class c stored as c + 1), plus ``ignore_index``. Without a
    ``seg_map_path`` (inference on bare images) there is nothing to check and the sample passes.

    Args:
        num_classes (int): Classes the model predicts (``decode_head.num_classes``).
        reduce_zero_label (bool, optional): Storage convention; ``None`` (default) takes the
            dataset's ``reduce_zero_label`` from the sample, as ``LoadAnnotations`` does.
        ignore_index (int): Stored value that marks pixels to ignore. Defaults to 255.
        imdecode_backend (str): mmcv decoding backend. Defaults to 'cv2' (as the loader).
        backend_args (dict, optional): File backend arguments (as the loader).
    """

    def __init__(self,
                 num_classes: int,
                 reduce_zero_label: Optional[bool] = None,
                 ignore_index: int = 255,
                 imdecode_backend: str = 'cv2',
                 backend_args: Optional[dict] = None):
        if num_classes < 1:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args

    def _decode(self, path: str) -> np.ndarray:
        try:
            label = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args),
                                     flag='unchanged', backend=self.imdecode_backend)
        except Exception as err:  # pillow raises, cv2 returns None: report both the same way
            raise ValueError(f'Cannot decode the label map {path}: {err}') from err
        if label is None:
            raise ValueError(f'Cannot decode the label map {path}: the file is corrupt or not '
                             'an image')
        if label.ndim == 3 and label.shape[2] == 1:
            label = label[..., 0]
        if label.ndim != 2:
            raise ValueError(f'Label map {path} has shape {label.shape}: expected a single-channel '
                             'image of class indices (not a colour-coded RGB map)')
        return label

    def transform(self, results: dict) -> dict:
        path = results.get('seg_map_path')
        if path is None:
            return results
        label = self._decode(path)
        reduce_zero_label = results.get('reduce_zero_label', self.reduce_zero_label) or False
        first, last = (1, self.num_classes) if reduce_zero_label else (0, self.num_classes - 1)
        # bincount beats np.unique (a sort) by far on uint8/uint16 maps.
        present = np.flatnonzero(np.bincount(label.ravel().astype(np.int64, copy=False))) \
            if label.min() >= 0 else np.unique(label)
        bad = [int(v) for v in present
               if v != self.ignore_index and not (0 <= v <= last)]
        if bad:
            rule = (f'0 (unlabelled), {first}..{last} (classes, reduce_zero_label=True)'
                    if reduce_zero_label else f'{first}..{last} (classes)')
            shown = ', '.join(map(str, bad[:10])) + (' ...' if len(bad) > 10 else '')
            raise ValueError(
                f'Label map {path} holds values that are no class: {shown}. With num_classes='
                f'{self.num_classes} the stored values must be {rule} or {self.ignore_index} '
                '(ignore). Check the dataset or num_classes in the config.')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'reduce_zero_label={self.reduce_zero_label}, ignore_index={self.ignore_index})')
