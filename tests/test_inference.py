"""ravlt_dense.tools.inference: the demos' device, and the classes and palette of a model."""
import pytest
import torch
from mmengine.config import Config

from ravlt_dense.tools.inference import config_dataset_meta, default_device, full_palette

from conftest import REPO


def test_demos_default_to_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert default_device() == 'cpu'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert default_device() == 'cuda:0'


def test_palette_is_kept_when_complete_else_fixed_random_colours():
    assert full_palette(['a', 'b'], [(1, 2, 3), (4, 5, 6)]) == [[1, 2, 3], [4, 5, 6]]
    made = full_palette(['a', 'b', 'c'], [(1, 2, 3)])  # one colour for three classes
    assert made == full_palette(['a', 'b', 'c']) and len(made) == 3
    assert all(len(c) == 3 and all(0 <= v < 256 for v in c) for c in made)


@pytest.mark.parametrize('config, classes', [
    ('configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py', 5),  # its metainfo
    ('configs/mask_rcnn/mask-rcnn_ravlt-t_fpn_amp-1x_coco.py', 80),  # CocoDataset's own
])
def test_classes_and_palette_of_the_config_dataset(config, classes):
    import ravlt_dense.datasets  # noqa: F401  the segmentation pipeline's transform
    meta = config_dataset_meta(Config.fromfile(REPO / config))
    assert len(meta['classes']) == len(meta['palette']) == classes
