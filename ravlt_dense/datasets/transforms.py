"""A segmentation label loader that catches bad label maps early, naming the file.

mmseg's own loader fails far from the cause on bad label maps: an undecodable PNG ends in
``'NoneType' object has no attribute 'squeeze'`` (cv2) or an error without the path (pillow), a
16-bit map is cut to 8 bits, and a value that is no class (say 200 with 150 classes) is not an
error at all -- the cross-entropy loss raises a device-side assert on GPU, and ``IoUMetric``
silently drops it from its histograms.
"""
from typing import Optional

import mmcv
import numpy as np
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadCheckedAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` that checks each label map as it decodes it (once).

    In a pipeline it replaces ``LoadAnnotations``: the same ``gt_seg_map`` (stored values, then
    ``reduce_zero_label`` and the dataset's ``label_map`` applied as mmseg does), but a map that
    does not decode, has more than one channel, holds a value that is no class or has another
    size than its image (as loaded, ``ori_shape``: before any resize) raises a ValueError naming
    the file, and the message shows the values or the sizes.

    Valid stored values: ``0..num_classes - 1``, or with ``reduce_zero_label`` ``0..num_classes``
    (0 = unlabelled, class c stored as c + 1), plus ``ignore_index``. Without a
    ``seg_map_path`` (inference on bare images) there is nothing to load and the sample passes.

    Args:
        num_classes (int): Classes the model predicts (``decode_head.num_classes``).
        ignore_index (int): Stored value that marks pixels to ignore. Defaults to 255.
        reduce_zero_label (bool, optional): Storage convention; ``None`` (default) takes the
            dataset's ``reduce_zero_label`` from the sample, as ``LoadAnnotations`` does.
        backend_args (dict, optional): File backend arguments (as ``LoadAnnotations``).
        imdecode_backend (str): mmcv decoding backend. Defaults to 'pillow' (as
            ``LoadAnnotations``).
    """

    def __init__(self,
                 num_classes: int,
                 ignore_index: int = 255,
                 reduce_zero_label: Optional[bool] = None,
                 backend_args: Optional[dict] = None,
                 imdecode_backend: str = 'pillow'):
        if num_classes < 1:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        super().__init__(reduce_zero_label=reduce_zero_label, backend_args=backend_args,
                         imdecode_backend=imdecode_backend)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

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

    def _check(self, label: np.ndarray, path: str, reduce_zero_label: bool) -> None:
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

    @staticmethod
    def _check_size(label: np.ndarray, results: dict) -> None:
        """The label map must have its image's size: mmseg's transforms scale and crop both by
        the same factors and offsets, and train on labels misaligned with their pixels
        (``ori_shape`` is the image as loaded, whatever the pipeline did to it since)."""
        shape = results.get('ori_shape')
        if shape is None or tuple(label.shape[:2]) == tuple(shape[:2]):
            return
        raise ValueError(
            f'Label map {results["seg_map_path"]} is {label.shape[0]}x{label.shape[1]} (height x '
            f'width) but its image {results.get("img_path", "(unnamed)")} is {shape[0]}x'
            f'{shape[1]}: each label map must have the size of its image, pixel for pixel. '
            'Check that the two files belong together (img_suffix/seg_map_suffix and data_prefix '
            'of the dataset) and that the label map was not resized.')

    def _load_seg_map(self, results: dict) -> None:
        # The method mmcv's LoadAnnotations.transform calls for the label map (mmseg's own
        # loader overrides it the same way); after the check, what mmseg's does with the map.
        path = results.get('seg_map_path')
        if path is None:
            return
        reduce_zero_label = self.reduce_zero_label
        if reduce_zero_label is None:
            reduce_zero_label = results.get('reduce_zero_label', False)
        elif reduce_zero_label != results.get('reduce_zero_label', reduce_zero_label):
            raise ValueError(f'The dataset has reduce_zero_label={results["reduce_zero_label"]}, '
                             f'{self.__class__.__name__} reduce_zero_label={reduce_zero_label}: '
                             'set it on the dataset only')
        label = self._decode(path)
        self._check_size(label, results)
        self._check(label, path, bool(reduce_zero_label))
        label = label.astype(np.uint8)
        if reduce_zero_label:  # 0 (unlabelled) -> 255 (ignored), class c + 1 -> c
            label[label == 0] = 255
            label = label - 1
            label[label == 254] = 255
        if results.get('label_map') is not None:  # the dataset's subset of classes
            original = label.copy()
            for old_id, new_id in results['label_map'].items():
                label[original == old_id] = new_id
        results['gt_seg_map'] = label
        results.setdefault('seg_fields', []).append('gt_seg_map')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, reduce_zero_label={self.reduce_zero_label}, '
                f"imdecode_backend='{self.imdecode_backend}', backend_args={self.backend_args})")


@TRANSFORMS.register_module()
class ImageCorruption(mmcv.transforms.BaseTransform):
    """One corruption of ImageNet-C at one severity, applied to the loaded image (the
    ``imagecorruptions`` package): mmdet's ``Corrupt`` made faithful and repeatable.

    * The package defines the corruptions on RGB images (frost, for one, blends an RGB texture),
      while the loaders give BGR: the image is handed over in RGB and returned in its own order.
    * With a ``seed``, each image's random draws (noise, snow, the glass-blur shuffle...) follow
      from the seed, the corruption, the severity and the image's path: the same damaged image
      whatever the order, the number of loader workers or of processes. Without one they come
      from NumPy's global generator (glass_blur and impulse_noise included, which would
      otherwise draw a seed from the operating system).

    Required keys: img (uint8), img_path (with a seed). Modified keys: img.

    Args:
        corruption (str): A corruption name (``imagecorruptions.get_corruption_names('all')``).
        severity (int): 1 (mild) to 5. Defaults to 1.
        channel_order (str): The order of the loaded image, 'bgr' (mmcv's loaders' default)
            or 'rgb'. Defaults to 'bgr'.
        seed (int, optional): The seed of the draws. Defaults to None.
    """

    def __init__(self, corruption: str, severity: int = 1, channel_order: str = 'bgr',
                 seed: Optional[int] = None):
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        self.corruption = corruption
        self.severity = severity
        self.channel_order = channel_order
        self.seed = seed

    def _corrupt(self, img: np.ndarray) -> np.ndarray:
        import inspect

        from imagecorruptions import corrupt, corruption_dict
        kwargs = {}
        if 'seed' in inspect.signature(corruption_dict[self.corruption]).parameters:
            kwargs['seed'] = int(np.random.randint(2**31 - 1))
        return corrupt(img, corruption_name=self.corruption, severity=self.severity, **kwargs)

    def transform(self, results: dict) -> dict:
        import zlib
        img = results['img'].astype(np.uint8, copy=False)
        swap = self.channel_order == 'bgr' and img.ndim == 3 and img.shape[2] == 3
        img = np.ascontiguousarray(img[..., ::-1] if swap else img)
        if self.seed is None:
            out = self._corrupt(img)
        else:  # the image's own draws, leaving the global generator as it was
            image = results.get('img_path', results.get('sample_idx'))
            key = f'{self.seed}:{self.corruption}:{self.severity}:{image}'
            state = np.random.get_state()
            np.random.seed(zlib.crc32(key.encode()))
            try:
                out = self._corrupt(img)
            finally:
                np.random.set_state(state)
        results['img'] = np.ascontiguousarray(out[..., ::-1]) if swap else out
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(corruption='{self.corruption}', "
                f"severity={self.severity}, channel_order='{self.channel_order}', "
                f'seed={self.seed})')
