"""Segmentation through the tools: tools/train.py, tools/test.py, resume (also from a work dir
whose last checkpoint is damaged) and demo/seg_demo.py on the Semantic FPN quick-start config,
and what a missing data set or a label map of the wrong size does.

CPU only: a few iterations on a tiny generated shapes set in tmp_path, in subprocesses, as a
user runs the tools.
"""
import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, load_script, run_tool

FPN_QUICK = REPO / 'configs' / 'quickstart' / 'fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py'

pytestmark = pytest.mark.usefixtures('one_thread')


def test_missing_data_root_through_train_py(tmp_path):
    proc = run_tool(['tools/train.py', FPN_QUICK, '--work-dir', tmp_path / 'work', '--cfg-options',
                     f'train_dataloader.dataset.data_root={tmp_path / "nowhere"}'], check=False)
    assert proc.returncode != 0
    assert f'{tmp_path / "nowhere"}/images/training does not exist' in proc.stderr


def _last_scalars(work_dir):
    logs = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


@pytest.fixture(scope='module')
def trained(module_tmp, ade_gen):
    """FPN quick-start trained 2 iterations (batch 2) on 4 generated images, validated at the end;
    a checkpoint after each iteration."""
    tmp = module_tmp('seg_e2e')
    data = tmp / 'shapes'
    ade_gen.make_ade_shapes(str(data), num_train=4, num_val=2, size=64, seed=0)
    work = tmp / 'work'
    options = ['--cfg-options', f'train_dataloader.dataset.data_root={data}',
               f'val_dataloader.dataset.data_root={data}',
               f'test_dataloader.dataset.data_root={data}', 'train_dataloader.batch_size=2',
               'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
               'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=2',
               'default_hooks.logger.interval=1']
    proc = run_tool(['tools/train.py', FPN_QUICK, '--work-dir', work, *options])
    return dict(tmp=tmp, data=data, work=work, options=options, log=proc.stdout + proc.stderr)


def test_train_and_val(trained):
    assert all((trained['work'] / f'iter_{i}.pth').is_file() for i in (1, 2))
    assert (trained['work'] / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    scalars = _last_scalars(trained['work'])
    train = [s for s in scalars if 'loss' in s]
    assert [s['iter'] for s in train] == [1, 2] and all(np.isfinite(s['loss']) for s in train)
    val = [s for s in scalars if 'mIoU' in s]
    assert len(val) == 1 and 0 <= val[0]['mIoU'] <= 100


def test_test_py_gives_miou_and_label_maps(trained):
    out = trained['tmp'] / 'pred'
    proc = run_tool(['tools/test.py', FPN_QUICK, trained['work'] / 'iter_2.pth', '--work-dir',
                     trained['tmp'] / 'test', '--out', out,
                     '--cfg-options', f'test_dataloader.dataset.data_root={trained["data"]}'])
    assert 'mIoU' in proc.stdout + proc.stderr
    scalars = json.loads(next((trained['tmp'] / 'test').glob('*/*.json')).read_text())
    assert 0 <= scalars['mIoU'] <= 100 and 'aAcc' in scalars
    preds = sorted(out.glob('*.png'))
    assert [p.name for p in preds] == ['000000.png', '000001.png']
    label = cv2.imread(str(preds[0]), cv2.IMREAD_UNCHANGED)
    assert label.shape == (64, 64)


def test_resume_continues_from_saved_iteration(trained):
    work = trained['tmp'] / 'resume'
    shutil.copytree(trained['work'], work)
    options = [o.replace('max_iters=2', 'max_iters=3') for o in trained['options']]
    proc = run_tool(['tools/train.py', FPN_QUICK, '--work-dir', work, '--resume', *options])
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    scalars = _last_scalars(work)
    assert [s['iter'] for s in scalars if 'loss' in s] == [3]
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_3.pth')


def _copy_with_damaged_last_checkpoint(trained, name, damage):
    """The checkpoints of the trained work dir in a new one (its last_checkpoint naming its own
    iter_2.pth), iter_2.pth damaged as a kill or a full disk (cut short) or a crash (zeros)
    leave it. iter_1.pth is a hard link: saves replace files, they never write into them."""
    work = trained['tmp'] / name
    work.mkdir()
    os.link(trained['work'] / 'iter_1.pth', work / 'iter_1.pth')
    data = (trained['work'] / 'iter_2.pth').read_bytes()
    (work / 'iter_2.pth').write_bytes(data[:len(data) // 2] if damage == 'cut short'
                                      else bytes(len(data)))
    (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))
    return work


@pytest.mark.parametrize('damage', ['cut short', 'zero-filled'])
def test_resume_skips_a_damaged_last_checkpoint(trained, damage):
    from ravlt_dense.tools.saving import checkpoint_damage
    work = _copy_with_damaged_last_checkpoint(trained, damage.replace(' ', '_'), damage)
    options = [o.replace('max_iters=2', 'max_iters=3') for o in trained['options']]
    proc = run_tool(['tools/train.py', FPN_QUICK, '--work-dir', work, '--resume', *options])
    log = proc.stdout + proc.stderr
    warning = (f'{work}/last_checkpoint names {work}/iter_2.pth, which is damaged: it is {damage} '
               rf'\(\d+ bytes.*\. Resuming from {work}/iter_1.pth instead, the newest checkpoint '
               'before it that loads')
    assert re.search(warning, log), log[-3000:]
    run_log = sorted(work.glob('*/*.log'))[-1].read_text()
    assert re.search(warning, run_log)  # in the run's log file too
    assert 'resumed epoch: 0, iter: 1' in log
    assert [s['iter'] for s in _last_scalars(work) if 'loss' in s] == [2, 3]
    assert (work / 'last_checkpoint').read_text().strip() == str(work / 'iter_3.pth')
    assert checkpoint_damage(str(work / 'iter_2.pth')) is None  # saved again, whole
    assert not list(work.glob('.*.tmp*'))  # no temporary files of the atomic saves left over


def test_resume_from_a_damaged_checkpoint_names_the_one_to_use(trained):
    work = _copy_with_damaged_last_checkpoint(trained, 'damaged_path', 'cut short')
    proc = run_tool(['tools/train.py', FPN_QUICK, '--work-dir', work, '--resume',
                     work / 'iter_2.pth', *trained['options']], check=False)
    assert proc.returncode != 0
    assert re.search(rf'CorruptCheckpointError: Cannot resume from {work}/iter_2.pth: it is cut '
                     rf'short \(\d+ bytes, the end of the zip archive that torch.save writes is '
                     rf'missing\): the save was interrupted \(a killed process, a full disk\)\.\n'
                     rf'The newest checkpoint before it that loads is {work}/iter_1.pth: resume '
                     rf'from it with --resume {work}/iter_1.pth', proc.stderr), proc.stderr[-3000:]
    assert 'PytorchStreamReader' not in proc.stderr  # refused before mmengine loads anything


def test_label_map_of_another_size_is_named(tmp_path, ade_gen):
    data = tmp_path / 'shapes'
    ade_gen.make_ade_shapes(str(data), num_train=2, num_val=1, size=64, seed=0)
    for path in (data / 'annotations' / 'training').glob('*.png'):  # e.g. a map of another set
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), cv2.resize(label, (48, 32), interpolation=cv2.INTER_NEAREST))
    proc = run_tool(['tools/train.py', FPN_QUICK, '--work-dir', tmp_path / 'work', '--cfg-options',
                     f'train_dataloader.dataset.data_root={data}',
                     f'val_dataloader.dataset.data_root={data}', 'train_cfg.max_iters=1'],
                    check=False)
    assert proc.returncode != 0
    assert re.search(rf'ValueError: Label map {data}/annotations/training/(\d+)\.png is 32x48 '
                     rf'\(height x width\) but its image {data}/images/training/\1\.jpg is 64x64: '
                     'each label map must have the size of its image', proc.stderr), \
        proc.stderr[-3000:]


