"""Tests of the synthetic dataset generators tools/data/make_coco_shapes.py and
make_ade_shapes.py."""
import filecmp
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import load_script

# pycocotools' decode trips a numpy 2 copy-keyword deprecation on every call (not ours).
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning:pycocotools.*')


@pytest.fixture(scope='module')
def common():
    return load_script('tools/data/shapes_common.py')


@pytest.fixture(scope='module')
def coco_data(coco_gen, module_tmp):
    return coco_gen.make_coco_shapes(str(module_tmp('coco')), num_train=32, num_val=8)


@pytest.fixture(scope='module')
def ade_data(ade_gen, module_tmp):
    return ade_gen.make_ade_shapes(str(module_tmp('ade')), num_train=24, num_val=8)


def _files(root):
    return sorted(p.relative_to(root) for p in Path(root).rglob('*') if p.is_file())


def _same_tree(a, b):
    names = _files(a)
    return names == _files(b) and all(filecmp.cmp(Path(a, n), Path(b, n), shallow=False)
                                      for n in names)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_annotations_describe_visible_masks(coco_gen, coco_data, split):
    info = coco_data[split]
    coco = COCO(info['ann_file'])
    assert len(coco.getImgIds()) == info['images']
    assert len(coco.getAnnIds()) == info['instances'] > info['images']
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(coco_gen.CLASSES)
    assert {a['category_id'] for a in coco.anns.values()} == set(coco.getCatIds())
    for img_id, img_info in coco.imgs.items():
        h, w = img_info['height'], img_info['width']
        img = cv2.imread(os.path.join(info['img_dir'], img_info['file_name']))
        assert img.shape == (h, w, 3)
        coverage = np.zeros((h, w), np.int32)
        for ann in coco.imgToAnns[img_id]:
            assert ann['iscrowd'] == 0 and ann['area'] >= coco_gen.MIN_AREA
            assert ann['segmentation'] and all(len(p) >= 6 for p in ann['segmentation'])
            rles = mask_utils.frPyObjects(ann['segmentation'], h, w)
            mask = mask_utils.decode(mask_utils.merge(rles))
            # The polygons rasterise back to the exact mask, so box and area match to the pixel.
            assert ann['bbox'] == mask_utils.toBbox(mask_utils.encode(mask)).tolist()
            assert ann['area'] == mask.sum()
            coverage += mask
        # Visible parts of occluding shapes never share a pixel.
        assert coverage.max() <= 1


def test_polygons_are_exact(common):
    # Slivers and single pixels survive the mask -> polygon -> mask round trip unchanged.
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(30):
        mask = (common.random_shape_mask(rng, 'star', 64)
                & ~common.random_shape_mask(rng, 'square', 64))
        mask[5, 5:40] = True  # 1-px line
        mask[60, 60] = True  # isolated pixel
        if common.has_holes(mask):
            continue
        rles = mask_utils.frPyObjects(common.mask_to_polygons(mask), 64, 64)
        np.testing.assert_array_equal(mask_utils.decode(mask_utils.merge(rles)).astype(bool), mask)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize('generator, num_train', [('coco', 6), ('ade', 4)])
def test_same_seed_same_files(coco_gen, ade_gen, tmp_path, generator, num_train):
    make = coco_gen.make_coco_shapes if generator == 'coco' else ade_gen.make_ade_shapes
    for folder, seed in (('a', 3), ('b', 3), ('c', 4)):
        make(str(tmp_path / folder), seed=seed, num_train=num_train, num_val=2, size=64)
    assert _same_tree(tmp_path / 'a', tmp_path / 'b')
    assert not _same_tree(tmp_path / 'a', tmp_path / 'c')


def test_coco_cli(coco_gen, tmp_path, capsys):
    coco_gen.main(['--out', str(tmp_path), '--num-train', '3', '--num-val', '2', '--shape', '48'])
    assert 'done' in capsys.readouterr().out
    with open(tmp_path / 'annotations' / 'instances_val.json') as f:
        images = json.load(f)['images']
    assert [i['file_name'] for i in images] == ['000000.png', '000001.png']
    assert cv2.imread(str(tmp_path / 'train' / '000002.png')).shape == (48, 48, 3)
    assert not (tmp_path / 'train' / '000003.png').exists()


