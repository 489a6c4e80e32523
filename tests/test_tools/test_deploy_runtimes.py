"""Deploying to OpenVINO and int8 (tools/deployment/deploy.py --backend openvino,
--calib-images), and evaluating every kind of exported graph (tools/deployment/test_onnx.py):

* the suite's trained quick-start models deployed to OpenVINO and checked against PyTorch by
  the tool (Mask R-CNN static, Semantic FPN dynamic at two sizes), OpenVINO's COCO metrics equal
  ONNX Runtime's on the same graph, the demo draws the OpenVINO model;
* the Semantic FPN quantized to int8, evaluated beside fp32: both mIoUs reported with the
  latency ratio; calibrated on flat grey images (nothing like the data), int8 loses points and
  --max-drop 0 warns of it;
* a dynamic RetinaNet and a UperNet (random weights) evaluated by test_onnx.py: their metrics
  are PyTorch's;
* bad input: OpenVINO not installed, a head OpenVINO cannot run, a missing or empty
  calibration folder, a calibration that fails half-way (no int8 file is left)."""
import os
import re

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, load_script

pytest.importorskip('mmdeploy', reason='needs mmdeploy (pip install --no-deps mmdeploy==1.3.1)')
pytest.importorskip('onnxruntime')

deploy = load_script('tools/deployment/deploy.py')
test_onnx = load_script('tools/deployment/test_onnx.py')

pytestmark = pytest.mark.usefixtures('one_thread')

DEPLOY = REPO / 'configs/deploy'
FPN = str(REPO / 'configs/sem_fpn/fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512.py')
NO_WORKERS = ['test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']

needs_openvino = pytest.mark.skipif(
    __import__('importlib').util.find_spec('openvino') is None,
    reason='needs OpenVINO (pip install openvino)')


def close(expected, actual, tol):
    assert set(actual) == set(expected), (expected, actual)
    assert max(abs(float(actual[k]) - float(expected[k])) for k in expected) <= tol, \
        (expected, actual)


def leftovers(folder):
    """Files of an interrupted write (temporary names) in ``folder``."""
    return [name for name in os.listdir(folder) if '.part' in name]


@needs_openvino
def test_openvino_maskrcnn_matches_pytorch_and_onnxruntime(quickstart_detector, tmp_path,
                                                           capsys):
    config, checkpoint = str(quickstart_detector.config), str(quickstart_detector.checkpoint)
    image = str(sorted((quickstart_detector.data_root / 'val').iterdir())[0])
    out = tmp_path / 'ov'
    assert deploy.main([config, checkpoint, image, '--backend', 'openvino',
                        '--work-dir', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'OpenVINO matches PyTorch' in text and 'unmatched 0' in text, text
    assert (out / 'end2end.xml').is_file() and (out / 'end2end.bin').is_file()
    # the same graph in both runtimes: the same COCO metrics (8 validation images)
    subset = ['--cfg-options', 'test_dataloader.dataset.indices=8', *NO_WORKERS]
    openvino = test_onnx.main([str(DEPLOY / 'instance-seg_openvino_static.py'), config,
                               '--model', str(out / 'end2end.xml'),
                               '--work-dir', str(tmp_path / 'test_ov'), *subset])
    assert 'end2end.xml in OpenVINO on the test set' in capsys.readouterr().out
    onnxruntime = test_onnx.main([str(DEPLOY / 'instance-seg_onnxruntime_static.py'), config,
                                  '--model', str(out / 'end2end.onnx'),
                                  '--work-dir', str(tmp_path / 'test_ort'), *subset])
    assert onnxruntime['coco/bbox_mAP'] > 0.1 and onnxruntime['coco/segm_mAP'] > 0.1
    close(onnxruntime, openvino, 1e-3)
    demo = load_script('demo/onnx_demo.py')
    demo.main([config, str(out / 'end2end.xml'), image, '--out-dir', str(tmp_path / 'demo')])
    assert 'instance(s) with score >= 0.3 -> ' in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / 'demo' / 'vis' / '000000.png')).shape == (128, 128, 3)


