"""Loading a checkpoint into a built model, strictly: every missing, unexpected or mis-shaped
key is named, nothing is skipped silently."""
import logging
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log

from .download import is_url
from .formats import convert_release_checkpoint, to_backbone_state_dict, unwrap_state_dict
from .safe_load import load_checkpoint_file


def check_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor],
                     allow_missing: Tuple[str, ...] = ()) -> Dict[str, List[str]]:
    """Missing, unexpected and mis-shaped keys of ``state_dict`` against ``model``.

    Missing keys that start with one of ``allow_missing`` are reported under 'new'.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    report = {
        'missing': [k for k in missing if not k.startswith(allow_missing)],
        'new': [k for k in missing if k.startswith(allow_missing)],
        'unexpected': [k for k in state_dict if k not in own],
        'mismatched': [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                       for k, v in state_dict.items() if k in own and v.shape != own[k].shape],
    }
    return report


def format_report(report: Dict[str, List[str]], limit: int = 20) -> str:
    lines = []
    for kind in ('missing', 'unexpected', 'mismatched'):
        keys = report.get(kind, [])
        if keys:
            shown = ', '.join(keys[:limit]) + (f', ... ({len(keys) - limit} more)'
                                               if len(keys) > limit else '')
            lines.append(f'{len(keys)} {kind} key(s): {shown}')
    return '\n'.join(lines)


def fit_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor],
                   name: str, what: str) -> None:
    """Raise ValueError naming every missing, unexpected and mis-shaped key of ``state_dict``
    (from ``name``) against ``model`` (described by ``what``)."""
    problems = format_report(check_state_dict(model, state_dict))
    if problems:
        raise ValueError(f'{name} does not fit {what}:\n{problems}')


def load_backbone_checkpoint(model: torch.nn.Module, filename: str,
                             prefix: Optional[str] = None, logger: str = 'current') -> None:
    """Load a RAVLT checkpoint into ``model`` strictly; raise naming every key that does not fit.

    The output norms (``extra_norms``) are the only keys allowed to be missing: ImageNet
    checkpoints have none, so they start from their initialisation (logged).
    """
    hint = ('point the config at a local copy with --cfg-options '
            'model.backbone.init_cfg.checkpoint=PATH')
    found = find_checkpoint(str(filename))  # a file, a URL, or a zoo name: its weights' URL
    if found is None:
        raise FileNotFoundError(
            f'RAVLT checkpoint not found: {filename}. Give the ImageNet weights of the variant '
            f'(a file, their URL or their zoo name such as ravlt-s_in1k: see README, '
            f'"Checkpoints"), or set model.backbone.init_cfg=None to train from scratch.')
    checkpoint = load_checkpoint_file(found, hint, logger)
    state_dict, dropped = to_backbone_state_dict(unwrap_state_dict(checkpoint), prefix)
    if dropped:
        print_log(f'RAVLT: left out {len(dropped)} key(s) that are not part of the backbone '
                  f'({", ".join(sorted({k.split(".")[0] for k in dropped}))})', logger=logger)
    # Output norms of stages that are not returned do not exist in the model.
    unused = [k for k in state_dict if k.startswith('extra_norms.') and k not in
              model.state_dict()]
    for k in unused:
        state_dict.pop(k)
    report = check_state_dict(model, state_dict, allow_missing=('extra_norms.', ))
    problems = format_report(report)
    if problems:
        raise ValueError(f'Checkpoint {filename} does not fit RAVLT({model.arch}):\n{problems}\n'
                       f'Check that the checkpoint is a RAVLT one of the same variant (arch).')
    model.load_state_dict(state_dict, strict=False)
    if report['new']:
        print_log(f'RAVLT: {len(report["new"])} output-norm key(s) not in the checkpoint keep '
                  f'their initialisation (expected for ImageNet checkpoints)', logger=logger)
    print_log(f'RAVLT: loaded {len(state_dict)} tensors from {filename}', logger=logger)


def find_checkpoint(checkpoint: str) -> Optional[str]:
    """The file or http(s) URL of a checkpoint given as a path, a URL or a name of the model
    zoo (configs/metafile.yml: its weights URL); None when it is none of these."""
    if is_url(checkpoint) or osp.isfile(checkpoint):
        return checkpoint
    from ravlt_dense import zoo
    try:
        names = zoo.models()
    except FileNotFoundError:  # installed without the repository's configs/
        return None
    return zoo.weights_url(checkpoint) if zoo.current_name(checkpoint) in names else None


def resolve_checkpoint(checkpoint: str) -> str:
    """:func:`find_checkpoint`, with a FileNotFoundError when ``checkpoint`` is none of these."""
    found = find_checkpoint(checkpoint)
    if found is None:
        raise FileNotFoundError(f'Checkpoint not found: {checkpoint} (neither a file, an http(s) '
                                f'URL nor a model of the zoo in configs/metafile.yml)')
    return found


def load_model_checkpoint(model: torch.nn.Module, checkpoint: str, strict: bool = True,
                          what: str = 'the model',
                          hint: str = 'give the path of a local copy instead') -> dict:
    """Load a whole detector's or segmentor's checkpoint into ``model``: the one loader of
    tools/test.py, the demos and tools/deployment/export_onnx.py.

    Args:
        model (nn.Module): The built model (or its DDP wrapper).
        checkpoint (str): A file, an http(s) URL (downloaded once into the torch hub cache and
            checked, see :func:`load_checkpoint_file`) or a name of the model zoo; ours or the
            authors' (mmdet 2.x / mmseg 0.x), converted on load (:func:`convert_release_
            checkpoint`).
        strict (bool): Refuse a checkpoint with missing, unexpected or mis-shaped keys, with
            a ValueError naming them (default). False loads the keys that fit and logs the
            same report as a warning (what mmengine's ``load_from`` does).
        what (str): The model, as the messages name it (e.g. 'the model of CONFIG').
        hint (str): How else to give the file, appended to a download error.

    Returns:
        dict: The converted checkpoint, ``dict(state_dict=..., meta=dict(dataset_meta=...))``.
    """
    from mmengine.model import is_model_wrapper
    converted = convert_release_checkpoint(
        load_checkpoint_file(resolve_checkpoint(checkpoint), hint))
    model = model.module if is_model_wrapper(model) else model
    state_dict = converted['state_dict']
    if strict:
        fit_state_dict(model, state_dict, f'Checkpoint {checkpoint}', what)
    else:
        problems = format_report(check_state_dict(model, state_dict))
        if problems:
            print_log(f'Checkpoint {checkpoint} does not fit {what}; loading the keys that fit '
                      f'(strict=False):\n{problems}', logger='current', level=logging.WARNING)
            own = model.state_dict()
            state_dict = {k: v for k, v in state_dict.items()
                          if k in own and v.shape == own[k].shape}
    model.load_state_dict(state_dict, strict=False)  # every key checked above
    print_log(f'Loaded {len(state_dict)} tensors from {checkpoint} into {what}',
              logger='current')
    return converted
