"""Checks of the datasets a config names, with messages that say what to put where.

* ``check_datasets``: every annotation file and image folder exists, before the runner starts;
* ``explain_dataset_errors``: when building a dataset fails because a JSON annotation file is
  cut short or broken (json only says where, not in which file), or because a COCO-format
  annotation file names none of the config's classes (mmdet then drops every image and
  mmengine only says "need at least one array to concatenate"), the failure is re-raised with
  that reason.

The checks of a built runner (its datasets against its model) are
``ravlt_dense.tools.run_checks``'.
"""
import contextlib
import json
import os.path as osp
from typing import Iterator, Optional, Sequence, Tuple

from mmengine.config import Config

# What a missing dataset should look like, by dataset type.
DATASET_HELP = {
    'CocoDataset': (
        'Put COCO 2017 at data/coco/ in the standard layout: data/coco/annotations/'
        'instances_{train,val}2017.json, data/coco/train2017/, data/coco/val2017/ (or symlink '
        'data/coco to it), or point the config at it with --cfg-options '
        'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=... '
        'test_dataloader.dataset.data_root=... For a small synthetic set in COCO format run '
        '`python tools/data/make_coco_shapes.py`.'),
    'ADE20KDataset': (
        'Put ADE20K (ADEChallengeData2016) at data/ade/ADEChallengeData2016/ in the standard '
        'layout: images/{training,validation}/*.jpg and annotations/{training,validation}/*.png, '
        'or point the config at it with --cfg-options train_dataloader.dataset.data_root=... '
        'For a small synthetic set in the ADE20K layout run '
        '`python tools/data/make_ade_shapes.py`.'),
    # the quick-start configs' datasets
    'BaseSegDataset': 'The quick-start set is made by `python tools/data/make_ade_shapes.py` '
                      '(writes data/ade_shapes).',
}


def _datasets(cfg: Config) -> Iterator[Tuple[str, dict]]:
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset')
        stack = [dataset] if dataset else []
        while stack:  # unwrap RepeatDataset / ConcatDataset / MultiImageMixDataset ...
            ds = stack.pop()
            if ds.get('dataset'):
                stack.append(ds['dataset'])
            elif ds.get('datasets'):
                stack.extend(ds['datasets'])
            else:
                yield loader, ds


def check_datasets(cfg: Config, loaders=('train_dataloader', 'val_dataloader',
                                         'test_dataloader')) -> None:
    """Raise FileNotFoundError naming the missing path and how to provide the dataset."""
    for loader, ds in _datasets(cfg):
        if loader not in loaders:
            continue
        root = ds.get('data_root') or ''
        paths = []
        if ds.get('ann_file'):
            paths.append(osp.join(root, ds['ann_file']))
        for prefix in (ds.get('data_prefix') or {}).values():
            if isinstance(prefix, str) and prefix:
                paths.append(osp.join(root, prefix))
        if not paths and root:
            paths.append(root)
        for path in paths:
            if not osp.exists(path):
                hint = DATASET_HELP.get(ds.get('type'), 'Check data_root and ann_file/data_prefix '
                                        'of the dataset in the config.')
                raise FileNotFoundError(
                    f'{loader}: {ds.get("type", "dataset")} not found: {path} does not exist '
                    f'(data_root={root!r}).\n{hint}')


def dataset_metainfo(cfg: Config, dataset: dict) -> dict:
    """The metainfo (classes, palette...) a dataset of the config gets: its own ``metainfo``
    over the METAINFO of its type (e.g. COCO's 80 classes for a plain ``CocoDataset``).

    Args:
        cfg (Config): The config (its ``default_scope`` picks the dataset registry).
        dataset (dict): One dataset of it (``type``, optional ``metainfo``).
    """
    from mmengine.registry import DATASETS
    with DATASETS.switch_scope_and_registry(cfg.get('default_scope', 'mmdet')) as registry:
        dataset_cls = registry.get(dataset.get('type', ''))
    return {**getattr(dataset_cls, 'METAINFO', {}), **(dataset.get('metainfo') or {})}


