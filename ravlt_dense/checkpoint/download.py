"""Checkpoints given by http(s) URL: downloaded once into the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, where mmengine and torch.hub put them too), checked whole.

A failed download and a corrupt (e.g. truncated) file each raise an error that says what to do;
a corrupt download is removed from the cache rather than loaded.
"""
import http.client
import os
import os.path as osp
import zipfile
from urllib.error import URLError
from urllib.parse import urlparse

from mmengine.logging import print_log


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
