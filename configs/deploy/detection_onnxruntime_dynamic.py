_base_ = ['./detection_onnxruntime_static.py']
onnx_config = dict(dynamic_axes=dict(
    input=dict({0: 'batch', 2: 'height', 3: 'width'}),
    dets=dict({0: 'batch', 1: 'num_dets'}),
    labels=dict({0: 'batch', 1: 'num_dets'})))
