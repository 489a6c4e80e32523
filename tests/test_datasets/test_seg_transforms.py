"""ravlt_dense.datasets.transforms: LoadCheckedAnnotations names every unusable label map and
decodes each once, and what the data path does with bad or small images (the quick-start FPN's
pipeline on generated data)."""
import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ravlt_dense.datasets  # noqa: F401  registers LoadCheckedAnnotations
from ravlt_dense.models import build_model

from conftest import REPO

FPN_QUICK = REPO / 'configs' / 'quickstart' / 'fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py'


@pytest.fixture()
def tiny_shapes(tmp_path, ade_gen):
    root = tmp_path / 'shapes'
    ade_gen.make_ade_shapes(str(root), num_train=3, num_val=2, size=64, seed=1)
    return root


def _dataset(root, split='train'):
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(FPN_QUICK)
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    loader.dataset.data_root = str(root)
    init_default_scope('mmseg')
    return DATASETS.build(loader.dataset)


def test_corrupt_image_is_named(tiny_shapes):
    bad = tiny_shapes / 'images' / 'training' / '000001.jpg'
    bad.write_bytes(b'not a jpeg at all')
    dataset = _dataset(tiny_shapes)
    with pytest.raises(AssertionError, match=f'failed to load image: {bad}'):
        dataset[1]


def test_corrupt_label_is_named(tiny_shapes):
    bad = tiny_shapes / 'annotations' / 'training' / '000002.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    dataset = _dataset(tiny_shapes)
    dataset[0]  # the intact samples still load
    with pytest.raises(ValueError, match=f'Cannot decode the label map {bad}'):
        dataset[2]


def test_rgb_label_map_is_rejected(tiny_shapes):
    bad = tiny_shapes / 'annotations' / 'validation' / '000000.png'
    cv2.imwrite(str(bad), np.full((64, 64, 3), 2, np.uint8))
    with pytest.raises(ValueError, match=f'Label map {bad} has shape .*single-channel'):
        _dataset(tiny_shapes, 'val')[0]


@pytest.mark.parametrize('value', [6, 200])
def test_label_out_of_range_is_named(tiny_shapes, value):
    path = tiny_shapes / 'annotations' / 'validation' / '000001.png'
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    label[:3, :3] = value
    cv2.imwrite(str(path), label)
    with pytest.raises(ValueError, match=rf'Label map {path} holds values that are no class: '
                       rf'{value}\. With num_classes=5 the stored values must be 0 \(unlabelled\)'
                       r', 1\.\.5'):
        _dataset(tiny_shapes, 'val')[1]


def test_label_map_of_another_size_is_named_before_the_resize(tiny_shapes):
    """The val pipeline resizes the image before loading its label map: the check compares the
    sizes as loaded (ori_shape), not the resized image's."""
    path = tiny_shapes / 'annotations' / 'validation' / '000000.png'
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), np.ascontiguousarray(label[:, :40]))
    image = tiny_shapes / 'images' / 'validation' / '000000.jpg'
    with pytest.raises(ValueError, match=rf'Label map {path} is 64x40 \(height x width\) but its '
                       rf'image {image} is 64x64: each label map must have the size of its image'):
        _dataset(tiny_shapes, 'val')[0]
    assert _dataset(tiny_shapes, 'val')[1]['inputs'].shape[0] == 3  # same sizes: loads


def test_ignore_value_255_is_allowed(tiny_shapes):
    path = tiny_shapes / 'annotations' / 'training' / '000000.png'
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    label[:8] = 255
    cv2.imwrite(str(path), label)
    sample = _dataset(tiny_shapes)[0]
    assert sample['inputs'].shape[0] == 3


