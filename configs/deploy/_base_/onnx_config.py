# The ONNX file every deploy config writes: opset 17 (RAVLT's Tensor.unflatten has no symbolic at
# opset 11, and ONNX's RoiAlign takes `aligned` from opset 16), weights inside the file.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=17,
    save_file='end2end.onnx',
    input_names=['input'],
    input_shape=None,  # the test pipeline's size (static: the exported image's padded size)
    # mmdeploy's graph optimiser needs its TorchScript extension, which its wheel lacks
    optimize=False)
