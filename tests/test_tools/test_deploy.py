"""tools/deployment/deploy.py: the zoo's detectors and segmentors, DINO and Mask2Former
(ADE20K) among them (RAVLT-T, random weights, tiny images), exported whole through mmdeploy and
checked against PyTorch by the tool itself; UperNet's pooling exact at odd sizes through ONNX;
a doctored file refused with its message; mmdet's Mask2Former refused by name."""
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, load_script

pytest.importorskip('mmdeploy', reason='needs mmdeploy (pip install --no-deps mmdeploy==1.3.1)')
pytest.importorskip('onnxruntime')

deploy = load_script('tools/deployment/deploy.py')

# test images through the zoo configs' own pipelines, resized to at most 96x64 (w x h)
SMALL = ['test_pipeline.1.scale=(96,64)']
RAVLT_T_DET = ['model.backbone.arch=t', 'model.neck.in_channels=[64,128,256,512]']
RAVLT_T_UPERNET = ['model.backbone.arch=t', 'model.decode_head.in_channels=[64,128,256,512]',
                   'model.auxiliary_head.in_channels=256']


def options(pairs):
    """--cfg-options strings -> a dict as mmengine's DictAction makes it."""
    from mmengine.config import DictAction
    parsed = {}
    for pair in pairs:
        key, value = pair.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def random_checkpoint(path, config, cfg_options, adjust=()):
    """Random weights of ``config`` (built as the tool builds it, without init_weights), with
    some parameters scaled: heads at random give every anchor or class a score near the
    others, which makes detections tie; the scaled ones give decisive scores and boxes."""
    from mmengine.config import Config

    from ravlt_dense.models import build_model
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options(cfg_options))
    torch.manual_seed(0)
    model = build_model(cfg)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, op, value in adjust:
            getattr(params[name], op + '_')(value)
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Two images of other sizes and aspect ratios (the second one is resized, not padded)."""
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    paths = []
    for name, (height, width) in (('wide.png', (64, 96)), ('tall.png', (96, 64))):
        cv2.imwrite(str(root / name), rng.integers(0, 255, (height, width, 3), np.uint8))
        paths.append(str(root / name))
    return paths


DETECTORS = {
    'retinanet': ('configs/retinanet/retinanet_ravlt-t_fpn_amp-1x_coco.py', [],
                  [('bbox_head.retina_cls.bias', 'add', -7.)]),
    'maskrcnn': ('configs/mask_rcnn/mask-rcnn_ravlt-t_fpn_amp-1x_coco.py', [],
                 [('roi_head.bbox_head.fc_cls.weight', 'mul', 20.),
                  ('rpn_head.rpn_reg.weight', 'mul', .1),
                  ('roi_head.bbox_head.fc_reg.weight', 'mul', .1)]),
    'cascade': ('configs/cascade_rcnn/cascade-mask-rcnn_ravlt-s_fpn_amp-ms-crop-3x_coco.py',
                RAVLT_T_DET,
                [(f'roi_head.bbox_head.{i}.fc_cls.weight', 'mul', 20.) for i in range(3)]
                + [('rpn_head.rpn_reg.weight', 'mul', .1)]),
    'upernet': ('configs/upernet/upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py',
                RAVLT_T_UPERNET, []),
    'fpn': ('configs/sem_fpn/fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512.py', [], []),
    # DINO picks its 900 queries among the encoder's tokens: the 64x96 image at 171x256 has 940
    'dino': ('configs/dino/dino-4scale_ravlt-s_8xb2-12e_coco.py',
             ['model.backbone.arch=t', 'model.neck.in_channels=[128,256,512]'], []),
    'mask2former': ('configs/mask2former/mask2former_ravlt-t_8xb2-160k_ade20k-512x512.py', [], []),
}
PIPELINE = {'dino': ['test_pipeline.1.scale=(256,256)']}  # others: SMALL
DETECTIONS = {'dino': 300}  # max_per_img; the others' 100
# static or dynamic: each path once; the dynamic ones see both image sizes in one graph
CASES = [('retinanet', False), ('maskrcnn', True), ('cascade', False), ('upernet', True),
         ('fpn', True), ('dino', False), ('mask2former', False)]


@pytest.mark.parametrize('name,dynamic', CASES, ids=[f'{n}-{"dynamic" if d else "static"}'
                                                     for n, d in CASES])
def test_whole_model_matches_pytorch_in_onnxruntime(name, dynamic, images, tmp_path, capsys):
    config, cfg_options, adjust = DETECTORS[name]
    config = str(REPO / config)
    checkpoint = random_checkpoint(tmp_path / 'model.pth', config, cfg_options, adjust)
    argv = [config, checkpoint, *(images if dynamic else images[:1]), '--backend',
            'onnxruntime', '--work-dir', str(tmp_path / 'out'),
            '--cfg-options', *cfg_options, *PIPELINE.get(name, SMALL)]
    argv += ['--dynamic'] if dynamic else []
    assert deploy.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count('onnxruntime matches PyTorch') == (2 if dynamic else 1), out
    assert os.path.isfile(tmp_path / 'out' / 'end2end.onnx')
    if name in ('upernet', 'fpn', 'mask2former'):
        assert 'argmax differs at 0% of pixels' in out, out
    else:
        n = DETECTIONS.get(name, 100)
        assert f'{n} detections (PyTorch) vs {n} (onnxruntime), unmatched 0' in out, out
    if name == 'retinanet':  # the demo draws the file's detections
        demo = load_script('demo/onnx_demo.py')
        demo.main([config, str(tmp_path / 'out' / 'end2end.onnx'), images[0], '--out-dir',
                   str(tmp_path / 'demo'), '--pred-score-thr', '0.2', '--cfg-options', *SMALL])
        assert 'instance(s) with score >= 0.2 -> ' in capsys.readouterr().out
        assert cv2.imread(str(tmp_path / 'demo' / 'vis' / 'wide.png')).shape == (64, 96, 3)


def test_doctored_model_is_refused_and_deleted(images, tmp_path, monkeypatch, capsys):
    """A file whose weights were changed after export (one initializer, by 1%) is no longer
    PyTorch's model: the tool says so, deletes it and returns 1."""
    import onnx
    from onnx import numpy_helper
    export = deploy.export

    def export_then_perturb(*args, **kwargs):
        path = export(*args, **kwargs)
        model = onnx.load(path)
        biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        array = numpy_helper.to_array(biggest) * 1.01
        biggest.CopyFrom(numpy_helper.from_array(array.astype(np.float32), biggest.name))
        onnx.save(model, path)
        return path
    monkeypatch.setattr(deploy, 'export', export_then_perturb)
    config = str(REPO / 'configs/sem_fpn/fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512.py')
    checkpoint = random_checkpoint(tmp_path / 'model.pth', config, [])
    assert deploy.main([config, checkpoint, images[0], '--work-dir', str(tmp_path / 'out'),
                        '--cfg-options', *SMALL]) == 1
    err = capsys.readouterr().err
    assert "REFUSED: onnxruntime's results differ from PyTorch's" in err, err
    assert 'max logit difference' in err and 'was deleted' in err, err
    assert not os.path.exists(tmp_path / 'out' / 'end2end.onnx')


