"""ravlt_dense.datasets.checks: what a missing dataset says, the explanation given when a
dataset's categories miss the config's classes or its annotation file is broken JSON, and the
warning about annotations of no category."""
import json
import re
import shutil

import mmdet  # noqa: F401
import pytest
from mmengine.config import Config

from ravlt_dense.datasets.checks import check_datasets, find_broken_json, find_class_mismatch

from conftest import QUICKSTART, REPO, TINY_ARCH, load_script, run_tool, shapes_options


def test_missing_data_root_is_named_with_the_layout_to_provide(tmp_path):
    missing = tmp_path / 'nowhere'
    cfg = Config.fromfile(REPO / 'configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py')
    cfg.train_dataloader.dataset.data_root = str(missing)
    with pytest.raises(FileNotFoundError, match=f'{missing}/images/training does not exist'):
        check_datasets(cfg, loaders=('train_dataloader', ))
    cfg = Config.fromfile(REPO / 'configs/sem_fpn/fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512.py')
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


def train_on(root):
    """tools/train.py on the quick-start config with its COCO data under ``root``
    (annotations/instances_{train,val}.json written by the test); it must fail."""
    for split in ('train', 'val'):
        (root / split).mkdir()
    proc = run_tool(['tools/train.py', QUICKSTART, '--work-dir', root / 'work',
                     '--cfg-options', f'train_dataloader.dataset.data_root={root}/',
                     f'val_dataloader.dataset.data_root={root}/', 'train_dataloader.num_workers=0',
                     'train_dataloader.persistent_workers=False'], check=False)
    assert proc.returncode != 0
    return proc


def test_train_tool_reports_the_mismatch(tmp_path):
    write_coco(tmp_path / 'annotations' / 'instances_train.json', ['cat', 'dog'])
    write_coco(tmp_path / 'annotations' / 'instances_val.json', ['cat', 'dog'])
    proc = train_on(tmp_path)
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


# --------------------------------------------------------------------------------------------
# A broken annotation file, annotations of no category
# --------------------------------------------------------------------------------------------


