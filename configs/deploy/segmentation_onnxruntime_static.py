# UperNet, Semantic FPN: per-class logits at the exported image's size.
_base_ = ['./_base_/onnx_config.py', './_base_/mmseg.py', './_base_/onnxruntime.py']
onnx_config = dict(output_names=['output'])
