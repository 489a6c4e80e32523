"""tools/deployment/test_onnx.py: the suite's trained quick-start models, exported whole by
tools/deployment/deploy.py, evaluated on their validation sets by tools/test.py (PyTorch) and by
the tool (onnxruntime): the metrics agree (COCO mAP within 0.001, mIoU within 0.05). Mask R-CNN
(boxes and masks) and Semantic FPN (its test pipeline halves the 128 px images, so the logits
are resized back before the argmax, as mmseg does)."""
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, load_script, metric_values, run_tool

pytest.importorskip('mmdeploy', reason='needs mmdeploy (pip install --no-deps mmdeploy==1.3.1)')
pytest.importorskip('onnxruntime')

deploy = load_script('tools/deployment/deploy.py')
test_onnx = load_script('tools/deployment/test_onnx.py')

pytestmark = pytest.mark.usefixtures('one_thread')

MASKRCNN = str(REPO / 'configs/quickstart/mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes.py')
FPN = str(REPO / 'configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py')
DEPLOY = REPO / 'configs/deploy'


def close(torch_metrics, onnx_metrics, tol):
    assert set(onnx_metrics) == set(torch_metrics), (torch_metrics, onnx_metrics)
    diffs = {k: abs(float(onnx_metrics[k]) - torch_metrics[k]) for k in torch_metrics}
    assert max(diffs.values()) <= tol, (torch_metrics, onnx_metrics)


def test_maskrcnn_onnx_metrics_equal_pytorch(quickstart_detector, tmp_path):
    config, checkpoint = str(quickstart_detector.config), str(quickstart_detector.checkpoint)
    image = str(sorted((quickstart_detector.data_root / 'val').iterdir())[0])
    assert deploy.main([config, checkpoint, image, '--work-dir', str(tmp_path / 'onnx')]) == 0
    proc = run_tool(['tools/test.py', config, checkpoint, '--work-dir', tmp_path / 'test'])
    torch_metrics = metric_values(proc.stdout + proc.stderr)
    assert torch_metrics['coco/bbox_mAP'] > 0.1 and torch_metrics['coco/segm_mAP'] > 0.1, \
        torch_metrics
    onnx_metrics = test_onnx.main([
        str(DEPLOY / 'instance-seg_onnxruntime_static.py'), config, '--model',
        str(tmp_path / 'onnx' / 'end2end.onnx'), '--work-dir', str(tmp_path / 'onnx_test')])
    close(torch_metrics, onnx_metrics, 1e-3)


def test_semantic_fpn_onnx_miou_equals_pytorch(quickstart_segmentor, tmp_path):
    config, checkpoint = str(quickstart_segmentor.config), str(quickstart_segmentor.checkpoint)
    image = str(sorted((quickstart_segmentor.data_root / 'images' / 'validation').iterdir())[0])
    assert deploy.main([config, checkpoint, image, '--work-dir', str(tmp_path / 'onnx')]) == 0
    proc = run_tool(['tools/test.py', config, checkpoint, '--work-dir', tmp_path / 'test'])
    torch_metrics = {k: float(v) for k, v in re.findall(r'\b(aAcc|mIoU|mAcc): ([\d.]+)',
                                                         proc.stdout + proc.stderr)}
    assert torch_metrics['mIoU'] > 20, torch_metrics
    # the file third, without --model, as the tool also takes it
    onnx_metrics = test_onnx.main([
        str(DEPLOY / 'segmentation_onnxruntime_static.py'), config,
        str(tmp_path / 'onnx' / 'end2end.onnx'), '--work-dir', str(tmp_path / 'onnx_test')])
    close(torch_metrics, onnx_metrics, 0.05)


def test_segmentation_post_processing_is_mmseg_s():
    """The logits' post-processing (padding removed, flip undone, bilinear resize to the
    original size, argmax) equals mmseg's BaseSegmentor.postprocess_result."""
    from mmseg.models.segmentors import BaseSegmentor
    from mmseg.structures import SegDataSample

    from ravlt_dense.deploy.evaluation import PyTorchPostProcessing
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 40, 48)
    meta = dict(ori_shape=(77, 90), img_shape=(36, 42), padding_size=[1, 5, 0, 4], flip=True,
                flip_direction='horizontal')
    backend = SimpleNamespace(data_preprocessor=None)
    for align_corners in (False, True):
        ours = PyTorchPostProcessing(backend, 'Segmentation', align_corners=align_corners)
        got = ours.segmentation_results(logits, [SegDataSample(metainfo=meta)])[0]
        segmentor = SimpleNamespace(align_corners=align_corners)
        expected = BaseSegmentor.postprocess_result(segmentor, logits.clone(),
                                                    [SegDataSample(metainfo=meta)])[0]
        assert torch.equal(got.pred_sem_seg.data, expected.pred_sem_seg.data)
        assert torch.equal(got.seg_logits.data, expected.seg_logits.data)


def test_command_line_errors(tmp_path):
    onnx_file = tmp_path / 'end2end.onnx'
    onnx_file.write_bytes(b'')
    deploy_cfg = str(DEPLOY / 'segmentation_onnxruntime_static.py')
    with pytest.raises(SystemExit):
        test_onnx.parse_args([deploy_cfg, FPN])  # no file
    with pytest.raises(SystemExit):
        test_onnx.parse_args([deploy_cfg, FPN, '--model', str(tmp_path / 'missing.onnx')])
    with pytest.raises(SystemExit):
        test_onnx.parse_args([deploy_cfg, FPN, str(onnx_file), '--batch-size', '2'])
    args = test_onnx.parse_args([deploy_cfg, FPN, str(onnx_file)])
    assert args.model == str(onnx_file)
