"""Checkpoints by URL (a loopback server stands in for Hugging Face): download once into the
torch hub cache, load from the cache offline, convert the authors' mmdet 2.x files on load, and
name the URL, the cache and the way out when a download fails or arrives truncated."""
import os
import pickle
import re

import pytest
import torch
from mmengine.config import Config

from ravlt_dense.checkpoint import (
    CheckpointDownloadError,
    CorruptCheckpointError,
    load_checkpoint_file,
    load_model_checkpoint,
)
from ravlt_dense.models import build_model
from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import QUICKSTART, TINY_ARCH, pretrained, randomised, release_imagenet_checkpoint


def equal_backbones(a, b):
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items()
               if not k.startswith('extra_norms.'))


def test_imagenet_weights_download_once_then_load_offline(file_server, torch_home):
    source = randomised(RAVLT(TINY_ARCH))
    torch.save(release_imagenet_checkpoint(source), file_server.root / 'RAVLT_T.pth')
    url = f'{file_server.url}/RAVLT_T.pth'
    model = pretrained(url)
    model.init_weights()
    assert equal_backbones(model, source)
    assert os.listdir(torch_home) == ['RAVLT_T.pth']  # the hub cache, no temporary left over
    file_server.stop()
    again = pretrained(url)
    again.init_weights()  # from the cache: the server is gone
    assert equal_backbones(again, source)


def expected_download_error(url, cached):
    return (rf'Cannot download {re.escape(url)}: .*\nWithout access to it, download the file '
            rf'on another machine and put it at {re.escape(str(cached))} \(the torch hub cache')


def test_missing_file_names_url_cache_and_local_option(file_server, torch_home):
    url = f'{file_server.url}/RAVLT_S.pth'
    with pytest.raises(CheckpointDownloadError, match=expected_download_error(
            url, torch_home / 'RAVLT_S.pth')) as err:
        pretrained(url).init_weights()
    assert 'File not found' in str(err.value)  # the server's 404 reason
    assert 'model.backbone.init_cfg.checkpoint=PATH' in str(err.value)
    assert os.listdir(torch_home) == []


def test_refused_connection_names_url_cache_and_local_option(refused_url, torch_home):
    with pytest.raises(CheckpointDownloadError, match=expected_download_error(
            refused_url, torch_home / 'RAVLT_T.pth')) as err:
        pretrained(refused_url).init_weights()
    assert 'refused' in str(err.value).lower()
    assert 'model.backbone.init_cfg.checkpoint=PATH' in str(err.value)


def test_truncated_download_is_corrupt_and_not_cached(file_server, torch_home):
    # Content-Length announces the whole file, half arrives: urllib and torch.hub accept that
    # silently (they move the half file into the cache), the check after the download does not.
    torch.save(release_imagenet_checkpoint(RAVLT(TINY_ARCH)),
               file_server.root / 'RAVLT_T.truncated.pth')
    url = f'{file_server.url}/RAVLT_T.truncated.pth'
    model = pretrained(url)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CorruptCheckpointError, match=rf'The download of {re.escape(url)} is '
                       r'corrupt and was removed from the cache: .*is corrupt: not a complete '
                       r'torch checkpoint .*Download it again'):
        model.init_weights()
    assert os.listdir(torch_home) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_corrupt_file_in_the_cache_or_on_disk_is_reported_not_loaded(tmp_path, torch_home):
    whole = tmp_path / 'whole.pth'
    torch.save(release_imagenet_checkpoint(RAVLT(TINY_ARCH)), whole)
    data = whole.read_bytes()
    local = tmp_path / 'cut.pth'
    local.write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=rf'Checkpoint {re.escape(str(local))} is '
                       r'corrupt and was not loaded'):
        load_checkpoint_file(str(local))
    assert local.exists()  # the user's own file is left alone
    # a damaged file already in the cache (e.g. written by another tool): removed when it fails
    torch_home.mkdir(parents=True)
    (torch_home / 'RAVLT_T.pth').write_bytes(data[:len(data) // 2])
    url = 'http://127.0.0.1:9/RAVLT_T.pth'
    with pytest.raises(CorruptCheckpointError, match=r'now removed: load it again to download'):
        load_checkpoint_file(url)
    assert os.listdir(torch_home) == []


class Opaque:
    """An object torch's weights_only unpickler refuses: it could run code."""


def test_file_with_code_objects_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save(dict(state_dict=RAVLT(TINY_ARCH).state_dict(), meta=dict(thing=Opaque())), path)
    with pytest.raises(pickle.UnpicklingError, match=rf'(?s){re.escape(str(path))} holds Python '
                       r'objects that torch will not unpickle safely.*Opaque.*'
                       r'ravlt_release_to_mm\.py .* --unsafe-load'):
        load_checkpoint_file(str(path))
    assert path.exists()  # not mistaken for a corrupt file


@pytest.fixture(scope='module')
def quickstart_cfg():
    cfg = Config.fromfile(QUICKSTART)
    assert cfg.model.backbone.init_cfg is None
    return cfg


def test_model_loader_loads_an_mmdet2_release_checkpoint_by_url(file_server, torch_home,
                                                               quickstart_cfg):
    torch.manual_seed(1)
    source = build_model(quickstart_cfg)
    release = dict(state_dict=source.state_dict(),
                   meta=dict(CLASSES=('a', 'b', 'c', 'd'), epoch=12, mmdet_version='2.25.0'))
    torch.save(release, file_server.root / 'maskrcnn_t_1x_12_epoch.pth')
    url = f'{file_server.url}/maskrcnn_t_1x_12_epoch.pth'
    torch.manual_seed(2)
    model = build_model(quickstart_cfg)
    loaded = load_model_checkpoint(model, url, what=f'the model of {QUICKSTART}')  # test.py's
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    assert loaded['meta'] == dict(dataset_meta=dict(classes=('a', 'b', 'c', 'd')))  # converted
    # the same strict check as the converter: a key short names itself, nothing is evaluated
    del release['state_dict']['roi_head.mask_head.conv_logits.bias']
    torch.save(release, file_server.root / 'short.pth')
    with pytest.raises(ValueError, match=rf'(?s)Checkpoint {re.escape(file_server.url)}/short'
                       rf'\.pth does not fit the model of {QUICKSTART}:\n1 missing key\(s\): '
                       r'roi_head\.mask_head\.conv_logits\.bias'):
        load_model_checkpoint(model, f'{file_server.url}/short.pth',
                              what=f'the model of {QUICKSTART}')