@needs_openvino
def test_openvino_fpn_dynamic_and_int8_beside_fp32(quickstart_segmentor, tmp_path, capsys):
    """OpenVINO runs the dynamic graph at two sizes as PyTorch does; int8 is evaluated beside
    fp32, and its drop (calibrated on flat grey images: ranges unlike the data's) is warned of
    at --max-drop 0."""
    config, checkpoint = str(quickstart_segmentor.config), str(quickstart_segmentor.checkpoint)
    image = str(sorted((quickstart_segmentor.data_root / 'images' / 'validation').iterdir())[0])
    wide = str(tmp_path / 'wide.png')
    cv2.imwrite(wide, cv2.resize(cv2.imread(image), (200, 120)))
    grey = tmp_path / 'grey'
    grey.mkdir()
    for value in (100, 160, 130):
        cv2.imwrite(str(grey / f'{value}.png'), np.full((128, 128, 3), value, np.uint8))
    out = tmp_path / 'ov'
    assert deploy.main([config, checkpoint, image, wide, '--backend', 'openvino', '--dynamic',
                        '--work-dir', str(out), '--calib-images', str(grey),
                        '--calib-num', '2']) == 0
    text = capsys.readouterr().out
    assert text.count('OpenVINO matches PyTorch') == 2, text
    assert text.count('argmax differs at 0% of pixels') == 2, text
    assert 'calibrating int8: image 2/2' in text and 'int8 OpenVINO vs PyTorch' in text, text
    for name in ('end2end.xml', 'end2end.onnx', 'end2end_int8.onnx', 'end2end_int8.xml',
                 'end2end_int8.bin'):
        assert (out / name).is_file(), name
    assert not leftovers(out)

    with pytest.warns(test_onnx.Int8AccuracyWarning,
                      match=r'int8 mIoU [\d.]+ is [\d.]+ points below fp32 mIoU [\d.]+: more '
                      r'than --max-drop 0'):
        result = test_onnx.main([
            str(DEPLOY / 'segmentation_onnxruntime_dynamic.py'), config,
            '--model', str(out / 'end2end.onnx'), '--int8', str(out / 'end2end_int8.onnx'),
            '--max-drop', '0', '--work-dir', str(tmp_path / 'test'),
            '--cfg-options', 'test_dataloader.dataset.indices=8', *NO_WORKERS])
    text = capsys.readouterr().out
    assert 'int8 vs fp32 on the same 8 image(s)' in text, text
    fp32, int8 = result['fp32']['mIoU'], result['int8']['mIoU']
    assert fp32 > 20 and 0 < int8 < fp32 - 1, result
    assert f'mIoU: int8 {int8:.4f}, fp32 {fp32:.4f}' in text, text
    ratio = result['latency']['int8'] / result['latency']['fp32']
    assert f'(int8 / fp32 = {ratio:.2f})' in text, text


def random_checkpoint(path, config, adjust=()):
    """Weights of ``config`` at random, as the tools build it (without init_weights), with
    ``adjust``'s (name, shift) added to parameters."""
    from mmengine.config import Config

    from ravlt_dense.models import build_model
    torch.manual_seed(0)
    model = build_model(Config.fromfile(config))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, shift in adjust:
            params[name].add_(shift)
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


def pytorch_metrics(config, checkpoint, options, work_dir):
    """The metrics tools/test.py prints: mmengine's runner on the config's test set."""
    from mmengine.config import Config, DictAction
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({k: DictAction._parse_iterable(v)
                         for k, v in (o.split('=', 1) for o in options)})
    cfg.work_dir, cfg.load_from = str(work_dir), checkpoint
    cfg.default_hooks.pop('visualization', None)
    return Runner.from_cfg(cfg).test()


def coco_detections(json_file):
    """CocoMetric's result file as {image id: InstanceData (boxes x1y1x2y2, scores, labels)}."""
    import json

    from mmengine.structures import InstanceData
    by_image = {}
    for det in json.load(open(json_file)):
        by_image.setdefault(det['image_id'], []).append(det)
    results = {}
    for image_id, dets in by_image.items():
        boxes = torch.tensor([d['bbox'] for d in dets], dtype=torch.float64)
        boxes[:, 2:] += boxes[:, :2]
        results[image_id] = InstanceData(
            bboxes=boxes, scores=torch.tensor([d['score'] for d in dets]),
            labels=torch.tensor([d['category_id'] for d in dets]))
    return results


