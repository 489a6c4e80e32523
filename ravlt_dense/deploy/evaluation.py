"""Evaluating an exported whole model (end2end.onnx, or end2end.xml for OpenVINO, of
tools/deployment/deploy.py) on a data set with the model config's own evaluator, as mmdeploy's
tools/test.py does (tools/deployment/test_onnx.py).

mmdeploy's End2EndModel runs the graph (and :class:`PyTorchPostProcessing` times each run:
``graph_seconds``); :class:`PyTorchPostProcessing` wraps it so that what
follows the graph is what PyTorch's model does after the same computation:

* detection: boxes clipped to the image before its padding (``img_shape``, as mmdet's box
  coders clip them; the graph knows only its padded input), then mmdeploy's own rescaling and
  mask pasting (the same ``grid_sample`` as mmdet's ``_do_paste_mask``, masks >= 0.5);
* segmentation: mmseg's ``BaseSegmentor.postprocess_result`` on the graph's logits: padding
  removed, flips undone, the logits resized bilinearly to the original image and their argmax
  taken there (mmdeploy's End2EndModel takes the argmax at the input's size and resizes the
  labels with ``nearest``, which changes the label maps and so mIoU wherever the test pipeline
  resizes the image).

The graphs are batch 1: the loader gives one image at a time. A static graph takes one input
size; a data set whose images come out of the pipeline at other sizes needs a ``--dynamic``
export (the model says which size it got and which it takes).
"""
import time
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModel

# the files each backend runs (OpenVINO reads ONNX files too)
MODEL_FILES = {'onnxruntime': ('.onnx', ), 'openvino': ('.xml', '.onnx')}


def _openvino_model(xml_file: str):
    import openvino as ov
    return ov.Core().read_model(xml_file)


