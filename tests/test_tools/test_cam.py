"""Class activation maps (ravlt_dense.tools.analysis.cam, tools/analysis/cam.py) on the trained
quick-start detector and segmentor: Grad-CAM finds the objects the models found, EigenCAM
covers the image, the command line writes whole overlays, and bad input is named.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ravlt_dense.tools.analysis import cam as C

from conftest import load_script, run_tool

TOOL = 'tools/analysis/cam.py'

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def cam_tool():
    return load_script(TOOL)


def build(tool, trained, task):
    """The inferencer of a trained quick-start model, as the tool builds it."""
    args = tool.parse_args([str(trained.config), str(trained.checkpoint), '--preview-model',
                            '--device', 'cpu'])
    return tool.build_inferencer(tool.load_config(args), task, args.checkpoint, 'cpu')


@pytest.fixture(scope='module')
def detector(cam_tool, quickstart_detector):
    return build(cam_tool, quickstart_detector, 'det')


@pytest.fixture(scope='module')
def segmentor(cam_tool, quickstart_segmentor):
    return build(cam_tool, quickstart_segmentor, 'seg')


def val_images(trained, pattern, count):
    return sorted(Path(trained.data_root).glob(pattern))[:count]


def test_maps_of_a_detection_point_at_its_box(detector, quickstart_detector):
    """HiResCAM (the gradient, position by position) of the top-scoring detection peaks in its
    box; gradient maps are zero at a pyramid level that no RoI of the image is pooled from
    (level 3 takes RoIs of 448 px and more: these images have 128), EigenCAM's are not."""
    model = detector.model
    classes = model.dataset_meta['classes']
    layer, unread = C.default_layer(model), 'neck.fpn_convs.3'
    peaks, concentration = [], []
    for path in val_images(quickstart_detector, 'val/*.png', 8):
        data = C.model_inputs(model, detector.pipeline, str(path))
        result = C.class_activation_maps(model, data, [layer, unread],
                                         choose=lambda s: C.detection_target(s, classes))
        assert result.target.index == int(result.sample.pred_instances.scores.argmax())
        hires = result.maps['hirescam'][layer]
        assert hires.shape == cv2.imread(str(path)).shape[:2]
        peaks.append(C.pointing(hires, result.target)['peak_in_target'])
        box = C.target_region(result.target, hires.shape)
        concentration.append(hires[box].mean() / hires[~box].mean())
        for method in C.METHODS:
            assert result.maps[method][layer].max() == pytest.approx(1)
        assert result.maps['gradcam'][unread].max() == result.maps['hirescam'][unread].max() == 0
        assert result.maps['eigencam'][unread].max() == pytest.approx(1)
    assert sum(peaks) >= 6, peaks
    assert min(concentration) > 1, concentration


def test_gradcam_of_a_class_is_higher_on_its_pixels(segmentor, quickstart_segmentor):
    model = segmentor.model
    classes = list(model.dataset_meta['classes'])
    layer = C.default_layer(model)
    contrasts = []
    for path in val_images(quickstart_segmentor, 'images/validation/*.jpg', 8):
        labels = cv2.imread(str(path).replace('images', 'annotations').replace('.jpg', '.png'),
                            cv2.IMREAD_UNCHANGED)
        data = C.model_inputs(model, segmentor.pipeline, str(path))
        for name in classes:
            truth = labels == classes.index(name) + 1  # stored as class + 1 (0: unlabelled)
            if truth.sum() < 20:
                continue
            result = C.class_activation_maps(
                model, data, [layer], ['gradcam'],
                choose=lambda s, name=name: C.segmentation_target(s, classes, name))
            if result is None:  # the class is not predicted on this image
                continue
            cam = result.maps['gradcam'][layer]
            assert cam.shape == labels.shape
            contrasts.append(cam[truth].mean() - cam[~truth].mean())
    # a model trained for 120 iterations: a class it barely predicts may miss
    assert len(contrasts) >= 8
    assert sum(c > 0 for c in contrasts) >= 0.75 * len(contrasts), contrasts
    assert np.mean(contrasts) > 0.1, contrasts


def check_outputs(out, count, maps_per_image):
    """cam.json lists ``count`` images with their maps; every map is an image of its input's
    size; nothing else is in ``out`` (no temporary files)."""
    summary = json.loads((out / 'cam.json').read_text())
    assert len(summary['images']) == count
    written = []
    for record in summary['images']:
        assert len(record['maps']) == maps_per_image
        height, width = cv2.imread(record['image']).shape[:2]
        for found in record['maps'].values():
            assert cv2.imread(found['file']).shape == (height, width, 3)
            assert 0 <= found['energy_in_target'] <= 1
            written.append(Path(found['file']).name)
    assert sorted(p.name for p in out.iterdir()) == sorted(written + ['cam.json', 'panel.png'])
    return summary


