"""Detection through the tools: train/resume/test, the demo, distributed CPU training and what
bad input does. CPU only; the end-to-end runs use a tiny generated shapes set (64 px).

The tools run in subprocesses exactly as a user runs them. Each gets one OpenMP thread: several
of them share two cores with pytest, and with more threads per process OpenMP's busy-waiting
made a training step about 10x slower on such a machine (measured).
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mmdet  # noqa: F401  a missing mmdet fails the suite instead of skipping it
import pytest
import torch
from mmengine.config import Config

from ravlt_dense.models import build_model
from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import (
    QUICKSTART,
    REPO,
    load_script,
    metric_values,
    run_tool,
    shapes_options,
    tool_env,
)

image_demo = load_script('demo/image_demo.py')


# --------------------------------------------------------------------------------------------
# Train, kill, resume, test, demo: one tiny run shared by the tests below
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def trained(shapes, module_tmp):
    """Train 2 epochs (4 iterations each), SIGKILL after the epoch-1 checkpoint, then --resume."""
    work_dir = module_tmp('work')
    args = [
        'tools/train.py', QUICKSTART, '--work-dir', str(work_dir), '--cfg-options',
        *shapes_options(shapes), 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5'
    ]
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=tool_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = work_dir / 'last_checkpoint'  # written once a checkpoint file is complete
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and last.read_text().strip().endswith('epoch_1.pth'):
            break
        time.sleep(0.1)
    killed_at = proc.poll()
    proc.send_signal(signal.SIGKILL)
    first_log = proc.communicate()[0]
    assert killed_at is None, f'training ended before it could be killed:\n{first_log[-3000:]}'
    assert not (work_dir / 'epoch_2.pth').exists()

    resumed = run_tool([*args, '--resume'], timeout=400)
    return dict(work_dir=work_dir, first_log=first_log, resumed_log=resumed.stdout + resumed.stderr,
                checkpoint=work_dir / 'epoch_2.pth')


def test_train_kill_and_resume(trained, coco_gen):
    log = trained['resumed_log']
    # resumed from the epoch-1 checkpoint under torch's weights_only loading
    assert re.search(r'Auto resumed from the latest checkpoint \S*epoch_1\.pth', log)
    assert 'resumed epoch: 1, iter: 4' in log
    assert 'UnpicklingError' not in log and 'weights_only' not in log
    # continues at the next iteration (not from scratch) and finishes with a validation
    trained_iters = re.findall(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/4\]', log)
    assert trained_iters[0] == ('2', '1') and trained_iters[-1] == ('2', '4')
    assert ('1', '1') not in trained_iters
    assert re.search(r'Epoch\(val\) \[2\]\[2/2\]', log)
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metric_values(log))
    assert trained['checkpoint'].exists()
    ckpt = torch.load(trained['checkpoint'], map_location='cpu')  # weights_only default
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 8
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == coco_gen.CLASSES


def test_test_tool_reports_coco_metrics(trained, shapes, tmp_path):
    out = tmp_path / 'preds.pkl'
    proc = run_tool(['tools/test.py', QUICKSTART, str(trained['checkpoint']), '--work-dir',
                     str(tmp_path), '--out', str(out), '--cfg-options', *shapes_options(shapes)])
    metrics = metric_values(proc.stdout + proc.stderr)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert 0.0 <= metrics[key] <= 1.0, key
    from mmengine import load
    results = load(out)
    assert len(results) == 4 and 'pred_instances' in results[0]


def test_test_tool_evaluates_an_mmdet2_release_file_by_url(trained, shapes, tmp_path,
                                                           file_server, torch_home, coco_gen):
    """The authors' layout (mmdet 2.x: state_dict + meta with CLASSES), served by URL."""
    ours = torch.load(trained['checkpoint'], map_location='cpu')
    release = dict(state_dict=ours['state_dict'],
                   meta=dict(CLASSES=coco_gen.CLASSES, epoch=12, mmdet_version='2.25.0'))
    torch.save(release, file_server.root / 'maskrcnn_t_1x_12_epoch.pth')
    url = f'{file_server.url}/maskrcnn_t_1x_12_epoch.pth'
    proc = run_tool(['tools/test.py', QUICKSTART, url, '--work-dir', str(tmp_path),
                     '--cfg-options', *shapes_options(shapes)])  # TORCH_HOME: the fixture's
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metric_values(proc.stdout + proc.stderr))
    assert (torch_home / 'maskrcnn_t_1x_12_epoch.pth').is_file()


