"""demo/large_image_demo.py end to end on mosaics of the shapes sets (tiles pasted at their
native scale, tools/data/make_shapes_mosaic.py): sliced detection finds the small objects that
one pass over the resized image misses; sliding-window segmentation gives a full-size label
map that finds the shapes; bad input is refused clearly."""
import json

import cv2
import numpy as np
import pytest

from conftest import load_script, run_tool

pytestmark = pytest.mark.usefixtures('one_thread')

mosaic = load_script('tools/data/make_shapes_mosaic.py')

DET_SHAPE = (384, 640)  # 3 x 5 tiles of 128 px: the resized pass sees them at 1/5
SEG_SHAPE = (256, 384)  # 2 x 3 tiles


def box_iou(a, b) -> float:
    """IoU of two boxes x1, y1, x2, y2."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.


def true_positives(instances, truth, iou_thr=0.5) -> int:
    """Detections matched one to one, by score, to a ground-truth box of their class."""
    free = [(a['category_id'] - 1, [a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                                    a['bbox'][1] + a['bbox'][3]]) for a in truth]
    found = 0
    for inst in sorted(instances, key=lambda i: -i['score']):
        ious = [box_iou(inst['bbox'], box) if label == inst['label'] else 0.
                for label, box in free]
        if ious and max(ious) >= iou_thr:
            free.pop(int(np.argmax(ious)))
            found += 1
    return found


def test_true_positives_count_each_truth_once():
    truth = [dict(category_id=1, bbox=[0, 0, 10, 10])]
    dets = [dict(label=0, score=0.9, bbox=[0, 0, 10, 10]),
            dict(label=0, score=0.8, bbox=[1, 1, 10, 10]),
            dict(label=1, score=0.9, bbox=[0, 0, 10, 10])]
    assert true_positives(dets, truth) == 1
    assert true_positives(dets[2:], truth) == 0


def test_slicing_finds_what_one_resized_pass_misses(quickstart_detector, tmp_path):
    image = tmp_path / 'mosaic.png'
    written = mosaic.make_mosaic(str(quickstart_detector.data_root), str(image), DET_SHAPE)
    truth = json.loads((tmp_path / 'mosaic.json').read_text())['annotations']
    assert written['instances'] == len(truth) > 20
    out = tmp_path / 'out'
    proc = run_tool(['demo/large_image_demo.py', image, quickstart_detector.config,
                     quickstart_detector.checkpoint, '--out-dir', out, '--patch-size', '128',
                     '--patch-overlap-ratio', '0.2', '--batch-size', '4', '--full-image-pass',
                     '--compare', '--compare-crop', '128', '0', '384', '256', '--device', 'cpu'])
    assert 'task/s' in proc.stdout  # the patches' progress bar
    sliced = json.loads((out / 'preds' / 'mosaic.json').read_text())
    resized = json.loads((out / 'preds' / 'mosaic_resized.json').read_text())
    assert (sliced['height'], sliced['width'], sliced['patch_size']) == (*DET_SHAPE, 128)
    assert sliced['full_image_pass'] and 'patch_size' not in resized
    assert sliced['patches'] == 6 * 4  # 6 columns x 4 rows of 128 px, 20% overlap
    # the patches (and the full pass merged with them) against the full pass alone
    found, missed = (true_positives(r['instances'], truth) for r in (sliced, resized))
    assert found > 2 * max(missed, 1) and found >= 0.3 * len(truth), (found, missed, len(truth))
    vis = cv2.imread(str(out / 'vis' / 'mosaic.png'))
    assert vis.shape[:2] == DET_SHAPE and np.any(vis != cv2.imread(str(image)))
    figure = cv2.imread(str(out / 'compare' / 'mosaic.png'))
    assert figure.shape[:2] == (32 + 256, 2 * 384 + 8)  # titles over the crop, side by side
    assert sorted(p.name for p in out.rglob('*') if p.is_file()) == [
        'mosaic.json', 'mosaic.png', 'mosaic.png', 'mosaic_resized.json']  # no temporaries


def test_sliding_windows_segment_a_large_image(quickstart_segmentor, tmp_path):
    """Full-size labels that find the shapes better than one pass over the resized image
    (demo/seg_demo.py without --slide: the config's 64 px scale, the shapes at 1/6)."""
    image = tmp_path / 'mosaic.png'
    mosaic.make_mosaic(str(quickstart_segmentor.data_root), str(image), SEG_SHAPE)
    truth = cv2.imread(str(tmp_path / 'mosaic_labels.png'), cv2.IMREAD_UNCHANGED)
    model = [quickstart_segmentor.config, quickstart_segmentor.checkpoint]
    proc = run_tool(['demo/large_image_demo.py', image, *model, '--out-dir', tmp_path / 'slide',
                     '--patch-size', '128', '--device', 'cpu'])
    assert 'the model sees 64x64, stride 48x48' in proc.stdout  # the config's 128 -> 64 px
    assert 'task/s' in proc.stdout  # the windows' progress bar
    load_script('demo/seg_demo.py').run(*map(str, model), [str(image)], str(tmp_path / 'one'),
                                        device='cpu')
    slide, one = (cv2.imread(str(tmp_path / run / 'pred' / 'mosaic.png'), cv2.IMREAD_UNCHANGED)
                  for run in ('slide', 'one'))
    assert slide.shape == one.shape == SEG_SHAPE
    valid = truth > 0  # 0: unlabelled (the shapes' rims, the grey around the tiles)
    shapes = truth >= 3  # circle, square, triangle
    # the model's classes are the PNG labels - 1 (reduce_zero_label)
    accuracy = {name: (np.mean(label[valid] == truth[valid] - 1),
                       np.mean(label[shapes] == truth[shapes] - 1))
                for name, label in (('slide', slide), ('one', one))}
    assert accuracy['slide'][0] > 0.7, accuracy
    assert accuracy['slide'][1] > 1.5 * accuracy['one'][1], accuracy


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo():
    return load_script('demo/large_image_demo.py')


def refused(demo, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        demo.main([str(a) for a in argv])
    assert exc.value.code not in (0, None)
    code = exc.value.code
    return (code if isinstance(code, str) else '') + capsys.readouterr().err


def test_refuses_bad_input(demo, quickstart_detector, tmp_path, capsys):
    model = [quickstart_detector.config, quickstart_detector.checkpoint]
    out = ['--out-dir', tmp_path / 'out']
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'\x89PNG but not an image')
    assert f'Cannot decode the image {broken}' in refused(demo, [broken, *model, *out], capsys)
    image = tmp_path / 'fine.png'
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    message = refused(demo, [image, 'maskrcnn_ravlt_x_coco', *out], capsys)
    assert "Unknown model 'maskrcnn_ravlt_x_coco'" in message
    message = refused(demo, [image, *model, '--no-slice', '--compare', *out], capsys)
    assert '--no-slice runs the resized pass alone' in message
    message = refused(demo, [image, *model, '--patch-overlap-ratio', '1', *out], capsys)
    assert '--patch-overlap-ratio must be in [0, 1)' in message
    assert not (tmp_path / 'out').exists()