def test_detector_through_the_command_line(quickstart_detector, tmp_path):
    trained, out = quickstart_detector, tmp_path / 'out'
    images = val_images(trained, 'val/*.png', 2)
    proc = run_tool([TOOL, trained.config, trained.checkpoint, *images, '--out-dir', out,
                     '--panel', out / 'panel.png'])
    assert f'[2/2] {images[1]}: detection 0: ' in proc.stdout
    assert 'HiResCAM backbone.layers.1' in proc.stdout  # the pointing table
    summary = check_outputs(out, 2, len(C.METHODS))
    assert summary['layers'] == ['backbone.layers.1']
    assert all(len(r['target']['bbox']) == 4 for r in summary['images'])


def test_segmentor_through_the_command_line(cam_tool, quickstart_segmentor, tmp_path, capsys):
    trained, out = quickstart_segmentor, tmp_path / 'out'
    images = val_images(trained, 'images/validation/*.jpg', 2)
    cam_tool.main([str(a) for a in (
        trained.config, trained.checkpoint, *images, '--out-dir', out, '--panel',
        out / 'panel.png', '--class', 'ground', '--method', 'gradcam', 'eigencam',
        '--target-layers', 'neck.fpn_convs.0', 'backbone.layers.3', '--device', 'cpu')])
    assert f'[2/2] {images[1]}: class ground: ' in capsys.readouterr().out
    summary = check_outputs(out, 2, 4)
    assert {r['target']['class_name'] for r in summary['images']} == {'ground'}


def run_main(tool, argv):
    """The tool's exit message (its parser's errors go to stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(a) for a in argv])
    return exit_info.value.code


def test_layers_that_make_no_map_are_named(cam_tool, quickstart_detector, tmp_path, capsys):
    """A name that is no module lists the valid ones nearby; a module whose output is no map
    (a fully connected layer of the box head) says so; no file is written, nor for a detection
    that no image has; --preview-model lists the names."""
    trained, image = quickstart_detector, val_images(quickstart_detector, 'val/*.png', 1)[0]
    model = [trained.config, trained.checkpoint]
    message = run_main(cam_tool, [*model, image, '--out-dir', tmp_path, '--target-layers',
                                  'backbone.layers.7', '--device', 'cpu'])
    assert "no layer 'backbone.layers.7'" in message
    assert 'backbone.layers has: backbone.layers.0, backbone.layers.1' in message
    assert 'top-level modules: backbone, neck, rpn_head, roi_head\n' in message
    message = run_main(cam_tool, [*model, image, '--out-dir', tmp_path, '--target-layers',
                                  'roi_head.bbox_head.shared_fcs.0', '--device', 'cpu'])
    assert 'roi_head.bbox_head.shared_fcs.0 makes no map: it returns a tensor of shape' in message
    message = run_main(cam_tool, [*model, image, '--out-dir', tmp_path / 'out', '--target-det',
                                  99, '--device', 'cpu'])
    assert message == 'cam: error: no image has a detection 99: nothing written'
    assert not list(tmp_path.iterdir())
    cam_tool.main([str(a) for a in model] + ['--preview-model', '--device', 'cpu'])
    assert 'backbone.layers.1.blocks.0.attn  (RALAttention)' in capsys.readouterr().out


def test_a_class_the_dataset_does_not_have(cam_tool, quickstart_segmentor, tmp_path):
    trained = quickstart_segmentor
    image = val_images(trained, 'images/validation/*.jpg', 1)[0]
    message = run_main(cam_tool, [trained.config, trained.checkpoint, image, '--out-dir',
                                  tmp_path, '--class', 'hexagon', '--device', 'cpu'])
    assert "class 'hexagon' is not one of the model's 5 classes: sky, ground, circle" in message
    assert not list(tmp_path.iterdir())


def test_unknown_model_name_and_missing_images(cam_tool, quickstart_detector, tmp_path, capsys):
    assert run_main(cam_tool, ['mask-rcnn_ravlt-q_fpn_amp-1x_coco', 'x.png']) == 2
    error = capsys.readouterr().err
    assert "Unknown model 'mask-rcnn_ravlt-q_fpn_amp-1x_coco'" in error
    assert 'mask-rcnn_ravlt-s_fpn_amp-1x_coco' in error
    model = [quickstart_detector.config, quickstart_detector.checkpoint]
    missing = tmp_path / 'nowhere.png'
    assert run_main(cam_tool, [*model, missing]) == 2
    assert f'Input image or folder not found: {missing}' in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no image here')
    assert run_main(cam_tool, [*model, tmp_path / 'empty']) == 2
    assert f'in folder {tmp_path / "empty"}' in capsys.readouterr().err


def test_eigencam_puts_the_few_positions_that_stand_out_on_top():
    """Objects (9 of 64 positions) on a background, of equal norms and orthogonal channels
    (as after a layer norm): the map is high on the objects whatever the sign of the
    activations or of the singular vector."""
    torch.manual_seed(0)
    background, thing = torch.eye(16)[0], torch.eye(16)[1]
    objects = torch.zeros(8, 8, dtype=torch.bool)
    objects[:3, :3] = True
    activation = torch.where(objects, thing[:, None, None], background[:, None, None])
    for sign in (1, -1):
        noisy = sign * activation + 0.01 * torch.randn(16, 8, 8)
        cam = C.eigen_cam(noisy)
        assert cam[objects].min() > 0.9 * cam.max() and cam[~objects].max() < 0.1 * cam.max()
