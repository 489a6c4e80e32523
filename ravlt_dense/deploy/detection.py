"""mmdet's post-processing as mmdet computes it, for onnxruntime graphs (batch 1).

mmdeploy 1.3.1's default rewrites of the detection heads approximate mmdet's post-processing,
and the differences change which detections come out:

* RetinaNet (``BaseDenseHead.predict_by_feat``): mmdet keeps, per level, the ``nms_pre`` best
  (anchor, class) pairs above ``score_thr``; mmdeploy the ``nms_pre`` best anchors with all
  their classes. mmdet then drops boxes of zero width or height (``min_bbox_size``); mmdeploy
  keeps them.
* RPN (``RPNHead.predict_by_feat``): mmdet suppresses within each level (``batched_nms`` with
  the level as the class); mmdeploy across levels; nor does it drop empty boxes.
* R-CNN (``BBoxHead.predict_by_feat``, Mask R-CNN and Cascade's last stage): mmdet gives
  each class its own regressed box; mmdeploy the box of the best class to every class.
* Cascade R-CNN (``CascadeRoIHead.predict_bbox``): mmdeploy's rewrite refines RoIs with
  class-agnostic heads only (an assertion); RAVLT's Cascade heads regress per class. Its
  masks (``predict_mask``): mmdet averages the stages' probabilities, mmdeploy their logits.

These rewrites, registered for onnxruntime (mmdeploy's stay for its other backends), write
mmdet's steps with ONNX ops: top-k, zeroed scores for what mmdet filters out, and one ONNX
``NonMaxSuppression`` over boxes shifted apart per class or level, as mmcv's ``batched_nms``
shifts them. They return what mmdeploy's do, ``(dets, labels)`` with ``dets`` ``(1, K, 5)``
(box, score) sorted by score, so mmdeploy's RoI and mask heads and its End2EndModel take them.
"""
import torch
from mmdeploy.core import FUNCTION_REWRITER
from mmdeploy.mmcv.ops.nms import ONNXNMSop
from mmdet.structures.bbox import get_box_tensor

# no cap per class: what is kept is bounded by max_per_img afterwards, as in mmdet
_MAX_OUTPUT_BOXES = 100000


def _batch_one(tensor: torch.Tensor):
    if tensor.shape[0] != 1:
        raise ValueError('RAVLT\'s onnxruntime graphs take one image (batch 1); '
                         f'got a batch of {tensor.shape[0]}')


def batched_nms_topk(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                     iou_threshold: float, score_threshold: float, keep: int):
    """mmcv's ``batched_nms`` (suppression within each value of ``idxs``) then the ``keep``
    best, as one ONNX NonMaxSuppression: boxes are shifted by ``idx * (max coordinate + 1)``
    so that boxes of different idxs never overlap.

    Args:
        boxes (Tensor): ``(1, K, 4)``.
        scores (Tensor): ``(1, K)``; a score <= ``score_threshold`` is never kept.
        idxs (Tensor): ``(1, K)`` integer class or level of each box.
        iou_threshold (float): IoU above which the lower-scored box is suppressed.
        score_threshold (float): Scores kept are above it.
        keep (int): Most boxes returned (<= 0: all).

    Returns:
        tuple: ``dets`` ``(1, N, 5)`` and ``idxs`` ``(1, N)`` of the kept boxes, best first.
    """
    offsets = idxs.to(boxes.dtype) * (boxes.max() + 1)
    shifted = boxes + offsets.unsqueeze(-1)
    selected = ONNXNMSop.apply(shifted, scores.unsqueeze(1), _MAX_OUTPUT_BOXES,
                               torch.tensor([iou_threshold], dtype=torch.float32),
                               torch.tensor([score_threshold], dtype=torch.float32))
    box_inds = selected[:, 2]
    kept_scores = scores[0, box_inds]
    dets = torch.cat([boxes[0, box_inds], kept_scores.unsqueeze(-1)], -1)
    labels = idxs[0, box_inds]
    # sorted by score (NMS returns its picks best first; the top-k makes the order explicit
    # and bounds the count: mmdeploy's Tensor.topk rewrite caps k at the number kept)
    _, order = kept_scores.topk(keep if keep > 0 else _MAX_OUTPUT_BOXES)
    return dets[order].unsqueeze(0), labels[order].unsqueeze(0)


def _drop_small(boxes: torch.Tensor, scores: torch.Tensor, min_size: float) -> torch.Tensor:
    """Scores of boxes not wider and higher than ``min_size`` set to 0 (mmdet removes them)."""
    if min_size < 0:
        return scores
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    return torch.where((width > min_size) & (height > min_size), scores,
                       scores.new_zeros(()))


def _flat_level(cls_score, bbox_pred, channels, reg_dim):
    scores = cls_score.permute(0, 2, 3, 1).reshape(1, -1, channels)
    deltas = bbox_pred.permute(0, 2, 3, 1).reshape(1, -1, reg_dim)
    return scores, deltas


