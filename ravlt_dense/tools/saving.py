"""Saving training checkpoints that survive a kill, a full disk or a crash of the machine, and
resuming from them (loading weights into a model is ``ravlt_dense.checkpoint``'s).

* ``AtomicLocalBackend`` (mmengine file backend ``'atomic_local'``): writes a file under a
  temporary name, flushes it to disk and only then renames it into place, so that a checkpoint
  file is whole or absent under its final name. mmengine's ``CheckpointHook`` writes
  ``last_checkpoint`` after the ``.pth``, so it never names a partial file either.
  :func:`save_checkpoints_atomically` selects it through the hook's ``backend_args``.
* :func:`check_resume`: before the runner starts, the checkpoint a resume would load is checked.
  A damaged last checkpoint of the work dir (cut short, zero-filled, a damaged record) is
  skipped with a warning for the newest earlier one that loads; a damaged checkpoint given by
  path is an error that names the newest good one beside it.
"""
import os
import os.path as osp
import pickle
import re
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple, Union

import mmengine
import torch
from mmengine.fileio import LocalBackend, register_backend

from ravlt_dense.checkpoint import CorruptCheckpointError, register_safe_globals
from ravlt_dense.tools.cli import add_custom_import

ATOMIC_BACKEND = 'atomic_local'

# The names mmengine's CheckpointHook gives checkpoints by default (filename_tmpl).
_DEFAULT_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')