@pytest.mark.parametrize('name', ['retinanet-dynamic', 'upernet-static'])
def test_onnx_evaluates_retinanet_dynamic_and_upernet(name, request, tmp_path):
    """test_onnx.py on the graphs it had not evaluated: a dynamic RetinaNet exported at another
    size than its test set's (128x160 vs 128x128), whose detections on the test set are
    PyTorch's runner's (each box, score and label, at the images' own sizes), and a UperNet
    whose mIoU is PyTorch's; random weights on the shapes sets."""
    retinanet = name.startswith('retinanet')
    if retinanet:
        data = request.getfixturevalue('quickstart_detector').data_root
        config = str(REPO / 'configs/quickstart/retinanet_ravlt-t_fpn_1xb4-8e_coco-shapes.py')
        image = str(tmp_path / 'wide.png')
        cv2.imwrite(image, cv2.resize(cv2.imread(str(data / 'val' / '000000.png')), (160, 128)))
        options = [f'test_dataloader.dataset.data_root={data}/',
                   f'test_evaluator.ann_file={data}/annotations/instances_val.json',
                   'model.test_cfg.score_thr=0.0']
        adjust = [('bbox_head.retina_cls.bias', -7.)]  # decisive scores: fewer ties
        deploy_cfg, dynamic = 'detection_onnxruntime_dynamic.py', ['--dynamic']
    else:
        data = request.getfixturevalue('quickstart_segmentor').data_root
        config = str(REPO / 'configs/quickstart/upernet_ravlt-t_1xb8-200it_ade-shapes-64x64.py')
        image = str(sorted((data / 'images' / 'validation').iterdir())[0])
        options = [f'test_dataloader.dataset.data_root={data}/']
        adjust, deploy_cfg, dynamic = [], 'segmentation_onnxruntime_static.py', []
    options += ['test_dataloader.dataset.indices=6', *NO_WORKERS]
    checkpoint = random_checkpoint(tmp_path / 'model.pth', config, adjust)
    assert deploy.main([config, checkpoint, image, *dynamic, '--work-dir', str(tmp_path / 'out'),
                        '--cfg-options', *options]) == 0
    outputs = {side: [f'test_evaluator.outfile_prefix={tmp_path / side}'] if retinanet else []
               for side in ('onnx', 'torch')}
    metrics = test_onnx.main([str(DEPLOY / deploy_cfg), config, '--model',
                              str(tmp_path / 'out' / 'end2end.onnx'), '--work-dir',
                              str(tmp_path / 'test'), '--cfg-options', *options,
                              *outputs['onnx']])
    expected = pytorch_metrics(config, checkpoint, options + outputs['torch'],
                               tmp_path / 'torch')
    if retinanet:
        close(expected, metrics, 1e-3)
        onnx_dets = coco_detections(f'{tmp_path}/onnx.bbox.json')
        torch_dets = coco_detections(f'{tmp_path}/torch.bbox.json')
        assert sorted(onnx_dets) == sorted(torch_dets) and len(torch_dets) == 6
        tol = dict(box=0.05, score=1e-3, mask=0.)
        for image_id, dets in torch_dets.items():
            report = deploy.compare_detections(dets, onnx_dets[image_id], tol)
            assert report['ok'] and report['torch'] == 100, (image_id, report)
    else:
        assert expected['mIoU'] > 0, expected  # random weights, yet classes found
        close(expected, metrics, 0.05)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / 'image.png')
    cv2.imwrite(path, np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8))
    return path


