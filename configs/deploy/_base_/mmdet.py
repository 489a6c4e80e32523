# mmdeploy's detection post-processing. tools/deployment/deploy.py replaces these values with the
# model config's test_cfg (score_thr, nms iou, max_per_img) so that the graph keeps the
# detections PyTorch keeps.
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,  # for YOLO-style heads; unused by RAVLT's
        iou_threshold=0.5,
        max_output_boxes_per_class=1000,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1))