def test_demo_writes_png_and_json(trained, shapes, tmp_path, coco_gen):
    import cv2
    photo = Path(importlib.util.find_spec('matplotlib').origin).parent / \
        'mpl-data/sample_data/grace_hopper.jpg'  # a real photograph shipped with matplotlib
    inputs = [str(shapes / 'val')] + ([str(photo)] if photo.exists() else [])
    proc = run_tool(['demo/image_demo.py', QUICKSTART, str(trained['checkpoint']), *inputs,
                     '--out-dir', str(tmp_path), '--pred-score-thr', '0.05', '--device', 'cpu'])
    names = sorted(p.stem for p in (shapes / 'val').glob('*.png')) + \
        (['grace_hopper'] if photo.exists() else [])
    assert sorted(p.stem for p in (tmp_path / 'vis').glob('*.png')) == sorted(names)
    assert sorted(p.stem for p in (tmp_path / 'preds').glob('*.json')) == sorted(names)
    for name in names:
        pred = json.loads((tmp_path / 'preds' / f'{name}.json').read_text())
        vis = cv2.imread(str(tmp_path / 'vis' / f'{name}.png'))
        assert vis.shape[:2] == (pred['height'], pred['width'])
        assert cv2.imread(pred['image']).shape[:2] == (pred['height'], pred['width'])
        assert pred['classes'] == list(coco_gen.CLASSES)
        for inst in pred['instances']:
            assert inst['score'] >= 0.05 and inst['class_name'] in coco_gen.CLASSES
            x1, y1, x2, y2 = inst['bbox']
            assert 0 <= x1 <= x2 <= pred['width'] and 0 <= y1 <= y2 <= pred['height']
            assert inst['mask']['size'] == [pred['height'], pred['width']]
    assert proc.stdout.count('instance(s) with score >= 0.05') == len(names)


def test_dist_train_two_cpu_processes(shapes, tmp_path):
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    cmd = ['bash', 'tools/dist_train.sh', QUICKSTART, '2', '--work-dir', str(tmp_path),
           '--cfg-options', *shapes_options(shapes), 'train_cfg.max_epochs=1']
    proc = run_tool(cmd, timeout=400, env=dict(PORT=str(port)))
    log = proc.stdout + proc.stderr
    # 8 images, 2 processes x 2 images per iteration: 2 iterations per epoch, then validation
    assert re.search(r'Distributed launcher: pytorch', log)
    assert re.search(r'Distributed training: True', log)
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\]', log)
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metric_values(log))
    assert (tmp_path / 'epoch_1.pth').exists()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
