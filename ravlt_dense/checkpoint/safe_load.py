"""Unpickling checkpoints with torch's weights-only unpickler only, on either stack.

Checkpoint files are pickles; a pickle can carry code. torch >= 2.6 refuses globals it does not
know; the plain-data types that mmengine's and the release's files hold are allowed here
(:func:`register_safe_globals`), and mmengine's loader of local files is replaced by one that
never falls back to unpickling code (:func:`register_checkpoint_loaders`). ``import
ravlt_dense`` does both, for the whole process: every local checkpoint that mmengine loads
afterwards (``load_from``, ``--resume``, any model's) is unpickled weights-only.
"""
import argparse
import collections
import os
import os.path as osp
import pickle
import pickletools
import zipfile

import torch
from mmengine.logging import print_log

from .download import CorruptCheckpointError, download_checkpoint, is_url


def register_safe_globals() -> None:
    """Allow the plain-data types found in mmengine and the release's checkpoints.

    torch >= 2.6 unpickles checkpoints with ``weights_only=True``; mmengine 0.10.7 files hold
    its message hub (HistoryBuffer with numpy arrays) and the release's hold argparse
    namespaces, so resuming or loading them would fail. These types carry data, not code.

    Each is registered as an (object, 'dotted.name') pair, the name being the one a pickle
    refers to it by: the fork's mmengine (onedl-mmengine 0.10.12) loads inside
    ``torch.serialization.safe_globals([HistoryBuffer, np.ndarray, ...])``, whose exit removes
    those very objects from torch's registered set (a set difference); a pair is another
    element of that set and survives.
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


def _history_buffer_method(owner, name: str):
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer and not name.startswith('_') and callable(
            getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'Refusing getattr({owner!r}, {name!r}) while loading a '
                                 f'checkpoint with weights_only=True')


def _is_weights_only_refusal(err: Exception) -> bool:
    """Whether torch's error is the weights-only unpickler refusing a global (not damage)."""
    return isinstance(err, pickle.UnpicklingError) and \
        'weights only' in str(err).lower().replace('_', ' ')


def _refusal(filename: str, path: str, err: Exception) -> pickle.UnpicklingError:
    if _holds_ravlt_weights(path):
        way_out = (f'If you trust the file, convert it once with tools/model_converters/'
                   f'ravlt_release_to_mm.py {path} OUT.pth --unsafe-load and use OUT.pth.')
    else:
        way_out = ('ravlt_dense loads checkpoints weights-only in this whole process. If you '
                   'trust the file, allow the types the error names with '
                   'torch.serialization.add_safe_globals([...]) before loading, or save its '
                   'weights once into a plain file: torch.save({"state_dict": torch.load('
                   f'"{path}", weights_only=False)["state_dict"]}}, "OUT.pth").')
    return pickle.UnpicklingError(
        f'{filename} holds Python objects that torch will not unpickle safely '
        f'(weights_only=True): {err}\n{way_out}')


def _holds_ravlt_weights(path: str) -> bool:
    """Whether the pickle of a torch zip file names RAVLT's backbone keys (the release's
    files and ours have ``...layers.0.RoPE.angle``), read without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith('/data.pkl'))
            ops = pickletools.genops(archive.read(pkl))
            return any(isinstance(arg, str) and arg.endswith('layers.0.RoPE.angle')
                       for _, arg, _ in ops)
    except Exception:  # not a zip, no pickle, damaged: nothing says it is RAVLT's
        return False


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