def preview(names: Sequence[str], limit: int) -> str:
    """The first ``limit`` names, quoted, then '...' if there are more."""
    names = list(names)
    return ', '.join(map(repr, names[:limit])) + (', ...' if len(names) > limit else '')


def find_class_mismatch(cfg: Config) -> Optional[str]:
    """Why the datasets of ``cfg`` are empty, if a COCO-format annotation file shares no category
    name with the config's classes (mmdet then drops every image, and mmengine only says "need
    at least one array to concatenate"); None when every annotation file fits."""
    for loader, ds in _datasets(cfg):
        ann_file = osp.join(ds.get('data_root') or '', ds.get('ann_file') or '')
        if not ann_file.endswith('.json') or not osp.isfile(ann_file):
            continue
        classes = dataset_metainfo(cfg, ds).get('classes')
        try:
            with open(ann_file) as f:
                categories = [c['name'] for c in json.load(f).get('categories', [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a COCO-format file: nothing to compare
        if classes is None or set(classes) & set(categories):
            continue
        return (
            f'{loader}: the categories of {ann_file} ({len(categories)}: '
            f'{preview(categories, 8)}) and the classes of the config ({len(classes)}: '
            f'{preview(classes, 8)}) have no name in common, so every image was dropped. Give '
            f'the dataset the annotation\'s class names, e.g. in the config: metainfo = '
            f'dict(classes=({preview(categories, 3)})) passed to train/val/test_dataloader.'
            f'dataset.metainfo, and set num_classes of the heads to {len(categories)}; or fix '
            f'the category names in the annotation file.')
    return None


def _json_annotation_files(cfg: Config) -> Iterator[Tuple[str, str]]:
    """(where, path) of the JSON annotation files the config names: its datasets' ``ann_file``
    and its evaluators' (mmdet's CocoMetric reads the val/test annotations itself)."""
    for loader, ds in _datasets(cfg):
        if str(ds.get('ann_file') or '').endswith('.json'):
            yield loader, osp.join(ds.get('data_root') or '', ds['ann_file'])
    for name in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(name) or []
        for evaluator in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
            if str(evaluator.get('ann_file') or '').endswith('.json'):
                yield name, evaluator['ann_file']


def find_broken_json(cfg: Config) -> Optional[str]:
    """What is wrong with the first JSON annotation file of ``cfg`` that does not parse (json's
    own error names no file): where it breaks, and whether the file is cut short; None when all
    parse."""
    seen = set()
    for where, path in _json_annotation_files(cfg):
        if path in seen or not osp.isfile(path):
            continue
        seen.add(path)
        try:
            with open(path, encoding='utf-8') as f:
                json.load(f)
        except json.JSONDecodeError as err:
            size = osp.getsize(path)
            place = (f'{err.msg}: line {err.lineno}, column {err.colno} (character {err.pos} '
                     f'of {len(err.doc)})')
            if not err.doc.strip():
                fix = (f'The file is empty ({size} bytes): write, copy or download it again.')
            elif err.pos >= len(err.doc.rstrip()) or err.msg.startswith('Unterminated string'):
                fix = (f'The file ends before its JSON does ({size} bytes): it is cut short '
                       '(an interrupted download, copy or write). Copy, download or generate it '
                       'again.')
            else:
                fix = 'Fix the JSON there, or copy or download the file again.'
            return f'{where}: the annotation file {path} is not valid JSON: {place}. {fix}'
        except (OSError, UnicodeDecodeError):
            continue
    return None


def _caused_by(err: BaseException, kind: type) -> bool:
    """Whether ``err`` is, or was raised from or while handling, an exception of ``kind``."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def explain_dataset_errors(cfg: Config):
    """Re-raise a failure of the wrapped run with the reason when a JSON annotation file does
    not parse (naming it and where it breaks), or when the config's classes and an annotation
    file's categories do not overlap (checked only on failure: reading a large annotation file
    again costs time)."""
    try:
        yield
    except Exception as err:
        reason = find_broken_json(cfg) if _caused_by(err, json.JSONDecodeError) else None
        if reason is None:
            reason = find_class_mismatch(cfg)
        if reason is None:
            raise
        raise ValueError(reason) from err
