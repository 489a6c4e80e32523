"""The project's deploy configs (configs/deploy/) by task and backend: what
tools/deployment/deploy.py exports with and demo/onnx_demo.py runs with. Needs mmengine only."""
import copy
import os.path as osp

from ravlt_dense import zoo

# (task, dynamic) -> the deploy config's name; {backend} is onnxruntime or openvino
DEPLOY_CONFIGS = {
    ('ObjectDetection', False): 'detection_{backend}_static.py',
    ('ObjectDetection', True): 'detection_{backend}_dynamic.py',
    ('InstanceSegmentation', False): 'instance-seg_{backend}_static.py',
    ('InstanceSegmentation', True): 'instance-seg_{backend}_dynamic.py',
    ('Segmentation', False): 'segmentation_{backend}_static.py',
    ('Segmentation', True): 'segmentation_{backend}_dynamic.py',
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


def deploy_config_path(model_cfg, dynamic: bool, backend: str = 'onnxruntime') -> str:
    """The deploy config of configs/deploy/ for ``model_cfg`` and ``backend``."""
    name = DEPLOY_CONFIGS[model_task(model_cfg), dynamic].format(backend=backend)
    return osp.join(zoo.ROOT, 'configs', 'deploy', name)


def graph_config(deploy_cfg):
    """The deploy config the ONNX graph is exported with: ``deploy_cfg`` itself for ONNX
    Runtime; for OpenVINO, which converts that same graph (standard ONNX ops, mmdet's exact
    post-processing), a copy whose backend is onnxruntime, so that the same rewrites apply."""
    if deploy_cfg.backend_config.type == 'onnxruntime':
        return deploy_cfg
    graph_cfg = copy.deepcopy(deploy_cfg)
    graph_cfg.backend_config = dict(type='onnxruntime')
    return graph_cfg