def test_demo_writes_overlays_and_label_maps(trained, tmp_path):
    import matplotlib
    photo = Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg'  # 600x512
    demo = load_script('demo/seg_demo.py')
    val_dir = trained['data'] / 'images' / 'validation'
    out = tmp_path / 'demo'
    written = demo.main([str(FPN_QUICK), str(trained['work'] / 'iter_2.pth'), str(val_dir),
                         str(photo), '--out-dir', str(out), '--device', 'cpu',
                         '--opacity', '0.6', '--slide', '--crop-size', '64', '64',
                         '--stride', '48', '48'])
    assert [Path(w['image']).name for w in written] == ['000000.jpg', '000001.jpg',
                                                        'grace_hopper.jpg']
    for item in written:
        img = cv2.imread(item['image'])
        vis = cv2.imread(item['vis'])
        label = cv2.imread(item['pred'], cv2.IMREAD_UNCHANGED)
        assert item['vis'].endswith('.png') and item['pred'].endswith('.png')
        assert vis.shape == img.shape and label.shape == img.shape[:2]
        assert label.dtype == np.uint8 and label.max() < 5
        assert not np.array_equal(vis, img)  # the classes are painted over the image
    assert sorted(os.listdir(out / 'pred')) == ['000000.png', '000001.png', 'grace_hopper.png']


def test_demo_class_names(trained, tmp_path, ade_gen):
    """Overlays are labelled with the checkpoint's classes, else the config's, never Cityscapes'."""
    demo = load_script('demo/seg_demo.py')
    cfg = demo.load_config(str(FPN_QUICK))
    ckpt = trained['work'] / 'iter_2.pth'
    inferencer = demo.build_inferencer(cfg, str(ckpt), 'cpu')
    assert tuple(inferencer.visualizer.dataset_meta['classes']) == ade_gen.CLASSES
    bare = tmp_path / 'bare.pth'  # weights only, as a converted or hand-made checkpoint may be
    torch.save(dict(state_dict=torch.load(ckpt, map_location='cpu')['state_dict']), bare)
    inferencer = demo.build_inferencer(cfg, str(bare), 'cpu')
    assert tuple(inferencer.visualizer.dataset_meta['classes']) == ade_gen.CLASSES
    assert tuple(inferencer.model.dataset_meta['classes']) == ade_gen.CLASSES


def test_demo_errors_name_the_file(trained, tmp_path):
    demo = load_script('demo/seg_demo.py')
    ckpt = str(trained['work'] / 'iter_2.pth')
    with pytest.raises(FileNotFoundError, match='Checkpoint not found: .*missing.pth'):
        demo.main([str(FPN_QUICK), str(tmp_path / 'missing.pth'), str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='Input image or folder not found: .*nope.jpg'):
        demo.main([str(FPN_QUICK), ckpt, str(tmp_path / 'nope.jpg')])
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f'No images .* in folder {empty}'):
        demo.main([str(FPN_QUICK), ckpt, str(empty)])
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8 garbage')
    with pytest.raises(ValueError, match=f'Cannot decode the image {bad}'):
        demo.main([str(FPN_QUICK), ckpt, str(bad), '--out-dir', str(tmp_path / 'out')])
    with pytest.raises(SystemExit):
        demo.main([str(FPN_QUICK), ckpt, str(bad), '--opacity', '1.5'])
