"""demo/video_demo.py end to end: a short video made from the shapes images through the trained
quick-start detector and segmentor (frame count, size and what is drawn on the frames), and the
inputs it must refuse with a clear message, leaving nothing behind."""
import json

import cv2
import numpy as np
import pytest

from conftest import load_script, run_tool

pytestmark = pytest.mark.usefixtures('one_thread')

FRAMES = 8
FPS = 5


def write_video(path, images, fps=FPS):
    """An mp4 (mp4v) of ``images`` (BGR, all of one size)."""
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    assert writer.isOpened()
    for img in images:
        writer.write(img)
    writer.release()
    return path


def read_video(path):
    """The decoded frames of a video file, and its frame rate."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


@pytest.fixture(scope='module')
def det_video(quickstart_detector, tmp_path_factory):
    """FRAMES val images of the detector's shapes set as a video, with their ground-truth
    boxes (x1, y1, x2, y2) per frame."""
    root = quickstart_detector.data_root
    coco = json.loads((root / 'annotations' / 'instances_val.json').read_text())
    images = coco['images'][:FRAMES]
    boxes = [[[x, y, x + w, y + h] for a in coco['annotations'] if a['image_id'] == img['id']
              for x, y, w, h in [a['bbox']]] for img in images]
    frames = [cv2.imread(str(root / 'val' / img['file_name'])) for img in images]
    path = write_video(tmp_path_factory.mktemp('video') / 'shapes.mp4', frames)
    return path, boxes


def box_band(shape, box, width=3):
    """Mask of a band ``width`` px either side of the border of ``box``."""
    outer = np.zeros(shape, bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    outer[max(0, y1 - width):y2 + width, max(0, x1 - width):x2 + width] = True
    inner = np.zeros(shape, bool)
    inner[y1 + width:max(y1 + width, y2 - width), x1 + width:max(x1 + width, x2 - width)] = True
    return outer & ~inner


def test_detector_video(quickstart_detector, det_video, tmp_path):
    video, boxes = det_video
    out = tmp_path / 'out' / 'det.mp4'
    proc = run_tool(['demo/video_demo.py', video, quickstart_detector.config,
                     quickstart_detector.checkpoint, '--out', out, '--batch-size', '3',
                     '--score-thr', '0.3', '--device', 'cpu'])
    assert f'{out}: {FRAMES} frame(s) of 128x128' in proc.stdout
    assert 'task/s' in proc.stdout  # mmengine's progress bar: frames per second
    assert sorted(p.name for p in out.parent.iterdir()) == ['det.mp4']  # no temporary left
    inputs, _ = read_video(video)
    outputs, fps = read_video(out)
    assert len(outputs) == FRAMES and fps == pytest.approx(FPS)
    assert all(frame.shape == (128, 128, 3) for frame in outputs)
    # Boxes (and masks, labels) are drawn where the shapes are: the frames change along the
    # borders of most ground-truth boxes, and far less away from every object.
    drawn, changes_near, changes_far = 0, [], []
    for before, after, frame_boxes in zip(inputs, outputs, boxes):
        change = np.abs(after.astype(int) - before.astype(int)).max(axis=2)
        near = np.zeros(change.shape, bool)
        for box in frame_boxes:
            band = box_band(change.shape, box)
            drawn += np.mean(change[band] > 40) > 0.3
            near |= band
        grown = cv2.dilate(near.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
        changes_near.append(np.mean(change[near] > 40))
        changes_far.append(np.mean(change[~grown] > 40))
    assert drawn >= 0.6 * sum(map(len, boxes)), (drawn, sum(map(len, boxes)))
    assert np.mean(changes_near) > 3 * np.mean(changes_far), (changes_near, changes_far)


def test_segmentor_video(quickstart_segmentor, ade_gen, tmp_path):
    """Painted at full opacity, each output pixel shows its predicted class's colour: the
    colours read back agree with the ground truth for most pixels."""
    root = quickstart_segmentor.data_root
    names = sorted(p.stem for p in (root / 'images' / 'validation').glob('*.jpg'))[:FRAMES]
    frames = [cv2.imread(str(root / 'images' / 'validation' / f'{n}.jpg')) for n in names]
    labels = [cv2.imread(str(root / 'annotations' / 'validation' / f'{n}.png'),
                         cv2.IMREAD_UNCHANGED) for n in names]
    video = write_video(tmp_path / 'ade.mp4', frames)
    out = tmp_path / 'seg.mp4'
    run_tool(['demo/video_demo.py', video, quickstart_segmentor.config,
              quickstart_segmentor.checkpoint, '--out', out, '--batch-size', '4',
              '--opacity', '1', '--device', 'cpu'])
    outputs, _ = read_video(out)
    assert len(outputs) == FRAMES and all(f.shape == frames[0].shape for f in outputs)
    palette = np.array(ade_gen.PALETTE)[:, ::-1]  # BGR, class k at k - 1 (0: unlabelled)
    correct = total = 0
    for painted, label in zip(outputs, labels):
        distance = np.abs(painted[:, :, None, :].astype(int) - palette).sum(axis=3)
        predicted = distance.argmin(axis=2) + 1
        valid = label > 0
        correct += np.sum(predicted[valid] == label[valid])
        total += np.sum(valid)
    assert correct / total > 0.7, correct / total


# ------------------------------------------------------------------------------------------
# Bad input: a clear message, a non-zero exit, no output
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo():
    return load_script('demo/video_demo.py')


def refused(demo, argv, capsys) -> str:
    """The message of a refused command line (argparse's or the demo's own)."""
    with pytest.raises(SystemExit) as exc:
        demo.main([str(a) for a in argv])
    assert exc.value.code not in (0, None)
    code = exc.value.code
    return (code if isinstance(code, str) else '') + capsys.readouterr().err


def test_refuses_an_unreadable_video(demo, quickstart_detector, tmp_path, capsys):
    bad = tmp_path / 'notes.mp4'
    bad.write_text('not a video')
    out = tmp_path / 'out' / 'x.mp4'
    message = refused(demo, [bad, quickstart_detector.config, quickstart_detector.checkpoint,
                             '--out', out], capsys)
    assert f'cannot read the video {bad}' in message
    assert not (tmp_path / 'out').exists()
    message = refused(demo, [tmp_path / 'missing.mp4', quickstart_detector.config,
                             quickstart_detector.checkpoint, '--out', out], capsys)
    assert f'video not found: {tmp_path / "missing.mp4"}' in message


def test_refuses_a_camera_that_does_not_exist(demo, quickstart_detector, tmp_path, capsys):
    out = tmp_path / 'cam.mp4'
    message = refused(demo, ['63', quickstart_detector.config, quickstart_detector.checkpoint,
                             '--out', out], capsys)
    assert 'cannot open camera 63' in message
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_model_not_in_the_zoo(demo, det_video, tmp_path, capsys):
    message = refused(demo, [det_video[0], 'maskrcnn_ravlt_x_coco', '--out',
                             tmp_path / 'x.mp4'], capsys)
    assert "Unknown model 'maskrcnn_ravlt_x_coco'" in message
    assert 'mask-rcnn_ravlt-s_fpn_amp-1x_coco' in message  # the names it knows
    assert list(tmp_path.iterdir()) == []


def test_refuses_show_without_display_and_no_output(demo, det_video, quickstart_detector,
                                                    monkeypatch, capsys):
    monkeypatch.setattr(demo.sys, 'platform', 'linux')
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    model = [quickstart_detector.config, quickstart_detector.checkpoint]
    assert '--show needs a display' in refused(demo, [det_video[0], *model, '--show'], capsys)
    assert 'give --out FILE.mp4' in refused(demo, [det_video[0], *model], capsys)