def _dense_head_inputs(head, cls_scores, batch_img_metas, cfg):
    """(test cfg, image shape, priors of every level) of a dense head's one-image batch."""
    _batch_one(cls_scores[0])
    priors = head.prior_generator.grid_priors(
        [s.shape[-2:] for s in cls_scores], dtype=cls_scores[0].dtype,
        device=cls_scores[0].device)
    return (head.test_cfg if cfg is None else cfg), batch_img_metas[0]['img_shape'], priors


@FUNCTION_REWRITER.register_rewriter(
    func_name='mmdet.models.dense_heads.base_dense_head.BaseDenseHead.predict_by_feat',
    backend='onnxruntime')
def base_dense_head__predict_by_feat__exact(self, cls_scores, bbox_preds, score_factors=None,
                                            batch_img_metas=None, cfg=None, rescale=False,
                                            with_nms=True, **kwargs):
    """RetinaNet's post-processing (mmdet's ``_predict_by_feat_single``; heads with score
    factors or softmax classification are left to mmdeploy's rewrite)."""
    if score_factors is not None or not self.use_sigmoid_cls or not with_nms:
        raise NotImplementedError(
            f'{type(self).__name__}: the exact onnxruntime post-processing covers sigmoid '
            'heads without score factors (RetinaNet); this head needs its own rewrite')
    cfg, img_shape, priors = _dense_head_inputs(self, cls_scores, batch_img_metas, cfg)
    nms_pre = cfg.get('nms_pre', -1)
    num_classes = self.cls_out_channels
    all_boxes, all_scores, all_labels = [], [], []
    for cls_score, bbox_pred, prior in zip(cls_scores, bbox_preds, priors):
        scores, deltas = _flat_level(cls_score, bbox_pred, num_classes,
                                     self.bbox_coder.encode_size)
        scores = scores.sigmoid().reshape(1, -1)  # (anchor, class) pairs
        prior = get_box_tensor(prior)
        if nms_pre > 0:
            scores, pair_inds = scores.topk(nms_pre)
        else:
            pair_inds = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0)
        anchor_inds = torch.div(pair_inds, num_classes, rounding_mode='floor')[0]
        all_labels.append(pair_inds % num_classes)
        all_scores.append(scores)
        all_boxes.append(self.bbox_coder.decode(prior[anchor_inds].unsqueeze(0),
                                                deltas[:, anchor_inds], max_shape=img_shape))
    boxes = get_box_tensor(torch.cat(all_boxes, 1))
    scores = _drop_small(boxes, torch.cat(all_scores, 1), cfg.get('min_bbox_size', -1))
    return batched_nms_topk(boxes, scores, torch.cat(all_labels, 1),
                            cfg.nms.get('iou_threshold', 0.5), cfg.get('score_thr', 0.),
                            cfg.get('max_per_img', -1))


@FUNCTION_REWRITER.register_rewriter(
    func_name='mmdet.models.dense_heads.rpn_head.RPNHead.predict_by_feat',
    backend='onnxruntime')
def rpn_head__predict_by_feat__exact(self, cls_scores, bbox_preds, score_factors=None,
                                     batch_img_metas=None, cfg=None, rescale=False,
                                     with_nms=True, **kwargs):
    """The RPN's proposals (mmdet's ``RPNHead._predict_by_feat_single`` and
    ``_bbox_post_process``): per-level top-k, empty boxes dropped, NMS within each level."""
    cfg, img_shape, priors = _dense_head_inputs(self, cls_scores, batch_img_metas, cfg)
    nms_pre = cfg.get('nms_pre', -1)
    all_boxes, all_scores, all_levels = [], [], []
    for level, (cls_score, bbox_pred, prior) in enumerate(zip(cls_scores, bbox_preds, priors)):
        scores, deltas = _flat_level(cls_score, bbox_pred, self.cls_out_channels,
                                     self.bbox_coder.encode_size)
        if self.use_sigmoid_cls:
            scores = scores.reshape(1, -1).sigmoid()
        else:
            scores = scores.softmax(-1)[..., 0]
        prior = get_box_tensor(prior)
        if nms_pre > 0:
            scores, inds = scores.topk(nms_pre)
            deltas, prior = deltas[:, inds[0]], prior[inds[0]]
        all_levels.append(torch.full_like(scores, level, dtype=torch.long))
        all_scores.append(scores)
        all_boxes.append(self.bbox_coder.decode(prior.unsqueeze(0), deltas,
                                                max_shape=img_shape))
    boxes = get_box_tensor(torch.cat(all_boxes, 1))
    scores = _drop_small(boxes, torch.cat(all_scores, 1), cfg.get('min_bbox_size', -1))
    dets, _ = batched_nms_topk(boxes, scores, torch.cat(all_levels, 1),
                               cfg.nms.get('iou_threshold', 0.7), 0.,
                               cfg.get('max_per_img', -1))
    return dets, dets.new_zeros(dets.shape[:2], dtype=torch.long)


@FUNCTION_REWRITER.register_rewriter(
    func_name='mmdet.models.roi_heads.bbox_heads.bbox_head.BBoxHead.predict_by_feat',
    backend='onnxruntime')
