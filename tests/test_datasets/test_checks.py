"""ravlt_dense.datasets.checks: what a missing dataset says, and the explanation given when a
dataset's categories miss the config's classes."""
import json

import mmdet  # noqa: F401
import pytest
from mmengine.config import Config

from conftest import QUICKSTART, REPO, run_tool
from ravlt_dense.datasets.checks import check_datasets, find_class_mismatch


def test_missing_data_root_is_named_with_the_layout_to_provide(tmp_path):
    missing = tmp_path / 'nowhere'
    cfg = Config.fromfile(REPO / 'configs/quickstart/fpn_ravlt_t_shapes.py')
    cfg.train_dataloader.dataset.data_root = str(missing)
    with pytest.raises(FileNotFoundError, match=f'{missing}/images/training does not exist'):
        check_datasets(cfg, loaders=('train_dataloader', ))
    cfg = Config.fromfile(REPO / 'configs/fpn_ravlt_t_ade20k.py')
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'ADEChallengeData2016')
    with pytest.raises(FileNotFoundError, match=r'ADEChallengeData2016/images/training does not '
                       r'exist.*\n.*data/ade/ADEChallengeData2016/.*make_ade_shapes'):
        check_datasets(cfg, loaders=('train_dataloader', ))


def write_coco(path, names):
    """A minimal COCO-format annotation file with one image and one box per category."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cats = [dict(id=i + 1, name=n) for i, n in enumerate(names)]
    anns = [dict(id=i + 1, image_id=1, category_id=c['id'], bbox=[1, 1, 10, 10], area=100,
                 iscrowd=0) for i, c in enumerate(cats)]
    path.write_text(json.dumps(dict(images=[dict(id=1, file_name='a.jpg', width=32, height=32)],
                                    annotations=anns, categories=cats)))


def coco_config(root, classes=None):
    dataset = dict(type='CocoDataset', data_root=str(root), ann_file='ann.json')
    if classes is not None:
        dataset['metainfo'] = dict(classes=classes)
    return Config(dict(default_scope='mmdet', train_dataloader=dict(dataset=dataset)))


def test_no_common_class_is_explained(tmp_path):
    write_coco(tmp_path / 'ann.json', ['cat', 'dog'])
    reason = find_class_mismatch(coco_config(tmp_path, classes=('car', 'bus')))
    assert "train_dataloader: the categories of" in reason
    assert "(2: 'cat', 'dog')" in reason and "(2: 'car', 'bus')" in reason
    assert 'metainfo = dict(classes=(' in reason and 'num_classes of the heads to 2' in reason


def test_default_classes_of_the_dataset_type_are_compared(tmp_path):
    # No metainfo: CocoDataset's own 80 classes are the config's classes.
    write_coco(tmp_path / 'ann.json', ['cat_x', 'dog_x'])
    assert "(80: 'person', 'bicycle'" in find_class_mismatch(coco_config(tmp_path))
    write_coco(tmp_path / 'ann.json', ['person', 'kangaroo'])  # one shared name is enough
    assert find_class_mismatch(coco_config(tmp_path)) is None


def test_train_tool_reports_the_mismatch(tmp_path):
    write_coco(tmp_path / 'annotations' / 'instances_train.json', ['cat', 'dog'])
    write_coco(tmp_path / 'annotations' / 'instances_val.json', ['cat', 'dog'])
    for split in ('train', 'val'):
        (tmp_path / split).mkdir()
    root = f'{tmp_path}/'
    proc = run_tool(['tools/train.py', QUICKSTART, '--work-dir', tmp_path / 'work',
                     '--cfg-options', f'train_dataloader.dataset.data_root={root}',
                     f'val_dataloader.dataset.data_root={root}', 'train_dataloader.num_workers=0',
                     'train_dataloader.persistent_workers=False'], check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('ValueError: train_dataloader: the categories of'), proc.stderr[-2000:]
    assert "('circle', 'square', 'triangle', 'star')" not in last  # config shown, not as a fix
    assert "'circle', 'square', 'triangle', 'star'" in last and "'cat', 'dog'" in last