def onnx_input_size(model_file: str) -> Optional[Tuple[int, int]]:
    """(height, width) a static graph takes, None for a dynamic one; ``model_file`` is an ONNX
    file or OpenVINO IR (.xml)."""
    if model_file.endswith('.xml'):
        shape = _openvino_model(model_file).inputs[0].get_partial_shape()
        if shape[2].is_dynamic or shape[3].is_dynamic:
            return None
        return shape[2].get_length(), shape[3].get_length()
    import onnx
    dims = onnx.load(model_file, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    if any(not d.HasField('dim_value') for d in dims[2:]):
        return None
    return int(dims[2].dim_value), int(dims[3].dim_value)


def onnx_output_names(model_file: str) -> List[str]:
    """The outputs of an ONNX file or OpenVINO IR (.xml), in order."""
    if model_file.endswith('.xml'):
        return [output.get_any_name() for output in _openvino_model(model_file).outputs]
    import onnx
    return [o.name for o in onnx.load(model_file, load_external_data=False).graph.output]


def check_deploy_config(model_file: str, deploy_cfg) -> None:
    """Raise ValueError when the deploy config does not describe the file: a backend that
    does not run such files, or another task's outputs (a detection config for a Mask R-CNN
    file would drop its masks)."""
    from mmdeploy.utils import get_backend_config, get_onnx_config
    backend = get_backend_config(deploy_cfg).get('type')
    if backend not in MODEL_FILES:
        raise ValueError(f'the deploy config is for {backend}; this tool evaluates onnxruntime '
                         'and openvino models (configs/deploy/*_{onnxruntime,openvino}_*.py)')
    if not model_file.endswith(MODEL_FILES[backend]):
        raise ValueError(f'{model_file} is not a {backend} model (' + ' or '.join(
            MODEL_FILES[backend]) + '): give the deploy config of its backend')
    expected = list(get_onnx_config(deploy_cfg).get('output_names') or [])
    found = onnx_output_names(model_file)
    if expected != found:
        raise ValueError(f'{model_file} has the outputs {found}, the deploy config names '
                         f'{expected}: give the deploy config the file was exported with '
                         '(tools/deployment/deploy.py prints it)')


class PyTorchPostProcessing(BaseModel):
    """An mmdeploy End2EndModel (``backend``) whose results are post-processed as PyTorch's
    model post-processes its own (see the module's docstring). It shares the backend model's
    data preprocessor: the runner's ``test_step`` prepares the batch as the backend model
    would, then :meth:`forward` runs the graph.

    Args:
        backend (BaseBackendModel): ``task_processor.build_backend_model(...)``.
        task (str): 'ObjectDetection', 'InstanceSegmentation' or 'Segmentation'.
        input_size (tuple, optional): (H, W) of a static graph, None for a dynamic one.
        align_corners (bool): The segmentor's ``align_corners`` (its decode head's).
        threshold (float): A one-class segmentor's threshold on the sigmoid.
        with_argmax (bool): The segmentation graph returns labels, not logits: mmdeploy's own
            post-processing then (the labels resized with ``nearest``).
    """

    def __init__(self, backend, task: str, input_size: Optional[Sequence[int]] = None,
                 align_corners: bool = False, threshold: float = 0.3,
                 with_argmax: bool = False):
        super().__init__(data_preprocessor=backend.data_preprocessor)
        self.backend = backend
        self.task = task
        self.input_size = tuple(input_size) if input_size else None
        self.align_corners = align_corners
        self.threshold = threshold
        self.with_argmax = with_argmax
        self.graph_seconds = []  # each image's run of the graph alone (latency)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError(f"an exported model predicts only (mode='predict'), not {mode!r}")
        if inputs.shape[0] != 1:
            raise ValueError(f'the exported graphs take one image at a time; got a batch of '
                             f'{inputs.shape[0]} (test_dataloader.batch_size must be 1)')
        size = tuple(int(s) for s in inputs.shape[2:])
        if self.input_size is not None and size != self.input_size:
            path = data_samples[0].metainfo.get('img_path', 'an image') if data_samples else \
                'an image'
            raise ValueError(f'{path} comes out of the test pipeline at {size[0]}x{size[1]}; '
                             f'the static graph takes {self.input_size[0]}x'
                             f'{self.input_size[1]} only: export it with --dynamic')
        inputs = inputs.contiguous().to(self.backend.device)
        if self.task == 'Segmentation':
            if self.with_argmax:
                return self.backend(inputs, data_samples, mode='predict')
            start = time.perf_counter()
            logits = self.backend.wrapper({self.backend.input_name: inputs})[
                self.backend.output_names[0]]
            self.graph_seconds.append(time.perf_counter() - start)
            return self.segmentation_results(logits, data_samples)
        start = time.perf_counter()
        outputs = self.backend.predict(inputs)
        self.graph_seconds.append(time.perf_counter() - start)
        dets, labels = outputs[:2]
        masks = outputs[2] if len(outputs) > 2 else None
        for i, sample in enumerate(data_samples):
            height, width = sample.metainfo['img_shape'][:2]
            dets[i, :, 0:4:2] = dets[i, :, 0:4:2].clamp(0, width)
            dets[i, :, 1:4:2] = dets[i, :, 1:4:2].clamp(0, height)
        self.backend.postprocessing_results(dets, labels, masks, data_samples)
        return data_samples

    def segmentation_results(self, seg_logits: torch.Tensor, data_samples):
        """mmseg's ``BaseSegmentor.postprocess_result`` (mmseg 1.x), step by step."""
        from mmengine.structures import PixelData
        from mmseg.models.utils import resize
        _, channels, height, width = seg_logits.shape
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            if 'img_padding_size' in meta:
                padding = meta['img_padding_size']
            else:
                padding = meta.get('padding_size', [0] * 4)
            left, right, top, bottom = padding
            logits = seg_logits[i:i + 1, :, top:height - bottom, left:width - right]
            if meta.get('flip', None):
                logits = logits.flip(dims=(3, ) if meta.get('flip_direction') == 'horizontal'
                                     else (2, ))
            logits = resize(logits, size=meta['ori_shape'], mode='bilinear',
                            align_corners=self.align_corners, warning=False).squeeze(0)
            if channels > 1:
                pred = logits.argmax(dim=0, keepdim=True)
            else:
                logits = logits.sigmoid()
                pred = (logits > self.threshold).to(logits)
            sample.set_data(dict(seg_logits=PixelData(data=logits),
                                 pred_sem_seg=PixelData(data=pred)))
        return data_samples
