"""ravlt_dense.datasets.checks: what a missing dataset says, and the explanation given when a
dataset's categories miss the config's classes."""
import json

import mmdet  # noqa: F401
import pytest
from mmengine.config import Config

from conftest import QUICKSTART, REPO, load_script, run_tool
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


class RunnerFailingLate:
    """Stands in for mmengine's Runner: its loops (and with them the datasets) build, then the
    run fails as an out-of-memory error hours in would."""
    built = []
    model = None

    @classmethod
    def from_cfg(cls, cfg):
        return cls()

    def __getattr__(self, loop):  # train_loop, val_loop, test_loop: mmengine builds on access
        if not loop.endswith('_loop'):
            raise AttributeError(loop)
        self.built.append(loop)
        return object()

    def run(self):
        raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')

    train = test = run


@pytest.mark.parametrize('tool, args', [('tools/train.py', []),
                                        ('tools/test.py', ['ckpt.pth'])])
def test_a_failure_after_the_datasets_are_built_is_not_explained(tool, args, tmp_path,
                                                                 monkeypatch):
    """The class-mismatch diagnosis (which re-reads every annotation file, on every rank) runs
    only when building the datasets fails, not after an error in the run itself."""
    from ravlt_dense.datasets import checks
    script = load_script(tool)
    diagnosed = []
    monkeypatch.setattr(checks, 'find_class_mismatch',
                        lambda cfg: diagnosed.append(cfg) or 'the classes do not match')
    monkeypatch.setattr(script, 'Runner', RunnerFailingLate)
    monkeypatch.setattr(script, 'check_datasets', lambda cfg, loaders: None)
    monkeypatch.setattr(script, 'load_model_checkpoint', lambda *a, **k: None, raising=False)
    (tmp_path / 'ckpt.pth').write_bytes(b'')
    args = [str(tmp_path / a) for a in args]
    monkeypatch.setattr('sys.argv', [tool, QUICKSTART, *args, '--work-dir', str(tmp_path)])
    RunnerFailingLate.built = []
    with pytest.raises(RuntimeError, match='CUDA out of memory'):
        script.main()
    assert diagnosed == []
    assert RunnerFailingLate.built  # the datasets were built first, inside the explanation


def test_a_failure_building_the_datasets_is_explained(tmp_path, monkeypatch):
    from ravlt_dense.datasets import checks

    class RunnerWithEmptyDataset(RunnerFailingLate):
        def __getattr__(self, loop):
            raise ValueError('need at least one array to concatenate')

    script = load_script('tools/train.py')
    monkeypatch.setattr(checks, 'find_class_mismatch', lambda cfg: 'the classes do not match')
    monkeypatch.setattr(script, 'Runner', RunnerWithEmptyDataset)
    monkeypatch.setattr(script, 'check_datasets', lambda cfg, loaders: None)
    monkeypatch.setattr('sys.argv', ['tools/train.py', QUICKSTART, '--work-dir', str(tmp_path)])
    with pytest.raises(ValueError, match='^the classes do not match$'):
        script.main()
