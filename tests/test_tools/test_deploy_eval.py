"""tools/deployment/test_onnx.py: a quick-start model trained a few dozen iterations on a generated
shapes set, exported whole by tools/deployment/deploy.py, evaluated on the set by tools/test.py
(PyTorch) and by the tool (onnxruntime): the metrics agree (COCO mAP within 0.001, mIoU within
0.05). Mask R-CNN (boxes and masks) and Semantic FPN (its test pipeline halves the 128 px
images, so the logits are resized back before the argmax, as mmseg does)."""
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, load_script, metric_values, run_tool, shapes_options

pytest.importorskip('mmdeploy', reason='needs mmdeploy (pip install --no-deps mmdeploy==1.3.1)')
pytest.importorskip('onnxruntime')

deploy = load_script('tools/deployment/deploy.py')
test_onnx = load_script('tools/deployment/test_onnx.py')

pytestmark = pytest.mark.usefixtures('one_thread')

MASKRCNN = str(REPO / 'configs/quickstart/maskrcnn_ravlt_t_shapes.py')
FPN = str(REPO / 'configs/quickstart/fpn_ravlt_t_shapes.py')
DEPLOY = REPO / 'configs/deploy'


def close(torch_metrics, onnx_metrics, tol):
    assert set(onnx_metrics) == set(torch_metrics), (torch_metrics, onnx_metrics)
    diffs = {k: abs(float(onnx_metrics[k]) - torch_metrics[k]) for k in torch_metrics}
    assert max(diffs.values()) <= tol, (torch_metrics, onnx_metrics)


def test_maskrcnn_onnx_metrics_equal_pytorch(shapes, tmp_path):
    # shapes_options: 64 px images, every detection kept (score_thr 0), batch 2 for PyTorch;
    # test_pipeline (mmdeploy's create_input reads it) at the test loader's scale for the export
    options = shapes_options(shapes) + ['test_pipeline.1.scale=(64,64)']
    run_tool(['tools/train.py', MASKRCNN, '--work-dir', tmp_path / 'train', '--cfg-options',
              *options, 'train_cfg.max_epochs=8', 'train_cfg.val_interval=100',
              'default_hooks.checkpoint.interval=8'])
    checkpoint = str(tmp_path / 'train' / 'epoch_8.pth')
    image = str(sorted((shapes / 'val').iterdir())[0])
    assert deploy.main([MASKRCNN, checkpoint, image, '--work-dir', str(tmp_path / 'onnx'),
                        '--cfg-options', *options]) == 0
    proc = run_tool(['tools/test.py', MASKRCNN, checkpoint, '--work-dir', tmp_path / 'test',
                     '--cfg-options', *options])
    torch_metrics = metric_values(proc.stdout + proc.stderr)
    assert torch_metrics['coco/bbox_mAP'] > 0 and torch_metrics['coco/segm_mAP'] > 0, \
        torch_metrics
    onnx_metrics = test_onnx.main([
        str(DEPLOY / 'instance-seg_onnxruntime_static.py'), MASKRCNN, '--model',
        str(tmp_path / 'onnx' / 'end2end.onnx'), '--work-dir', str(tmp_path / 'onnx_test'),
        '--cfg-options', *options])
    close(torch_metrics, onnx_metrics, 1e-3)


def test_semantic_fpn_onnx_miou_equals_pytorch(ade_gen, tmp_path):
    data = tmp_path / 'ade_shapes'
    ade_gen.make_ade_shapes(str(data), num_train=8, num_val=4, size=128, seed=0)
    options = [f'{loader}.dataset.data_root={data}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    run_tool(['tools/train.py', FPN, '--work-dir', tmp_path / 'train', '--cfg-options', *options,
              'train_dataloader.batch_size=4', 'train_cfg.max_iters=30',
              'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=30',
              'param_scheduler.0.end=5', 'param_scheduler.1.begin=5',
              'param_scheduler.1.end=30'])
    checkpoint = str(tmp_path / 'train' / 'iter_30.pth')
    image = str(sorted((data / 'images' / 'validation').glob('*.jpg'))[0])
    assert deploy.main([FPN, checkpoint, image, '--work-dir', str(tmp_path / 'onnx'),
                        '--cfg-options', *options]) == 0
    proc = run_tool(['tools/test.py', FPN, checkpoint, '--work-dir', tmp_path / 'test',
                     '--cfg-options', *options])
    line = next(ln for ln in (proc.stdout + proc.stderr).splitlines() if '(test)' in ln)
    torch_metrics = {k: float(v) for k, v in re.findall(r'(aAcc|mIoU|mAcc): ([\d.]+)', line)}
    assert torch_metrics['mIoU'] > 0, line
    # the file third, without --model, as the tool also takes it
    onnx_metrics = test_onnx.main([
        str(DEPLOY / 'segmentation_onnxruntime_static.py'), FPN,
        str(tmp_path / 'onnx' / 'end2end.onnx'), '--work-dir', str(tmp_path / 'onnx_test'),
        '--cfg-options', *options])
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