def test_without_openvino_the_tools_name_the_package(monkeypatch, image, tmp_path):
    monkeypatch.setitem(__import__('sys').modules, 'openvino', None)  # import fails
    message = r'the OpenVINO backend needs the package `openvino`.*pip install openvino'
    with pytest.raises(SystemExit, match=message):
        deploy.main([FPN, str(tmp_path / 'none.pth'), image, '--backend', 'openvino',
                     '--work-dir', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()
    model = tmp_path / 'end2end.xml'
    model.write_text('')
    with pytest.raises(SystemExit, match=message):
        test_onnx.main([str(DEPLOY / 'segmentation_openvino_static.py'), FPN, str(model)])


@pytest.mark.parametrize('config,head', [
    ('configs/dino/dino-4scale_ravlt-s_8xb2-12e_coco.py', 'DINO'),
    ('configs/mask2former/mask2former_ravlt-t_8xb2-160k_ade20k-512x512.py', 'Mask2FormerHead')])
def test_openvino_refuses_deformable_attention_by_name(config, head, image, tmp_path):
    """Before any work (the checkpoint is not even looked for): the head, the op, the way out."""
    with pytest.raises(SystemExit, match=rf'{head} does not run in OpenVINO: .*deformable '
                       r'attention exports to mmdeploy.s custom op mmdeploy::grid_sampler.*'
                       r'--backend onnxruntime'):
        deploy.main([str(REPO / config), str(tmp_path / 'none.pth'), image, '--backend',
                     'openvino', '--work-dir', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_calibration_folder_errors(image, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    cases = {str(tmp_path / 'missing'): 'calibration folder not found: .*missing',
             str(tmp_path / 'empty'): r'no images in the calibration folder .*empty \(looked '
                                      r'for \.jpg'}
    for folder, message in cases.items():
        with pytest.raises(SystemExit):
            deploy.parse_args([FPN, 'model.pth', image, '--calib-images', folder])
        assert re.search(message, capsys.readouterr().err), message
    with pytest.raises(SystemExit):
        deploy.parse_args([FPN, 'model.pth', image, '--calib-images', str(tmp_path),
                           '--calib-num', '0'])
    assert '--calib-num must be at least 1' in capsys.readouterr().err


def test_quantization_writes_whole_or_nothing(tmp_path):
    """A small convolutional graph quantized (QDQ: int8 weights); a calibration that fails at
    its second image leaves neither the int8 file nor its temporary."""
    import onnx

    from ravlt_dense.deploy.quantization import ImageCalibrationReader, quantize_int8
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    torch.onnx.export(net, torch.randn(1, 3, 16, 16), str(tmp_path / 'net.onnx'),
                      input_names=['input'], dynamo=False)
    images = ['a.png', 'b.png', 'c.png']

    def prepare(path):
        return torch.randn(1, 3, 16, 16)
    out = tmp_path / 'net_int8.onnx'
    quantize_int8(str(tmp_path / 'net.onnx'), str(out), ImageCalibrationReader(images, prepare))
    graph = onnx.load(str(out)).graph
    assert {'QuantizeLinear', 'DequantizeLinear'} <= {n.op_type for n in graph.node}
    assert {i.data_type for i in graph.initializer} >= {onnx.TensorProto.INT8}
    os.remove(out)

    def failing(path):
        if path == 'b.png':
            raise ValueError('Cannot decode the image b.png')
        return prepare(path)
    with pytest.raises(ValueError, match='b.png'):
        quantize_int8(str(tmp_path / 'net.onnx'), str(out), ImageCalibrationReader(images, failing))
    assert not out.exists() and not leftovers(tmp_path)


@needs_openvino
def test_openvino_conversion_names_custom_ops(tmp_path):
    """A graph with one of mmdeploy's own ops is not converted, and nothing is written."""
    import onnx
    from onnx import TensorProto, helper

    from ravlt_dense.deploy.openvino_backend import onnx_to_openvino
    node = helper.make_node('grid_sampler', ['x', 'g'], ['y'], domain='mmdeploy')
    graph = helper.make_graph(
        [node], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, 4, 4]),
                      helper.make_tensor_value_info('g', TensorProto.FLOAT, [1, 4, 4, 2])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 1, 4, 4])])
    onnx.save(helper.make_model(graph), str(tmp_path / 'm.onnx'))
    with pytest.raises(ValueError, match='ops OpenVINO does not have: mmdeploy::grid_sampler'):
        onnx_to_openvino(str(tmp_path / 'm.onnx'), str(tmp_path / 'm.xml'))
    assert sorted(os.listdir(tmp_path)) == ['m.onnx']