# torch.save's legacy (pre-1.6, non-zip) format starts with this pickled magic number.
_LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic: the data goes to a temporary file
    beside the target (``.NAME.tmp<pid>``), is flushed to disk (fsync) and then renamed over the
    target (``os.replace``). A write cut off by an exception, a kill, a full disk or a crash
    leaves the previous file (or none) under the target name, never a partial one.

    Select it for checkpoints with ``default_hooks.checkpoint.backend_args=dict(backend=
    'atomic_local')`` (tools/train.py does, see :func:`save_checkpoints_atomically`).
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        self._replace(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        self._replace(filepath, obj.encode(encoding))

    @staticmethod
    def _replace(filepath: Union[str, Path], data: bytes) -> None:
        filepath = str(filepath)
        folder, name = osp.split(osp.abspath(filepath))
        mmengine.mkdir_or_exist(folder)
        tmp = osp.join(folder, f'.{name}.tmp{os.getpid()}')
        try:
            with open(tmp, 'wb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the data on disk before the name points at it
            os.replace(tmp, filepath)
        except BaseException:
            if osp.lexists(tmp):
                os.remove(tmp)
            raise
        try:  # the rename itself on disk (best effort: not every file system allows it)
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def save_checkpoints_atomically(cfg) -> None:
    """Make the config's ``CheckpointHook`` write through :class:`AtomicLocalBackend`
    (``backend_args=dict(backend='atomic_local')``), and import this module, which registers
    it, in ``custom_imports``: the config the runner dumps into the work dir trains
    the same way with mmdet's or mmseg's own tools.

    Left alone: a config without the hook, one that chose its storage (``backend_args`` or
    ``file_client_args`` of the hook) and an ``out_dir`` that is no local folder (``s3://``...).
    """
    from mmengine.hooks import CheckpointHook
    from mmengine.registry import HOOKS
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args'):
        return
    hook_type = hook.get('type', 'CheckpointHook')
    hook_cls = HOOKS.get(hook_type) if isinstance(hook_type, str) else hook_type
    if not (isinstance(hook_cls, type) and issubclass(hook_cls, CheckpointHook)):
        return
    out_dir = str(hook.get('out_dir') or cfg.get('work_dir') or '')
    if '://' in out_dir:
        return
    hook['backend_args'] = dict(backend=ATOMIC_BACKEND)
    add_custom_import(cfg, __name__)


def checkpoint_damage(path: str) -> Optional[str]:
    """Why the checkpoint file ``path`` cannot be loaded, or None when it loads.

    Checked for real but cheaply: every record of torch's zip archive is read and its CRC
    compared (a truncated file has no central directory, a damaged one fails a CRC), then the
    file is unpickled by torch's weights-only unpickler with its tensors memory-mapped (not
    read). A file the weights-only unpickler refuses (it carries code) is not damaged: None,
    the loader explains the refusal.
    """
    try:
        size = osp.getsize(path)
        with open(path, 'rb') as f:
            head = f.read(4096)
    except OSError as err:
        return f'it cannot be read ({err.strerror or err})'
    if size == 0:
        return 'it is empty (0 bytes): the save was cut off before any data was written'
    zipped = zipfile.is_zipfile(path)
    if not zipped and not head.startswith(_LEGACY_MAGIC):
        if not head.strip(b'\0'):
            return (f'it is zero-filled ({size} bytes, starting with {len(head)} zero bytes): '
                    'its data never reached the disk (a crash or power loss after the save)')
        if head.startswith(b'PK\x03\x04'):
            return (f'it is cut short ({size} bytes, the end of the zip archive that torch.save '
                    'writes is missing): the save was interrupted (a killed process, a full '
                    'disk)')
        return f'it is not a torch checkpoint ({size} bytes, no zip archive and no torch header)'
    if zipped:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            return f'its zip archive is damaged ({err})'
        if bad is not None:
            return f'its record {bad} is damaged (CRC mismatch)'
    register_safe_globals()
    try:
        torch.load(path, map_location='cpu', weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as err:
        if 'weights only' in str(err).lower().replace('_', ' '):
            return None  # a refusal, not damage: the loader says what to do
        return f'it cannot be unpickled ({err})'
    except Exception as err:  # noqa: BLE001  torch raises RuntimeError, EOFError, ValueError...
        return f'it cannot be loaded ({type(err).__name__}: {err})'
    return None


def _earlier_checkpoints(path: str, folder: Optional[str] = None) -> List[str]:
    """The checkpoints saved before ``path`` in its folder, newest first.

    mmengine numbers them (``epoch_12.pth``, ``iter_4000.pth`` or the hook's ``filename_tmpl``):
    files named as ``path`` with a smaller number. Without ``path`` (an empty
    ``last_checkpoint``), every ``epoch_N.pth`` / ``iter_N.pth`` of ``folder``.
    """
    name = osp.basename(path) if path else ''
    folder = osp.dirname(path) if path else folder
    numbered = list(re.finditer(r'\d+', name))
    if numbered:
        last = numbered[-1]
        pattern = re.compile('^' + re.escape(name[:last.start()]) + r'(\d+)'
                             + re.escape(name[last.end():]) + '$')
        limit = int(last.group())
    else:
        pattern, limit = _DEFAULT_NAME, None
    try:
        names = os.listdir(folder or '.')
    except OSError:
        return []
    found = []
    for other in names:
        match = pattern.match(other)
        if match and other != name and (limit is None or int(match.group(1)) < limit):
            found.append((int(match.group(1)), osp.join(folder, other)))
    return [p for _, p in sorted(found, reverse=True)]


def _first_loadable(candidates: List[str]) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The first of ``candidates`` that loads, and the damaged ones before it with why."""
    damaged = []
    for candidate in candidates:
        reason = checkpoint_damage(candidate)
        if reason is None:
            return candidate, damaged
        damaged.append((candidate, reason))
    return None, damaged


def _listing(damaged: List[Tuple[str, str]]) -> str:
    return ''.join(f'\n  {path}: {reason}' for path, reason in damaged)


def check_resume(cfg) -> List[str]:
    """Check the checkpoint that resuming (``cfg.resume``) will load, before the runner starts.

    * ``load_from`` set (``--resume PATH``): a damaged local file raises CorruptCheckpointError
      naming it, why, and the newest earlier checkpoint beside it that loads (or that none
      does). Missing files and URLs are left to mmengine's loader.
    * auto (``--resume``): when the checkpoint named by ``WORK_DIR/last_checkpoint`` is damaged
      or missing (or the file names none), ``cfg.load_from`` is set to the newest earlier
      checkpoint beside it that loads, and the returned warnings say so; CorruptCheckpointError
      when none does. Without ``last_checkpoint`` mmengine starts from scratch, as it says.

    Returns:
        list[str]: Warnings for the log (logged by the caller once the runner's logger exists).
    """
    if not cfg.get('resume'):
        return []
    explicit = cfg.get('load_from')
    if explicit:
        if '://' in str(explicit) or not osp.isfile(explicit):
            return []
        reason = checkpoint_damage(explicit)
        if reason is None:
            return []
        good, damaged = _first_loadable(_earlier_checkpoints(explicit))
        way = (f'The newest checkpoint before it that loads is {good}: resume from it with '
               f'--resume {good} (training from there again).' if good else
               f'No checkpoint saved before it in {osp.dirname(osp.abspath(explicit))} loads: '
               'give another checkpoint, or train from the start without --resume.')
        also = f'\nDamaged as well:{_listing(damaged)}' if damaged else ''
        raise CorruptCheckpointError(f'Cannot resume from {explicit}: {reason}.\n{way}{also}')

    work_dir = cfg.get('work_dir') or '.'
    save_file = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(save_file):
        return []
    with open(save_file) as f:
        last = f.read().strip()
    if '://' in last:
        return []
    if not last:
        reason = f'{save_file} is empty (its write was cut off)'
    elif not osp.isfile(last):
        reason = f'{save_file} names {last}, which does not exist'
    else:
        damage = checkpoint_damage(last)
        if damage is None:
            return []  # mmengine resumes from it
        reason = f'{save_file} names {last}, which is damaged: {damage}'
    good, damaged = _first_loadable(_earlier_checkpoints(last, work_dir))
    if good is None:
        folder = osp.dirname(last) if last else work_dir
        listing = f' Damaged:{_listing(damaged)}\n' if damaged else ' There is none.\n'
        raise CorruptCheckpointError(
            f'Cannot resume: {reason}, and no checkpoint saved before it in {folder} '
            f'loads.{listing}Resume from a checkpoint of your choice with --resume PATH, or '
            f'train from the start without --resume.')
    cfg.load_from = good
    also = f' Also damaged, skipped:{_listing(damaged)}' if damaged else ''
    return [f'{reason}. Resuming from {good} instead, the newest checkpoint before it that '
            f'loads: the training since it is done again.{also}']