def bbox_head__predict_by_feat__exact(self, rois, cls_scores, bbox_preds, batch_img_metas,
                                      rcnn_test_cfg=None, rescale=False):
    """The R-CNN detections (mmdet's ``BBoxHead._predict_by_feat_single`` with its
    ``multiclass_nms``): every class with its own box, scores above ``score_thr``, NMS within
    each class, the ``max_per_img`` best. ``rois`` ``(1, R, 5)``, ``cls_scores`` ``(1, R,
    C + 1)``, ``bbox_preds`` ``(1, R, 4C)`` (or ``(1, R, 4)`` class-agnostic)."""
    _batch_one(rois)
    if self.custom_cls_channels:
        scores = self.loss_cls.get_activation(cls_scores)
    else:
        scores = torch.softmax(cls_scores, dim=-1)
    img_shape = batch_img_metas[0]['img_shape']
    boxes = get_box_tensor(self.bbox_coder.decode(rois[..., 1:], bbox_preds,
                                                  max_shape=img_shape))
    num_classes = self.num_classes
    scores = scores[..., :num_classes].reshape(1, -1)  # (roi, class) pairs
    num_rois = rois.shape[1]
    if self.reg_class_agnostic:
        boxes = boxes.reshape(1, -1, 1, 4).expand(1, num_rois, num_classes, 4)
    boxes = boxes.reshape(1, -1, 4)
    labels = (torch.arange(num_classes, device=scores.device)
              .unsqueeze(0).expand(num_rois, num_classes).reshape(1, -1))
    return batched_nms_topk(boxes, scores, labels, rcnn_test_cfg.nms.get('iou_threshold', 0.5),
                            rcnn_test_cfg.get('score_thr', 0.),
                            rcnn_test_cfg.get('max_per_img', -1))


@FUNCTION_REWRITER.register_rewriter(
    func_name='mmdet.models.roi_heads.cascade_roi_head.CascadeRoIHead.predict_bbox',
    backend='onnxruntime')
def cascade_roi_head__predict_bbox__exact(self, x, batch_img_metas, rpn_results_list,
                                          rcnn_test_cfg, rescale=False, **kwargs):
    """Cascade R-CNN's stages as mmdet's ``CascadeRoIHead._refine_roi``: each stage but the
    last moves every RoI by the regression of its best class (class-specific or agnostic
    heads; mmdeploy's rewrite takes class-agnostic ones only), the class scores are averaged
    over the stages, the last stage's boxes go to its ``predict_by_feat``."""
    proposals = rpn_results_list[0]  # (1, R, 5) from the RPN's rewrite
    _batch_one(proposals)
    boxes = proposals[0, :, :4]
    rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1)
    max_shape = batch_img_metas[0]['img_shape']
    stage_scores = []
    for stage in range(self.num_stages):
        results = self._bbox_forward(stage, x, rois)
        cls_score, bbox_pred = results['cls_score'], results['bbox_pred']
        stage_scores.append(cls_score)
        if stage < self.num_stages - 1:
            head = self.bbox_head[stage]
            scores = head.loss_cls.get_activation(cls_score) if head.custom_activation \
                else cls_score
            labels = scores[:, :-1].argmax(1)
            reg_dim = head.bbox_coder.encode_size
            if not head.reg_class_agnostic:
                inds = torch.stack([labels * reg_dim + i for i in range(reg_dim)], 1)
                bbox_pred = torch.gather(bbox_pred, 1, inds)
            refined = head.bbox_coder.decode(rois[:, 1:].unsqueeze(0), bbox_pred.unsqueeze(0),
                                             max_shape=max_shape)
            rois = torch.cat([rois[:, :1], get_box_tensor(refined)[0]], 1)
    cls_scores = sum(stage_scores) / float(len(stage_scores))
    return self.bbox_head[-1].predict_by_feat(
        rois=rois.unsqueeze(0), cls_scores=cls_scores.unsqueeze(0),
        bbox_preds=bbox_pred.unsqueeze(0), batch_img_metas=batch_img_metas,
        rcnn_test_cfg=rcnn_test_cfg, rescale=rescale)


@FUNCTION_REWRITER.register_rewriter(
    func_name='mmdet.models.roi_heads.cascade_roi_head.CascadeRoIHead.predict_mask',
    backend='onnxruntime')
def cascade_roi_head__predict_mask__exact(self, x, batch_img_metas, results_list,
                                          rescale=False):
    """Cascade's masks as mmdet merges them: the mean of the stages' *probabilities*
    (mmdeploy's rewrite averages their logits). The mask head's rewrite applies the sigmoid,
    so it gets the mean's logit."""
    dets, labels = results_list
    _batch_one(dets)
    boxes = dets[0, :, :4]
    mask_rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1)
    probs = sum(self._mask_forward(stage, x, mask_rois)['mask_preds'].sigmoid()
                for stage in range(self.num_stages)) / float(self.num_stages)
    logits = torch.log(probs) - torch.log1p(-probs)
    masks = self.mask_head[-1].predict_by_feat(logits, results_list, batch_img_metas,
                                               self.test_cfg, rescale=rescale)
    return dets, labels, masks.reshape(1, boxes.shape[0], masks.shape[-2], masks.shape[-1])