def test_label_check_without_reduce_zero_label(tmp_path):
    from ravlt_dense.datasets import LoadCheckedAnnotations
    path = str(tmp_path / 'label.png')
    cv2.imwrite(path, np.array([[0, 1], [2, 255]], np.uint8))
    check = LoadCheckedAnnotations(num_classes=3)
    loaded = check(dict(seg_map_path=path, reduce_zero_label=False))
    assert loaded['seg_map_path'] == path
    assert loaded['gt_seg_map'].tolist() == [[0, 1], [2, 255]]  # stored values, as mmseg loads
    with pytest.raises(ValueError,
                       match=r'holds values that are no class: 2\. .*0\.\.1 \(classes\)'):
        LoadCheckedAnnotations(num_classes=2)(dict(seg_map_path=path, reduce_zero_label=False))
    assert LoadCheckedAnnotations(num_classes=2)(dict(img_path='x.jpg')) == dict(img_path='x.jpg')
    cv2.imwrite(path, np.array([[0, 300], [1, 2]], np.uint16))  # uint8 loaders would wrap 300 to 44
    with pytest.raises(ValueError, match='no class: 300'):
        LoadCheckedAnnotations(num_classes=150)(dict(seg_map_path=path, reduce_zero_label=True))


def test_label_maps_are_decoded_once_per_sample(tiny_shapes, monkeypatch):
    """The check and the loading share one decode (a check before mmseg's loader read each
    label file a second time, every iteration)."""
    from mmengine import fileio
    dataset = _dataset(tiny_shapes)
    read, get = [], fileio.get
    monkeypatch.setattr(fileio, 'get', lambda path, *a, **k: read.append(str(path)) or
                        get(path, *a, **k))
    sample = dataset[0]
    labels = [p for p in read if p.endswith('.png')]
    assert len(labels) == 1 and '/annotations/training/' in labels[0]
    assert set(sample['data_samples'].gt_sem_seg.data.unique().tolist()) <= {0, 1, 2, 3, 4, 255}


def test_reduce_zero_label_is_applied_as_mmseg_does(tmp_path):
    from mmseg.datasets.transforms import LoadAnnotations

    from ravlt_dense.datasets import LoadCheckedAnnotations
    path = str(tmp_path / 'label.png')
    cv2.imwrite(path, np.array([[0, 1, 5], [255, 3, 2]], np.uint8))
    sample = dict(seg_map_path=path, reduce_zero_label=True, label_map={2: 0, 0: 2},
                  seg_fields=[])
    ours = LoadCheckedAnnotations(num_classes=5)(dict(sample, seg_fields=[]))
    theirs = LoadAnnotations()(dict(sample, seg_fields=[]))
    assert ours['gt_seg_map'].dtype == theirs['gt_seg_map'].dtype == np.uint8
    assert ours['gt_seg_map'].tolist() == theirs['gt_seg_map'].tolist()
    assert ours['seg_fields'] == ['gt_seg_map']


def test_image_smaller_than_crop_is_padded_with_ignore(tmp_path):
    """RandomCrop returns a smaller image whole; the data preprocessor pads it to the crop size
    with label 255, which the loss ignores."""
    from mmseg.registry import DATASETS
    img, label = tmp_path / 'img', tmp_path / 'ann'
    img.mkdir(), label.mkdir()
    cv2.imwrite(str(img / 'small.jpg'), np.full((20, 28, 3), 128, np.uint8))
    cv2.imwrite(str(label / 'small.png'), np.full((20, 28), 2, np.uint8))
    cfg = Config.fromfile(FPN_QUICK)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root, ds_cfg.data_prefix = str(tmp_path), dict(img_path='img', seg_map_path='ann')
    # Without the resize, so the crop (64x64) is larger than the image.
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t['type'] != 'RandomResize']
    init_default_scope('mmseg')
    sample = DATASETS.build(ds_cfg)[0]
    assert tuple(sample['inputs'].shape[1:]) == (20, 28)
    model = build_model(cfg)
    data = model.data_preprocessor(dict(inputs=[sample['inputs']],
                                        data_samples=[sample['data_samples']]), training=True)
    assert tuple(data['inputs'].shape) == (1, 3, 64, 64)
    gt = data['data_samples'][0].gt_sem_seg.data[0]
    assert (gt[:20, :28] == 1).all() and (gt[20:] == 255).all() and (gt[:, 28:] == 255).all()
    losses = model.loss(data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['decode.loss_ce'])
