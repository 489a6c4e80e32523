"""tools/data/make_coco_panoptic_shapes.py: COCO's panoptic format, read back as mmdet reads it
(its CocoPanopticDataset; decoding the PNGs as panopticapi's rgb2id does, without needing
panopticapi, which mmdet's LoadPanopticAnnotations and CocoPanopticMetric import)."""
import json

import cv2
import numpy as np
import pytest

from conftest import load_script


@pytest.fixture(scope='module')
def panoptic(tmp_path_factory):
    gen = load_script('tools/data/make_coco_panoptic_shapes.py')
    root = tmp_path_factory.mktemp('coco_panoptic_shapes')
    return gen, gen.make_coco_panoptic_shapes(str(root), num_train=3, num_val=2, size=(64, 80),
                                              seed=0, max_objects=3)


def rgb2id(rgb):
    """panopticapi.utils.rgb2id."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


@pytest.mark.parametrize('split', ['train', 'val'])
def test_segments_cover_every_pixel_and_match_the_pngs(panoptic, split):
    gen, summary = panoptic
    info = summary[split]
    data = json.load(open(info['ann_file']))
    categories = {c['id']: c for c in data['categories']}
    assert [c['name'] for c in data['categories']] == list(gen.CLASSES + gen.STUFF)
    assert [c['isthing'] for c in data['categories']] == [1, 1, 1, 1, 0]
    instances = json.load(open(info['instances_file']))
    things = 0
    for image, ann in zip(data['images'], data['annotations']):
        assert ann['image_id'] == image['id'] and ann['file_name'] == image['file_name']
        bgr = cv2.imread(f'{info["seg_dir"]}/{ann["file_name"]}', cv2.IMREAD_COLOR)
        ids = rgb2id(bgr[..., ::-1])
        assert ids.shape == (64, 80) and (ids > 0).all()  # every pixel in one segment
        assert sorted(np.unique(ids).tolist()) == [s['id'] for s in ann['segments_info']]
        for segment in ann['segments_info']:
            mask = ids == segment['id']
            assert segment['area'] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert segment['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                       ys.max() - ys.min() + 1]
            things += categories[segment['category_id']]['isthing']
    # the things are the COCO instances of the same images
    assert things == len(instances['annotations']) == info['things'] > 0


def test_mmdet_reads_the_set_as_coco_panoptic(panoptic):
    from mmdet.datasets import CocoPanopticDataset
    gen, summary = panoptic
    dataset = CocoPanopticDataset(
        data_root=summary['out_dir'], ann_file='annotations/panoptic_val.json',
        data_prefix=dict(img='val/', seg='annotations/panoptic_val/'),
        metainfo=dict(classes=gen.CLASSES + gen.STUFF, thing_classes=gen.CLASSES,
                      stuff_classes=gen.STUFF),
        pipeline=[], test_mode=True)
    assert len(dataset) == 2
    item = dataset[0]
    labels = {s['category'] for s in item['segments_info']}
    assert len(gen.CLASSES) in labels  # the stuff class: label 4 after the four things
    assert all(s['is_thing'] == (s['category'] < len(gen.CLASSES)) for s in item['segments_info'])
    assert item['seg_map_path'].endswith('annotations/panoptic_val/000000.png')


def test_same_images_as_the_coco_shapes_set(panoptic, coco_gen, tmp_path):
    gen, summary = panoptic
    coco_gen.make_coco_shapes(str(tmp_path), num_train=3, num_val=2, size=(64, 80), seed=0,
                              max_objects=3)
    for split in ('train', 'val'):
        for name in ('000000.png', '000001.png'):
            a = cv2.imread(f'{summary[split]["img_dir"]}/{name}')
            assert np.array_equal(a, cv2.imread(str(tmp_path / split / name)))
