"""The project's deploy configs (configs/deploy/) by task: what tools/deployment/deploy.py
exports with and demo/onnx_demo.py runs with. Needs mmengine only."""
import os.path as osp

from ravlt_dense import zoo

DEPLOY_CONFIGS = {
    ('ObjectDetection', False): 'detection_onnxruntime_static.py',
    ('ObjectDetection', True): 'detection_onnxruntime_dynamic.py',
    ('InstanceSegmentation', False): 'instance-seg_onnxruntime_static.py',
    ('InstanceSegmentation', True): 'instance-seg_onnxruntime_dynamic.py',
    ('Segmentation', False): 'segmentation_onnxruntime_static.py',
    ('Segmentation', True): 'segmentation_onnxruntime_dynamic.py',
}


# mmdet's query-based mask models: mmdeploy exports them, but their results do not come back
# in a form deploy.py's check can compare with mmdet's, so an exported file is never verified.
UNSUPPORTED_DETECTORS = ('Mask2Former', 'MaskFormer')


def model_task(model_cfg) -> str:
    """'ObjectDetection', 'InstanceSegmentation' or 'Segmentation' for a model config; a
    ValueError for a model the deploy tools do not handle."""
    if model_cfg.get('default_scope', 'mmdet') == 'mmseg':
        return 'Segmentation'
    if model_cfg.model.get('type') in UNSUPPORTED_DETECTORS:
        raise ValueError(
            f"mmdet's {model_cfg.model.type} (COCO instance / panoptic segmentation) is not "
            'supported by the deploy tools: their ONNX Runtime results are not checked against '
            "PyTorch's. Supported: RetinaNet, Mask R-CNN, Cascade Mask R-CNN, DINO, and every "
            "mmseg segmentor (UperNet, Semantic FPN, Mask2Former on ADE20K).")
    roi_head = model_cfg.model.get('roi_head') or {}
    return 'InstanceSegmentation' if roi_head.get('mask_head') else 'ObjectDetection'


def deploy_config_path(model_cfg, dynamic: bool) -> str:
    """The onnxruntime deploy config of configs/deploy/ for ``model_cfg``."""
    return osp.join(zoo.ROOT, 'configs', 'deploy', DEPLOY_CONFIGS[model_task(model_cfg),
                                                                  dynamic])
