"""int8 post-training static quantization of an exported graph (end2end.onnx) with ONNX
Runtime's quantizer (``onnxruntime.quantization.quantize_static``, QDQ format), calibrated on
images prepared as the model config's test pipeline and data preprocessor prepare them.

What is quantized: the convolutions and matrix products (``Conv``, ``MatMul``, ``Gemm``: the
backbone, neck and heads), weights int8 per output channel, activations uint8 with ranges
from the calibration images (min-max): ONNX Runtime's choice for x86 CPUs with VNNI. The
post-processing (boxes, NMS, RoI pooling, resizing, masks) stays fp32: 8 bits would move box
coordinates by whole pixels.
"""
import os
import os.path as osp
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

QUANTIZED_OPS = ('Conv', 'MatMul', 'Gemm')


def calibration_images(folder: str, num: int) -> list:
    """The first ``num`` images of ``folder`` (sorted by name, subfolders included); a
    ValueError naming what is wrong when there are none."""
    from ravlt_dense.tools.images import IMG_EXTENSIONS, collect_images
    if not osp.isdir(folder):
        raise ValueError(f'calibration folder not found: {folder} (--calib-images takes a '
                         'folder of images like those the model will see)')
    if num < 1:
        raise ValueError(f'--calib-num must be at least 1, got {num}')
    try:
        images = collect_images([folder], recursive=True)
    except FileNotFoundError:
        raise ValueError(f'no images in the calibration folder {folder} (looked for '
                         f'{", ".join(IMG_EXTENSIONS)}, subfolders included): give '
                         '--calib-images a folder of images like those the model will see')
    return images[:num]


def fit_to(inputs: torch.Tensor, size: Optional[Tuple[int, int]]) -> torch.Tensor:
    """``inputs`` (N, C, H, W) cropped or zero-padded at the bottom and right to ``size``, the
    input size of a static graph (None: as it is). Zero is what the data preprocessors pad
    normalised images with; calibration needs typical activations, not whole images."""
    if size is None:
        return inputs
    height, width = size
    inputs = inputs[..., :height, :width]
    pad_h, pad_w = height - inputs.shape[-2], width - inputs.shape[-1]
    if pad_h or pad_w:
        inputs = torch.nn.functional.pad(inputs, (0, pad_w, 0, pad_h))
    return inputs


class ImageCalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` over image files: each ``get_next`` gives one
    image as the graph takes it (``prepare(path)`` makes the tensor), until None."""

    def __init__(self, images: Sequence[str], prepare: Callable[[str], torch.Tensor],
                 input_name: str = 'input', input_size: Optional[Tuple[int, int]] = None,
                 progress: Optional[Callable[[int, int, str], None]] = None):
        self.images = list(images)
        self.prepare = prepare
        self.input_name = input_name
        self.input_size = input_size
        self.progress = progress
        self.index = 0

    def get_next(self) -> Optional[dict]:
        if self.index >= len(self.images):
            return None
        path = self.images[self.index]
        self.index += 1
        if self.progress:
            self.progress(self.index, len(self.images), path)
        inputs = fit_to(self.prepare(path), self.input_size)
        return {self.input_name: np.ascontiguousarray(inputs.detach().cpu().numpy(),
                                                      dtype=np.float32)}

    def rewind(self) -> None:
        self.index = 0

    def __len__(self) -> int:
        return len(self.images)


def quantize_int8(onnx_file: str, out_file: str, reader: ImageCalibrationReader) -> str:
    """``onnx_file`` quantized to int8 (QDQ) into ``out_file``, calibrated on ``reader``'s
    images. Written under a temporary name and renamed when whole: a failure (an unreadable
    image, a graph the quantizer cannot handle) leaves no ``out_file``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    tmp_file = f'{osp.splitext(out_file)[0]}.part{os.getpid()}.onnx'
    try:
        quantize_static(onnx_file, tmp_file, reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        os.replace(tmp_file, out_file)
    finally:
        if osp.exists(tmp_file):
            os.remove(tmp_file)
    return out_file
