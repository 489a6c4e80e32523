# Mask R-CNN, Cascade Mask R-CNN: boxes, labels and the mask head's 28x28 masks per box (pasted
# into the image by the caller, as mmdeploy's End2EndModel does).
_base_ = ['./_base_/onnx_config.py', './_base_/mmdet.py', './_base_/onnxruntime.py']
onnx_config = dict(output_names=['dets', 'labels', 'masks'])
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
