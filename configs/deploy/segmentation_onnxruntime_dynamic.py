_base_ = ['./segmentation_onnxruntime_static.py']
onnx_config = dict(dynamic_axes=dict(
    input=dict({0: 'batch', 2: 'height', 3: 'width'}),
    output=dict({0: 'batch', 2: 'height', 3: 'width'})))