def test_ade_labels(ade_gen, ade_data):
    num_classes = len(ade_gen.CLASSES)
    assert len(ade_gen.PALETTE) == num_classes
    for split in ('train', 'val'):
        info = ade_data[split]
        images = sorted(p.stem for p in Path(info['img_dir']).glob('*.jpg'))
        labels = sorted(p.stem for p in Path(info['ann_dir']).glob('*.png'))
        assert images == labels and len(images) == info['images']
        counts = np.zeros(num_classes + 1, np.int64)
        for name in images:
            img = cv2.imread(os.path.join(info['img_dir'], name + '.jpg'))
            label = cv2.imread(os.path.join(info['ann_dir'], name + '.png'), cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.shape == img.shape[:2] == (128, 128)
            assert label.max() <= num_classes
            counts += np.bincount(label.ravel(), minlength=num_classes + 1)
        if split == 'train':
            assert (counts[1:] > 0).all(), counts
        assert 0 < counts[0] / counts.sum() < 0.05
        assert counts[0] / counts.sum() == pytest.approx(info['ignore_fraction'])


def test_ade_regeneration_removes_stale_files(ade_gen, tmp_path):
    # mmseg lists the folders, so a smaller rerun must not leave the old images behind.
    ade_gen.make_ade_shapes(str(tmp_path), num_train=4, num_val=1, size=32)
    ade_gen.make_ade_shapes(str(tmp_path), num_train=2, num_val=1, size=32)
    assert len(list((tmp_path / 'images' / 'training').glob('*.jpg'))) == 2
    assert len(list((tmp_path / 'annotations' / 'training').glob('*.png'))) == 2


@pytest.mark.parametrize('kwargs, message', [
    (dict(size=31), 'size must be at least 32, got 31'),
    (dict(num_train=0), 'num_train must be at least 1, got 0'),
    (dict(num_val=-1), 'num_val must be at least 1, got -1'),
    (dict(seed=-1), 'seed must be non-negative'),
])
def test_bad_arguments(coco_gen, ade_gen, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        coco_gen.make_coco_shapes(str(tmp_path / 'coco'), **kwargs)
    with pytest.raises(ValueError, match=message):
        ade_gen.make_ade_shapes(str(tmp_path / 'ade'), **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written


def test_bad_cli_arguments(coco_gen, ade_gen, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        coco_gen.main(['--out', str(tmp_path), '--shape', '16'])
    assert exc.value.code == 2 and 'size must be at least 32, got 16' in capsys.readouterr().err
    with pytest.raises(ValueError, match='max_objects must be at least 1'):
        coco_gen.make_coco_shapes(str(tmp_path), max_objects=0)
    with pytest.raises(SystemExit) as exc:
        ade_gen.main(['--out', str(tmp_path), '--num-train', '0'])
    assert exc.value.code == 2 and 'num_train must be at least 1, got 0' in capsys.readouterr().err


def test_coco2017_layout_at_another_shape(coco_gen, tmp_path, capsys):
    # the standard COCO layout, as the COCO configs read it, at an image shape of H x W
    coco_gen.main(['--out', str(tmp_path), '--layout', 'coco2017', '--shape', '40', '72',
                   '--num-train', '2', '--num-val', '1'])
    assert 'classes person, bicycle, car, motorcycle' in capsys.readouterr().out
    coco = COCO(str(tmp_path / 'annotations' / 'instances_train2017.json'))
    assert [c['name'] for c in coco.loadCats([1, 2, 3, 4])] == ['person', 'bicycle', 'car',
                                                                'motorcycle']
    assert len(coco.getCatIds()) == 80  # a COCO model's every label has its category
    assert {a['category_id'] for a in coco.anns.values()} <= {1, 2, 3, 4}
    assert {(i['height'], i['width']) for i in coco.imgs.values()} == {(40, 72)}
    assert cv2.imread(str(tmp_path / 'train2017' / '000001.png')).shape == (40, 72, 3)
    assert (tmp_path / 'val2017' / '000000.png').is_file()
    assert (tmp_path / 'annotations' / 'instances_val2017.json').is_file()
    for ann in coco.anns.values():  # the annotations still describe the visible masks exactly
        mask = coco.annToMask(ann)
        assert mask.shape == (40, 72) and mask.sum() == ann['area']


def test_ade_labels_at_another_shape(ade_gen, tmp_path):
    ade_gen.main(['--out', str(tmp_path), '--shape', '32', '96', '--num-train', '1',
                  '--num-val', '1'])
    img = cv2.imread(str(tmp_path / 'images' / 'training' / '000000.jpg'))
    label = cv2.imread(str(tmp_path / 'annotations' / 'training' / '000000.png'),
                       cv2.IMREAD_UNCHANGED)
    assert img.shape == (32, 96, 3) and label.shape == (32, 96)
    assert set(np.unique(label)) >= {1, 2}  # sky over ground across the whole width


def test_shape_arguments(coco_gen, ade_gen, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        coco_gen.main(['--out', str(tmp_path), '--shape', '64', '64', '64'])
    assert exc.value.code == 2 and '--shape takes H W (or one size for a square), got 3 values' \
        in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ade_gen.main(['--out', str(tmp_path), '--shape', '512', '16'])
    assert exc.value.code == 2
    assert 'size must be at least 32, got (512, 16)' in capsys.readouterr().err
    with pytest.raises(ValueError, match="layout must be one of shapes, coco2017, got 'voc'"):
        coco_gen.make_coco_shapes(str(tmp_path / 'voc'), layout='voc')
    assert not (tmp_path / 'voc').exists()
