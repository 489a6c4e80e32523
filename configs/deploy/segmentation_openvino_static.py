# OpenVINO (PyPI openvino 2025+): the graph of segmentation_onnxruntime_static.py (standard ONNX
# ops), converted by openvino.convert_model to end2end.xml / end2end.bin and run by openvino.Core on
# the CPU in fp32 (ravlt_dense/deploy/openvino_backend.py; mmdeploy 1.3.1's own OpenVINO backend
# needs Model Optimizer and the Inference Engine API, both gone from OpenVINO).
_base_ = ['./segmentation_onnxruntime_static.py']
backend_config = dict(type='openvino')
