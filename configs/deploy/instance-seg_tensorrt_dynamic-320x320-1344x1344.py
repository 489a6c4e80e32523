# TensorRT, fp32, one optimisation profile. Not run on this project's machines (no TensorRT
# there): see docs/deployment.md for the steps.
_base_ = ['./instance-seg_onnxruntime_dynamic.py']
backend_config = dict(
    _delete_=True,
    type='tensorrt',
    common_config=dict(fp16_mode=False, max_workspace_size=1 << 32),
    model_inputs=[dict(input_shapes=dict(input=dict(
        min_shape=[1, 3, 320, 320], opt_shape=[1, 3, 800, 1344], max_shape=[1, 3, 1344, 1344])))])
