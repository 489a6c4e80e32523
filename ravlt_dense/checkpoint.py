"""Loading the authors' RAVLT checkpoints (and ours) with nothing skipped silently.

The release ships three kinds of files:
  * ImageNet classification: ``{'model': state_dict}`` with a classification head
    (``proj.*``, ``norm.*``, ``head.*``) and no output norms (``extra_norms.*``);
  * detection (mmdet 2.x) and segmentation (mmseg 0.x): ``{'state_dict': ..., 'meta': ...}``
    whose backbone keys carry a ``backbone.`` prefix.
Backbone keys are the same in all of them and in our ``RAVLT`` (``layers.0.RoPE.angle``, ...).

Files may be given by path or by http(s) URL. URLs are downloaded once into the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, where mmengine and torch.hub put them too); a failed download
and a corrupt (e.g. truncated) file each raise an error that says what to do, and a corrupt
download is removed from the cache rather than loaded.
"""
import argparse
import collections
import http.client
import logging
import os
import os.path as osp
import pickle
import zipfile
from typing import Dict, List, Optional, Tuple
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

# Top-level modules of the classification model that the dense backbone does not have.
CLASSIFICATION_ONLY = ('proj', 'norm', 'head')


def register_safe_globals() -> None:
    """Allow the plain-data types found in mmengine and the release's checkpoints.

    torch >= 2.6 unpickles checkpoints with ``weights_only=True``; mmengine 0.10.7 files hold
    its message hub (HistoryBuffer with numpy arrays) and the release's hold argparse
    namespaces, so resuming or loading them would fail. These types carry data, not code.

    Each is registered as an (object, 'dotted.name') pair, the name being the one a pickle
    refers to it by: the fork's mmengine (onedl-mmengine 0.10.12) loads inside
    ``torch.serialization.safe_globals([HistoryBuffer, np.ndarray, ...])``, whose exit removes
    those very objects from torch's registered set (a set difference); a pair is another
    element of that set and survives. Last, mmengine's loader of local files is replaced by a
    weights-only one that never falls back to unpickling code (:func:`register_checkpoint_
    loaders`): ``import ravlt_dense`` calls this once.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    types = [HistoryBuffer, argparse.Namespace, collections.OrderedDict, collections.defaultdict,
             slice, np.ndarray, np.dtype, type(np.dtype('float64')), type(np.dtype('float32')),
             type(np.dtype('int64')), type(np.dtype('int32')), type(np.dtype('uint32')),
             type(np.dtype('bool'))]
    safe = [(t, f'{t.__module__}.{t.__qualname__}') for t in types]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            multiarray = __import__(module, fromlist=['_reconstruct', 'scalar'])
        except ImportError:
            continue
        # numpy 2 keeps a ``numpy.core`` alias whose functions are named under numpy._core;
        # register under both names, as pickles written by numpy 1 use the old one.
        for name in ('_reconstruct', 'scalar'):
            safe.append((getattr(multiarray, name), f'{module}.{name}'))
    # HistoryBuffer pickles its statistics as getattr(HistoryBuffer, 'mean'), ...: allow exactly
    # that lookup under the name getattr, never getattr itself.
    for name in ('builtins.getattr', '__builtin__.getattr'):
        safe.append((_history_buffer_method, name))
    torch.serialization.add_safe_globals(safe)
    register_checkpoint_loaders()


def _history_buffer_method(owner, name: str):
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer and not name.startswith('_') and callable(
            getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'Refusing getattr({owner!r}, {name!r}) while loading a '
                                 f'checkpoint with weights_only=True')


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


class CheckpointDownloadError(RuntimeError):
    """A checkpoint URL could not be downloaded (offline, refused, HTTP error)."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is incomplete or damaged (e.g. a download cut short)."""


# torch.save's legacy (pre-1.6, non-zip) format starts with this pickled magic number.
_LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'


def is_url(filename: str) -> bool:
    return str(filename).startswith(('http://', 'https://'))


def hub_cache_path(url: str) -> str:
    """Where torch.hub (and mmengine's http loader) keep the download of ``url``."""
    import torch.hub
    return osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlparse(url).path))


def check_complete(path: str) -> None:
    """Raise CorruptCheckpointError unless ``path`` is a whole torch checkpoint file.

    torch.save writes a zip archive whose central directory is at the end and whose records
    carry CRCs: a truncated file has no directory, a damaged one fails a CRC. Files in the
    legacy format are recognised by their magic number (their truncation shows when unpickled).
    """
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            bad = str(err)
        if bad is None:
            return
        reason = f'damaged record {bad}'
    else:
        with open(path, 'rb') as f:
            if f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC:
                return
        reason = 'not a complete torch checkpoint (a download cut short, or not a checkpoint)'
    raise CorruptCheckpointError(f'{path} is corrupt: {reason} ({osp.getsize(path)} bytes)')


def download_checkpoint(url: str, hint: str = '') -> str:
    """The local copy of ``url`` in the torch hub cache, downloaded first if needed.

    Args:
        url (str): http(s) address of a checkpoint.
        hint (str): how else to give the file, appended to a download error (e.g. the
            ``--cfg-options`` that points a config at a local file).

    Raises:
        CheckpointDownloadError: offline, connection refused, HTTP error. The message names the
            URL, the cache folder and how to put the file there by hand.
        CorruptCheckpointError: the download is incomplete; it is removed from the cache.
    """
    from mmengine.dist import barrier, get_dist_info

    # As mmengine's http loader: rank 0 downloads, the others wait and then find it cached.
    rank, world_size = get_dist_info()
    if rank == 0:
        cached = _download_once(url, hint)
    if world_size > 1:
        barrier()
        if rank > 0:
            cached = _download_once(url, hint)
    return cached