def test_train_tool_names_a_json_file_cut_short(tmp_path):
    ann = tmp_path / 'annotations' / 'instances_train.json'
    write_coco(ann, ['circle', 'square', 'triangle', 'star'])
    text = ann.read_text()
    ann.write_text(text[:len(text) * 2 // 3])  # an interrupted copy
    write_coco(tmp_path / 'annotations' / 'instances_val.json', ['circle'])
    proc = train_on(tmp_path)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'ValueError: train_dataloader: the annotation file {ann} is not valid '
                           'JSON: '), proc.stderr[-2000:]
    assert re.search(r': line 1, column \d+ \(character \d+ of \d+\)\. The file ends before its '
                     r'JSON does \(\d+ bytes\): it is cut short', last), last
    assert 'JSONDecodeError' in proc.stderr  # json's own error stays in the traceback above


@pytest.mark.parametrize('text, message', [
    ('{"images": [], "annotations": [', r"Expecting value: line 1, column 32 \(character 31 "
     r"of 31\)\. The file ends before its JSON does \(31 bytes\): it is cut short"),
    ('{"images": [],\n "annotations": [1 2], "categories": []}', r"Expecting ',' delimiter: "
     r"line 2, column 20 \(character 34 of 55\)\. Fix the JSON there"),
    ('', r'Expecting value: line 1, column 1 \(character 0 of 0\)\. The file is empty'),
])
def test_broken_json_is_located(tmp_path, text, message):
    (tmp_path / 'ann.json').write_text(text)
    reason = find_broken_json(coco_config(tmp_path))
    assert re.fullmatch(rf'train_dataloader: the annotation file {tmp_path}/ann.json is not valid '
                        rf'JSON: {message}.*', reason), reason


def test_broken_evaluator_json_is_named(tmp_path):
    write_coco(tmp_path / 'ann.json', ['cat'])
    (tmp_path / 'val.json').write_text('{"images": [')
    cfg = coco_config(tmp_path)
    cfg.val_evaluator = dict(type='CocoMetric', ann_file=str(tmp_path / 'val.json'))
    assert find_broken_json(cfg).startswith(f'val_evaluator: the annotation file '
                                            f'{tmp_path}/val.json is not valid JSON')


def test_train_tool_warns_of_annotations_of_no_category(shapes, tmp_path):
    root = tmp_path / 'shapes'
    shutil.copytree(shapes, root)
    ann = root / 'annotations' / 'instances_train.json'
    coco = json.loads(ann.read_text())
    for annotation, category in zip(coco['annotations'], (99, 7, 99)):
        annotation['category_id'] = category
    ann.write_text(json.dumps(coco))
    proc = run_tool(['tools/train.py', QUICKSTART, '--work-dir', tmp_path / 'work',
                     '--cfg-options', *shapes_options(root), 'train_cfg.max_epochs=0'])
    log = proc.stdout + proc.stderr
    warning = (f'{ann}: 3 annotation(s) have a category_id that no entry of the file\'s '
               '"categories" has (category_id 7, 99); mmdet leaves them out')
    assert log.count(warning) == 1, log[-3000:]
    assert 'instances_val.json: ' not in log  # the whole file says nothing


def test_annotations_of_a_class_left_out_by_the_config_are_no_mistake(tmp_path):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    from ravlt_dense.tools.run_checks import unknown_categories
    write_coco(tmp_path / 'ann.json', ['cat', 'dog', 'bird'])
    init_default_scope('mmdet')
    dataset = dict(type='CocoDataset', data_root=str(tmp_path), ann_file='ann.json',
                   data_prefix=dict(img=''), metainfo=dict(classes=('cat', 'dog')), pipeline=[])
    assert unknown_categories(DATASETS.build(dataset)) is None  # 'bird' is in 'categories'
    coco = json.loads((tmp_path / 'ann.json').read_text())
    coco['annotations'][2]['category_id'] = 12
    (tmp_path / 'ann.json').write_text(json.dumps(coco))
    assert unknown_categories(DATASETS.build(dataset)) == (f'{tmp_path}/ann.json', {12: 1})


def test_train_tool_refuses_heads_of_another_class_count(shapes, tmp_path):
    # the quick-start Mask R-CNN has 4 classes, as its dataset; the COCO configs' heads have 80
    proc = run_tool(['tools/train.py', QUICKSTART, '--work-dir', tmp_path / 'work',
                     '--cfg-options', *shapes_options(shapes), 'train_cfg.max_epochs=1',
                     'model.roi_head.bbox_head.num_classes=80',
                     'model.roi_head.mask_head.num_classes=80'], check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        "ValueError: train_loop: the dataset has 4 classes ('circle', 'square', 'triangle', "
        "'star'), but model.roi_head.bbox_head.num_classes=80, "
        "model.roi_head.mask_head.num_classes=80. Set each of these to 4 (e.g. --cfg-options "
        "model.roi_head.bbox_head.num_classes=4 model.roi_head.mask_head.num_classes=4), or "
        "give the dataset the classes the model was made for (its metainfo)."), proc.stderr[-2000:]
    assert not list((tmp_path / 'work').rglob('*.pth'))


def test_heads_of_cascade_and_segmentation_models_are_named_by_their_config_keys():
    from types import SimpleNamespace

    from mmengine.config import Config

    from ravlt_dense.models import build_model
    from ravlt_dense.tools.run_checks import find_num_classes_mismatch, head_class_counts
    cfg = Config.fromfile(REPO / 'configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py')
    cfg.model.backbone.update(arch='t')
    model = build_model(cfg)
    assert head_class_counts(model) == {'model.decode_head.num_classes': 5}
    dataset = SimpleNamespace(metainfo=dict(classes=tuple('abcde')))
    assert find_num_classes_mismatch(model, {'test_loop': dataset}) is None
    dataset.metainfo['classes'] += ('f', )
    assert 'but model.decode_head.num_classes=5' in find_num_classes_mismatch(
        model, {'test_loop': dataset})
    cfg = Config.fromfile(
        REPO / 'configs/cascade_rcnn/cascade-mask-rcnn_ravlt-s_fpn_amp-ms-crop-3x_coco.py')
    cfg.model.backbone.update(arch=TINY_ARCH, init_cfg=None)
    cfg.model.neck.in_channels = TINY_ARCH['embed_dims']
    counts = head_class_counts(build_model(cfg))
    assert counts['model.roi_head.bbox_head.2.num_classes'] == 80
    assert not any('rpn_head' in key for key in counts)