@pytest.mark.parametrize('config', ['mask2former_ravlt-t_8xb2-lsj-50e_coco',
                                    'mask2former_ravlt-s_8xb2-lsj-50e_coco-panoptic'])
def test_mmdets_mask2former_is_refused_by_name(config, images, tmp_path):
    with pytest.raises(SystemExit, match="mmdet's Mask2Former .* is not supported by the deploy "
                       r'tools.*Supported: RetinaNet, .*DINO'):
        deploy.main([config, str(tmp_path / 'none.pth'), images[0]])
    assert not os.path.exists(tmp_path / 'none.pth')


def test_pyramid_pooling_is_exact_at_odd_sizes_through_onnx(tmp_path):
    """UperNet's pooling scales (1, 2, 3, 6) in one dynamic graph, run at sizes that do not
    divide by them (mmdeploy's own rewrite, avg_pool2d with kernel size // out, is exact only
    at multiples of 6 and fails below 6)."""
    import onnxruntime as ort
    from mmdeploy.apis.onnx import export

    import ravlt_dense.deploy.rewriters  # noqa: F401
    from ravlt_dense.deploy.pooling import exact_adaptive_avg_pool2d

    class Pyramid(torch.nn.Module):
        def forward(self, x):
            return tuple(torch.nn.functional.adaptive_avg_pool2d(x, s) for s in (1, 2, 3, 6))

    from mmengine.config import Config
    deploy_cfg = Config.fromfile(str(REPO / 'configs/deploy/segmentation_onnxruntime_dynamic.py'))
    names = ['p1', 'p2', 'p3', 'p6']
    export(Pyramid(), torch.randn(1, 4, 13, 17), str(tmp_path / 'pyramid'),
           backend='onnxruntime', context_info=dict(deploy_cfg=deploy_cfg),
           input_names=['input'], output_names=names, opset_version=17,
           dynamic_axes={'input': {2: 'h', 3: 'w'}})
    session = ort.InferenceSession(str(tmp_path / 'pyramid.onnx'),
                                   providers=['CPUExecutionProvider'])
    for height, width in [(13, 17), (7, 9), (5, 11), (25, 31), (64, 40)]:
        x = torch.randn(1, 4, height, width)
        for scale, got in zip((1, 2, 3, 6), session.run(None, {'input': x.numpy()})):
            expected = torch.nn.functional.adaptive_avg_pool2d(x, scale)
            assert np.abs(got - expected.numpy()).max() < 1e-5, (height, width, scale)
            assert torch.allclose(exact_adaptive_avg_pool2d(x, scale), expected, atol=1e-6)


def test_without_mmdeploy_the_tool_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__('sys').modules, 'mmdeploy', None)  # import fails
    with pytest.raises(SystemExit, match=r'mmdeploy is not installed .*pip install --no-deps '
                       r'mmdeploy==1\.3\.1'):
        deploy.require_mmdeploy()
