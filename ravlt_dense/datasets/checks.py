"""Checks of the datasets a config names, with messages that say what to put where.

* ``check_datasets``: every annotation file and image folder exists, before the runner starts;
* ``build_datasets``: the runner's loops, and with them its datasets, built before the run,
  under ``explain_dataset_errors``: when building a dataset fails because a COCO-format
  annotation file names none of the config's classes (mmdet then drops every image and mmengine
  only says "need at least one array to concatenate"), the failure is re-raised with that
  reason. A failure of the run itself is left as it is.
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
        'For a small synthetic set in the ADE20K layout run `python tools/data/make_ade_shapes.py`.'),
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


def _preview(names: Sequence[str], limit: int) -> str:
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
            f'{_preview(categories, 8)}) and the classes of the config ({len(classes)}: '
            f'{_preview(classes, 8)}) have no name in common, so every image was dropped. Give '
            f'the dataset the annotation\'s class names, e.g. in the config: metainfo = '
            f'dict(classes=({_preview(categories, 3)})) passed to train/val/test_dataloader.'
            f'dataset.metainfo, and set num_classes of the heads to {len(categories)}; or fix '
            f'the category names in the annotation file.')
    return None


@contextlib.contextmanager
def explain_dataset_errors(cfg: Config):
    """Re-raise a failure of the wrapped run with the reason when the config's classes and an
    annotation file's categories do not overlap (checked only on failure: reading a large
    annotation file again costs time)."""
    try:
        yield
    except Exception as err:
        reason = find_class_mismatch(cfg)
        if reason is None:
            raise
        raise ValueError(reason) from err


def build_datasets(runner, cfg: Config, loops: Sequence[str]) -> None:
    """Build the ``loops`` of an mmengine runner ('train_loop', 'val_loop', 'test_loop') and so
    their datasets, which the runner would build first thing in ``train()`` / ``test()``,
    explaining a class mismatch there and only there: an error later in the run (an OOM hours
    in) is raised as it is, without re-reading every annotation file on every rank.

    Args:
        runner (Runner): A runner built from ``cfg`` (its loops are properties that build the
            loop, dataloader and dataset on first access).
        cfg (Config): Its config.
        loops (Sequence[str]): The loops the run will use.
    """
    with explain_dataset_errors(cfg):
        for loop in loops:
            getattr(runner, loop)
