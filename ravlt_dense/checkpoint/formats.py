"""The release's checkpoint formats and ours, and the conversions between them.

The release ships three kinds of files:
  * ImageNet classification: ``{'model': state_dict}`` with a classification head
    (``proj.*``, ``norm.*``, ``head.*``) and no output norms (``extra_norms.*``);
  * detection (mmdet 2.x) and segmentation (mmseg 0.x): ``{'state_dict': ..., 'meta': ...}``
    whose backbone keys carry a ``backbone.`` prefix.
Backbone keys are the same in all of them and in our ``RAVLT`` (``layers.0.RoPE.angle``, ...).
"""
from typing import Dict, List, Optional, Tuple

import torch

# Top-level modules of the classification model that the dense backbone does not have.
CLASSIFICATION_ONLY = ('proj', 'norm', 'head')


def unwrap_state_dict(checkpoint: dict) -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file of any of the release's formats or ours."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'Expected a checkpoint dict, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise ValueError(f"No state dict found in the checkpoint (top-level keys: "
                   f"{sorted(checkpoint)[:10]}); expected 'state_dict' or 'model'")


def strip_module_prefix(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state_dict`` without the ``module.`` prefix that (Distributed)DataParallel adds.

    Args:
        state_dict (dict[str, Tensor]): Weights, with or without the prefix.
    """
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state_dict.items()}


def to_backbone_state_dict(state_dict: Dict[str, torch.Tensor], prefix: Optional[str] = None
                           ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Backbone weights keyed as ``RAVLT`` expects, and the names of the keys left out.

    Keys under ``prefix`` (default ``backbone.`` when any key has it, as in detection and
    segmentation files) are kept with the prefix stripped; the classification head is left out.
    """
    state_dict = strip_module_prefix(state_dict)
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        if not prefix.endswith('.'):
            prefix += '.'
        kept = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not kept:
            raise ValueError(f'No key starts with the prefix {prefix!r} in the checkpoint')
        dropped = [k for k in state_dict if not k.startswith(prefix)]
        state_dict = kept
    else:
        dropped = [k for k in state_dict if k.split('.', 1)[0] in CLASSIFICATION_ONLY]
        state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    return state_dict, dropped


def infer_arch(state_dict: Dict[str, torch.Tensor], arch_zoo: Dict[str, dict]) -> str:
    """The name of the variant whose shapes a RAVLT backbone state dict has.

    Args:
        state_dict (dict[str, Tensor]): Backbone weights (``layers.0.blocks.0.pos.weight``...).
        arch_zoo (dict[str, dict]): The variants, ``RAVLT.arch_zoo``; the first name of a
            variant is returned ('t' rather than 'tiny').

    Raises:
        ValueError: not a RAVLT state dict, or no variant has its widths and depths.
    """
    dims, depths = [], []
    for i in range(4):
        blocks = {int(k.split('.')[3]) for k in state_dict
                  if k.startswith(f'layers.{i}.blocks.') and k.split('.')[3].isdigit()}
        pos = state_dict.get(f'layers.{i}.blocks.0.pos.weight')
        if pos is None or not blocks:
            raise ValueError(f'Not a RAVLT backbone state dict: no layers.{i}.blocks.* keys')
        dims.append(pos.shape[0])
        depths.append(max(blocks) + 1)
    for name, arch in arch_zoo.items():
        if list(arch['embed_dims']) == dims and list(arch['depths']) == depths:
            return name
    raise ValueError(f'No RAVLT variant has embed_dims={dims} and depths={depths} (known: '
                     f'{", ".join(arch_zoo)})')


def release_dataset_meta(checkpoint: dict) -> Optional[dict]:
    """``dataset_meta`` (lower-case keys) of our checkpoints or the release's (``CLASSES``,
    ``PALETTE`` of mmdet 2.x / mmseg 0.x); None when the file names no classes."""
    meta = checkpoint.get('meta') or {}
    if isinstance(meta.get('dataset_meta'), dict):
        return {k.lower(): v for k, v in meta['dataset_meta'].items()}
    if meta.get('CLASSES'):
        found = dict(classes=tuple(meta['CLASSES']))
        if meta.get('PALETTE'):
            found['palette'] = [list(c) for c in meta['PALETTE']]
        return found
    return None


def convert_release_checkpoint(checkpoint: dict) -> dict:
    """A whole-model checkpoint of the release (mmdet 2.x / mmseg 0.x) or ours, in our format:
    ``dict(state_dict=..., meta=dict(dataset_meta=...))``.

    What differs between the formats is converted: the weights may sit under ``state_dict`` or
    ``model`` and carry the ``module.`` prefix of (Distributed)DataParallel; the release names
    its classes ``meta['CLASSES']`` / ``meta['PALETTE']`` where mmdet 3.x / mmseg 1.x read
    ``meta['dataset_meta']`` (``classes``, ``palette``). No parameter is renamed: the heads the
    release uses (FPN, RPN, Shared2FC bbox head, FCN mask head, RetinaHead, Cascade RoI heads,
    UPerHead, FPNHead, FCN auxiliary head) kept their names across the version change; the
    strict check against the built model (:func:`load_model_checkpoint`) is what guarantees
    that nothing is skipped.

    Args:
        checkpoint (dict): A loaded checkpoint file.
    """
    dataset_meta = release_dataset_meta(checkpoint)
    return dict(state_dict=strip_module_prefix(unwrap_state_dict(checkpoint)),
                meta=dict(dataset_meta=dataset_meta) if dataset_meta else {})
