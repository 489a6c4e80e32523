# RetinaNet: boxes and labels at the exported image's size.
_base_ = ['./_base_/onnx_config.py', './_base_/mmdet.py', './_base_/onnxruntime.py']
onnx_config = dict(output_names=['dets', 'labels'])