def test_missing_data_root_names_the_coco_layout(tmp_path):
    missing = tmp_path / 'no_coco'
    proc = run_tool(['tools/train.py', 'configs/mask_rcnn/mask-rcnn_ravlt-t_fpn_amp-1x_coco.py',
                     '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                     f'train_dataloader.dataset.data_root={missing}/'], check=False)
    assert proc.returncode != 0
    assert re.search(rf'FileNotFoundError: train_dataloader: CocoDataset not found: '
                     rf'{re.escape(str(missing))}/annotations/instances_train2017.json does not '
                     rf'exist', proc.stderr)
    assert 'data/coco/annotations/instances_{train,val}2017.json' in proc.stderr
    assert 'data/coco/train2017/' in proc.stderr


def test_corrupt_image_error_names_the_file(shapes, tmp_path):
    root = tmp_path / 'shapes'
    shutil.copytree(shapes, root)
    bad = root / 'train' / '000000.png'  # unshuffled: read in the first iteration
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + os.urandom(200))  # a PNG header, then garbage
    proc = run_tool(['tools/train.py', QUICKSTART, '--work-dir', str(tmp_path / 'work'),
                     '--cfg-options', *shapes_options(root),
                     'train_dataloader.sampler.shuffle=False'], check=False)
    assert proc.returncode != 0
    assert re.search(rf'failed to load image: {re.escape(str(bad))}', proc.stderr)


def test_missing_checkpoints(tmp_path):
    # ImageNet weights named by the config's init_cfg
    cfg = Config.fromfile(REPO / 'configs/mask_rcnn/mask-rcnn_ravlt-t_fpn_amp-1x_coco.py')
    missing = tmp_path / 'ravlt-t_in1k.pth'
    cfg.model.backbone.init_cfg.checkpoint = str(missing)
    model = build_model(cfg)
    with pytest.raises(FileNotFoundError, match=rf'RAVLT checkpoint not found: '
                       rf'{re.escape(str(missing))}.*init_cfg=None to train from scratch'):
        model.init_weights()
    # a trained model for test.py (the demo's case is in test_demo_bad_input)
    proc = run_tool(['tools/test.py', QUICKSTART, str(tmp_path / 'nope.pth')], check=False)
    assert proc.returncode != 0
    assert f'FileNotFoundError: Checkpoint not found: {tmp_path / "nope.pth"}' in proc.stderr


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    ckpt = tmp_path / 'ravlt_t.pth'
    torch.save({'model': RAVLT('t').state_dict()}, ckpt)  # ImageNet-style file of RAVLT-T
    cfg = Config.fromfile(REPO / 'configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py')
    cfg.model.backbone.init_cfg.checkpoint = str(ckpt)
    model = build_model(cfg)
    with pytest.raises(ValueError, match=r'(?s)does not fit RAVLT.*\d+ mismatched key\(s\): .*'
                       r'layers\.2\.blocks\.0\.attn\.qkvo\.weight: checkpoint \(1024, 256, 1, 1\) '
                       r'vs model \(1280, 320, 1, 1\)'):
        model.init_weights()


def test_test_tool_refuses_a_checkpoint_of_another_model(trained, shapes, tmp_path):
    # the trained Mask R-CNN-T with its stage-3 qkvo cut down: what a wrong variant looks like
    ckpt = torch.load(trained['checkpoint'], map_location='cpu')
    key = 'backbone.layers.2.blocks.0.attn.qkvo.weight'
    ckpt['state_dict'][key] = ckpt['state_dict'][key][:512]
    del ckpt['state_dict']['roi_head.mask_head.conv_logits.bias']
    wrong = tmp_path / 'wrong.pth'
    torch.save(ckpt, wrong)
    args = ['tools/test.py', QUICKSTART, str(wrong), '--work-dir', str(tmp_path),
            '--cfg-options', *shapes_options(shapes)]
    proc = run_tool(args, check=False)
    assert proc.returncode != 0
    assert f'Checkpoint {wrong} does not fit the model of {QUICKSTART}' in proc.stderr
    assert f'{key}: checkpoint (512, 256, 1, 1) vs model (1024, 256, 1, 1)' in proc.stderr
    assert 'roi_head.mask_head.conv_logits.bias' in proc.stderr
    assert '--non-strict evaluates anyway' in proc.stderr  # the way out
    assert 'Epoch(test)' not in proc.stdout + proc.stderr  # refused before evaluating
    # --non-strict evaluates what fits, as mmengine does by default, through the same loader
    proc = run_tool([*args, '--non-strict'])
    assert 'coco/bbox_mAP' in metric_values(proc.stdout + proc.stderr)
    assert f'Checkpoint {wrong} does not fit the model of {QUICKSTART}; loading the keys ' \
        'that fit' in proc.stdout + proc.stderr
    assert f'{key}: checkpoint (512, 256, 1, 1) vs model (1024, 256, 1, 1)' in \
        proc.stdout + proc.stderr


def test_demo_bad_input(tmp_path, shapes, capsys):
    """Every input is checked (and named) before the model loads; nothing is written."""
    ckpt = tmp_path / 'any.pth'
    ckpt.write_bytes(b'')
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not an image')
    (tmp_path / 'empty_dir').mkdir()
    out = ['--out-dir', str(tmp_path / 'out')]
    cases = [([QUICKSTART, str(tmp_path / 'nope.pth'), str(shapes / 'val')],
              f'checkpoint not found: {tmp_path / "nope.pth"}'),
             (['configs/nope.py', str(ckpt), str(shapes / 'val')],
              'config not found: configs/nope.py'),
             ([QUICKSTART, str(ckpt), str(tmp_path / 'missing.png')],
              f'Input image or folder not found: {tmp_path / "missing.png"}'),
             ([QUICKSTART, str(ckpt), str(shapes / 'val'), str(bad)],
              f'Cannot decode the image {bad}: the file is corrupt or not an image'),
             ([QUICKSTART, str(ckpt), str(tmp_path / 'empty_dir')],
              f'No images (.jpg, .jpeg, .png, .bmp, .ppm, .pgm, .tif, .tiff, .webp) in folder '
              f'{tmp_path / "empty_dir"}')]
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for args, message in cases:
            with pytest.raises(SystemExit) as exc:
                image_demo.main([*args, *out])
            assert exc.value.code == 2
            assert f'error: {message}' in capsys.readouterr().err
    finally:
        os.chdir(cwd)
    assert not (tmp_path / 'out').exists()
