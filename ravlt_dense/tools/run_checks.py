"""Checks of a built runner before its run: its datasets against the files and the model.

``build_datasets`` builds the runner's loops, and with them its datasets, before the run, under
``ravlt_dense.datasets.checks.explain_dataset_errors`` (a broken JSON file or a class mismatch
named; a failure of the run itself is left as it is). Once built, annotations whose
category_id no entry of their file's ``categories`` has (mmdet drops them) are counted and
named in a warning; a head whose ``num_classes`` is not the dataset's number of classes is an
error that names both numbers and the config keys to set.
"""
import json
import logging
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.logging import print_log

from ravlt_dense.datasets.checks import explain_dataset_errors, preview


def _built_datasets(runner, loops: Sequence[str]) -> Iterator[object]:
    """The datasets of the runner's built ``loops``, unwrapped from RepeatDataset,
    ConcatDataset, MultiImageMixDataset and the like."""
    stack = []
    for loop in loops:
        dataloader = getattr(getattr(runner, loop, None), 'dataloader', None)
        if getattr(dataloader, 'dataset', None) is not None:
            stack.append(dataloader.dataset)
    while stack:
        dataset = stack.pop()
        if getattr(dataset, 'datasets', None):
            stack.extend(dataset.datasets)
        elif getattr(dataset, 'dataset', None) is not None:
            stack.append(dataset.dataset)
        else:
            yield dataset


def unknown_categories(dataset) -> Optional[Tuple[str, Dict[int, int]]]:
    """The annotation file of a built COCO-format dataset and, by category_id, how many of its
    annotations have a category_id that no entry of the file's ``categories`` has (mmdet drops
    them without a word); None when there are none.

    mmdet's CocoDataset keeps ``cat_img_map`` (category_id -> one image id per annotation) and
    ``cat_ids`` (the ids of the config's classes): when every used id is one of those, nothing
    is read. Otherwise the file's ``categories`` decide, read once more.
    """
    used = getattr(dataset, 'cat_img_map', None)
    ann_file = str(getattr(dataset, 'ann_file', '') or '')
    if not used or not ann_file.endswith('.json') or not osp.isfile(ann_file):
        return None
    others = set(used) - set(getattr(dataset, 'cat_ids', None) or [])
    if not others:
        return None
    try:
        with open(ann_file, encoding='utf-8') as f:
            known = {c['id'] for c in json.load(f).get('categories', [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    unknown = {cat_id: len(used[cat_id]) for cat_id in sorted(
        others - known, key=lambda i: (not isinstance(i, int), i if isinstance(i, int) else 0,
                                       str(i)))}
    return (ann_file, unknown) if unknown else None


def warn_unknown_categories(runner, loops: Sequence[str]) -> List[str]:
    """Log one warning per annotation file whose annotations have category_ids that no entry
    of its ``categories`` has: how many, which ids, the file. Returns the warnings."""
    warnings, seen = [], set()
    for dataset in _built_datasets(runner, loops):
        found = unknown_categories(dataset)
        if found is None or found[0] in seen:
            continue
        ann_file, unknown = found
        seen.add(ann_file)
        count = sum(unknown.values())
        ids = ', '.join(map(str, list(unknown)[:20])) + (', ...' if len(unknown) > 20 else '')
        warnings.append(
            f'{ann_file}: {count} annotation(s) have a category_id that no entry of the file\'s '
            f'"categories" has (category_id {ids}); mmdet leaves them out, so these objects are '
            'neither trained on nor evaluated. Add the categories to the file, or correct the '
            'ids of the annotations.')
        print_log(warnings[-1], logger='current', level=logging.WARNING)
    return warnings


def head_class_counts(model) -> Dict[str, int]:
    """Config key -> ``num_classes`` of every head of ``model`` that classifies into the
    dataset's classes: the RPN (class-agnostic by design) and mmdet's FusedSemanticHead (stuff
    classes of another annotation) are left out, as mmdet's NumClassCheckHook leaves them."""
    counts = {}
    model = getattr(model, 'module', model)  # unwrapped from (Distributed)DataParallel
    for name, module in model.named_modules() if model is not None else ():
        num_classes = getattr(module, 'num_classes', None)
        if not name or not isinstance(num_classes, int) or name.endswith('rpn_head') \
                or type(module).__name__ == 'FusedSemanticHead':
            continue
        # as --cfg-options names it (a list's items by index: roi_head.bbox_head.0)
        counts[f'model.{name}.num_classes'] = num_classes
    return counts


def find_num_classes_mismatch(model, datasets: Dict[str, object]) -> Optional[str]:
    """Why the heads of ``model`` cannot learn the classes of ``datasets`` (loop name ->
    built dataset): a head with another ``num_classes`` than the dataset has classes (mmdet
    and mmseg train such a head without a word, its extra outputs never a target, or the
    dataset's labels out of its range); None when every head fits."""
    heads = head_class_counts(model)
    for loop, dataset in datasets.items():
        classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
        if not classes:
            continue
        wrong = {key: n for key, n in heads.items() if n != len(classes)}
        if wrong:
            keys = ', '.join(f'{key}={n}' for key, n in wrong.items())
            return (
                f'{loop}: the dataset has {len(classes)} classes ({preview(classes, 6)}), but '
                f'{keys}. Set {"each of these" if len(wrong) > 1 else "it"} to {len(classes)} '
                f'(e.g. --cfg-options {" ".join(f"{key}={len(classes)}" for key in wrong)}), '
                f'or give the dataset the classes the model was made for (its metainfo).')
    return None


def build_datasets(runner, cfg: Config, loops: Sequence[str]) -> None:
    """Build the ``loops`` of an mmengine runner ('train_loop', 'val_loop', 'test_loop') and so
    their datasets, which the runner would build first thing in ``train()`` / ``test()``,
    explaining a broken JSON annotation file or a class mismatch there and only there: an error
    later in the run (an OOM hours in) is raised as it is, without re-reading every annotation
    file on every rank. Then warns of annotations whose category is in no entry of their
    file's ``categories`` (:func:`warn_unknown_categories`).

    Args:
        runner (Runner): A runner built from ``cfg`` (its loops are properties that build the
            loop, dataloader and dataset on first access).
        cfg (Config): Its config.
        loops (Sequence[str]): The loops the run will use.
    """
    with explain_dataset_errors(cfg):
        for loop in loops:
            getattr(runner, loop)
    # (a custom loop may have no dataloader of its own)
    datasets = {loop: getattr(getattr(getattr(runner, loop), 'dataloader', None), 'dataset', None)
                for loop in loops}
    mismatch = find_num_classes_mismatch(runner.model, datasets)
    if mismatch:
        raise ValueError(mismatch)
    warn_unknown_categories(runner, loops)
