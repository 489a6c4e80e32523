# TensorRT, fp32, 512x512. Not run on this project's machines (no TensorRT there): see
# docs/deployment.md for the steps.
_base_ = ['./segmentation_onnxruntime_static.py']
onnx_config = dict(input_shape=[512, 512])
backend_config = dict(
    _delete_=True,
    type='tensorrt',
    common_config=dict(fp16_mode=False, max_workspace_size=1 << 32),
    model_inputs=[dict(input_shapes=dict(input=dict(
        min_shape=[1, 3, 512, 512], opt_shape=[1, 3, 512, 512], max_shape=[1, 3, 512, 512])))])