def _download_once(url: str, hint: str) -> str:
    import torch.hub
    cached = hub_cache_path(url)
    if osp.isfile(cached):
        return cached
    os.makedirs(osp.dirname(cached), exist_ok=True)
    print_log(f'Downloading {url} to {cached}', logger='current')
    try:
        # writes to a temporary file, moved into place only once the transfer has ended
        torch.hub.download_url_to_file(url, cached, progress=False)
    except (URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, 'reason', None) or err
        raise CheckpointDownloadError(
            f'Cannot download {url}: {reason}.\nWithout access to it, download the file on another '
            f'machine and put it at {cached} (the torch hub cache: $TORCH_HOME/hub/checkpoints, '
            f'TORCH_HOME defaults to ~/.cache/torch)' + (f', or {hint}' if hint else '') + '.'
        ) from err
    try:
        check_complete(cached)
    except CorruptCheckpointError as err:
        os.remove(cached)
        raise CorruptCheckpointError(f'The download of {url} is corrupt and was removed from the '
                                     f'cache: {err}. Download it again.') from None
    return cached


def _is_weights_only_refusal(err: Exception) -> bool:
    """Whether torch's error is the weights-only unpickler refusing a global (not damage)."""
    return isinstance(err, pickle.UnpicklingError) and \
        'weights only' in str(err).lower().replace('_', ' ')


def _refusal(filename: str, path: str, err: Exception) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(
        f'{filename} holds Python objects that torch will not unpickle safely '
        f'(weights_only=True): {err}\nIf you trust the file, convert it once with '
        f'tools/model_converters/ravlt_release_to_mm.py {path} OUT.pth --unsafe-load '
        f'and use OUT.pth.')


def load_from_local_checked(filename: str, map_location=None) -> dict:
    """mmengine's loader of local files (``CheckpointLoader`` scheme ''), with torch's
    weights-only unpickler and no way around it: a file that carries code is refused with an
    UnpicklingError that says what to do.

    mmengine 0.10.7's own loader relies on torch's default (weights_only=True since torch
    2.6); the fork's (onedl-mmengine 0.10.12) retries a refused load with weights_only=False
    after a warning, which runs the code. Registered in its place by
    :func:`register_checkpoint_loaders`, it is what resume and ``load_from`` use on both stacks.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _is_weights_only_refusal(err):
            raise _refusal(filename, filename, err) from err
        raise


def register_checkpoint_loaders() -> None:
    """Make :func:`load_from_local_checked` mmengine's loader of local files, through
    ``CheckpointLoader.register_scheme`` (mmengine's public way to add or replace the loader
    of a path prefix; every load of the runner -- resume, ``load_from`` -- goes through it).

    URLs keep mmengine's loader: it calls torch.load with torch's default (weights-only) and
    no retry on both stacks.
    """
    try:  # mmengine.runner imports OpenCV; without it there is no runner to load for either
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:
        return
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_checked, force=True)


def load_checkpoint_file(filename: str, hint: str = '', logger: str = 'current') -> dict:
    """The checkpoint dict of a file or an http(s) URL (downloaded once, see above), unpickled
    by torch's weights-only unpickler only (on either stack, see load_from_local_checked).

    Raises FileNotFoundError for a missing file, CheckpointDownloadError for a failed download,
    pickle.UnpicklingError (with the way out) for a file that carries code, and
    CorruptCheckpointError for a file that cannot be read back whole, never a partial dict.
    """
    register_safe_globals()
    path = download_checkpoint(filename, hint) if is_url(filename) else filename
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}' + (f'; {hint}' if hint else ''))
    print_log(f'Loading checkpoint {path}', logger=logger)
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if _is_weights_only_refusal(err):  # a refusal, not damage
            raise _refusal(filename, path, err) from err
        failure = err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        failure = err
    what = f'{filename} (cached at {path}, now removed: load it again to download it ' \
        f'again)' if is_url(filename) else filename
    if is_url(filename):
        os.remove(path)
    raise CorruptCheckpointError(f'Checkpoint {what} is corrupt and was not loaded: '
                                 f'{type(failure).__name__}: {failure}') from failure


def load_backbone_checkpoint(model: torch.nn.Module, filename: str,
                             prefix: Optional[str] = None, logger: str = 'current') -> None:
    """Load a RAVLT checkpoint into ``model`` strictly; raise naming every key that does not fit.

    The output norms (``extra_norms``) are the only keys allowed to be missing: ImageNet
    checkpoints have none, so they start from their initialisation (logged).
    """
    hint = ('point the config at a local copy with --cfg-options '
            'model.backbone.init_cfg.checkpoint=PATH')
    if not is_url(filename) and not osp.isfile(filename):
        raise FileNotFoundError(
            f'RAVLT checkpoint not found: {filename}. Give the ImageNet weights of the variant '
            f'(a file, or their URL: see README, "Checkpoints"), or set '
            f'model.backbone.init_cfg=None to train from scratch.')
    checkpoint = load_checkpoint_file(filename, hint, logger)
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


def fit_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor],
                   name: str, what: str) -> None:
    """Raise ValueError naming every missing, unexpected and mis-shaped key of ``state_dict``
    (from ``name``) against ``model`` (described by ``what``)."""
    problems = format_report(check_state_dict(model, state_dict))
    if problems:
        raise ValueError(f'{name} does not fit {what}:\n{problems}')


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
    return zoo.weights_url(checkpoint) if checkpoint in names else None


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
