"""The model zoo: ``configs/metafile.yml`` (OpenMMLab's metafile format) read in one place.

The metafile lists every config with the paper's parameters, FLOPs and metrics and the
authors' weights; tools, tests and the README take these figures from here. Configs without
trained weights (RAVLT under DINO and Mask2Former: no one has released such weights) are listed
too, with our parameter count only: no Weights, no paper figures, no Results.

The configs and the metafile come with the package: a wheel carries them in
``ravlt_dense/.mim/`` (as mmdet and mmseg carry theirs), a clone has them beside the package.

Weights URLs point at the authors' Hugging Face repository. ``RAVLT_ZOO_URL_ROOT`` replaces
that root (e.g. a mirror or a local server): with ``RAVLT_ZOO_URL_ROOT=http://host/dir`` the
weights of ``mask-rcnn_ravlt-s_fpn_amp-1x_coco`` come from
``http://host/dir/maskrcnn_s_1x_12_epoch.pth``.

Names follow mmdet's and mmseg's config names (a model's name is its config's file name); the
names the zoo had before still resolve, with a warning naming the new one:
``configs/renamed.yml`` maps each to its model (:func:`current_name`).
"""
import logging
import os
import os.path as osp
import re
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

_PACKAGE = osp.dirname(osp.abspath(__file__))
# Where configs/ and model-index.yml are: the wheel's copy, else the clone the package is in
# (an editable install's .mim only links to the clone's folders, for `mim`).
_MIM_CONFIGS = osp.join(_PACKAGE, '.mim', 'configs')
ROOT = osp.join(_PACKAGE, '.mim') if osp.isdir(_MIM_CONFIGS) and not osp.islink(_MIM_CONFIGS) \
    else osp.dirname(_PACKAGE)
METAFILE = osp.join(ROOT, 'configs', 'metafile.yml')
# Old zoo names -> current ones: beside the metafile, which keeps OpenMMLab's fields only.
RENAMED = osp.join(ROOT, 'configs', 'renamed.yml')
URL_ROOT = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main'
URL_ROOT_ENV = 'RAVLT_ZOO_URL_ROOT'


@lru_cache(maxsize=None)
def _read(metafile: str) -> Tuple[dict, ...]:
    from mmengine.fileio import load
    if not osp.isfile(metafile):
        raise FileNotFoundError(
            f'Model zoo metafile not found: {metafile}. A wheel of ravlt_dense carries it in '
            f'ravlt_dense/.mim/configs/, a clone in configs/: reinstall the package '
            f'(`pip install ravlt_dense` or `pip install -e .` in a clone).')
    return tuple(load(metafile)['Models'])


def models(metafile: Optional[str] = None) -> Dict[str, dict]:
    """Every model of the metafile (default: configs/metafile.yml) by name, in file order."""
    return {m['Name']: m for m in _read(osp.abspath(metafile or METAFILE))}


def get(name: str, metafile: Optional[str] = None) -> dict:
    """The metafile entry of the model ``name`` (or of its old name, see :func:`current_name`);
    ValueError listing the names if unknown."""
    zoo = models(metafile)
    name = current_name(name) if name not in zoo else name
    if name not in zoo:
        raise ValueError(f'Unknown model {name!r}: the model zoo ({metafile or METAFILE}) has '
                         f'{", ".join(zoo)}')
    return zoo[name]


@lru_cache(maxsize=None)
def renamed() -> Dict[str, str]:
    """Old zoo names -> the current ones (``configs/renamed.yml``; empty without that file)."""
    from mmengine.fileio import load
    return dict(load(RENAMED)['Renamed']) if osp.isfile(RENAMED) else {}


@lru_cache(maxsize=None)
def _warn_renamed(old: str, new: str) -> None:
    """One warning per old name and process, naming the new one."""
    from mmengine.logging import print_log
    print_log(f"RAVLT zoo: '{old}' is now named '{new}' (configs/renamed.yml)",
              logger='current', level=logging.WARNING)


def current_name(name: str) -> str:
    """The zoo's name for ``name``: the name an old zoo name was given when the configs took
    mmdet's and mmseg's names (logged once per name), else ``name`` itself. Call it where a
    name is taken before asking whether it is in the zoo."""
    new = renamed().get(name) if isinstance(name, str) else None
    if new is None:
        return name
    _warn_renamed(name, new)
    return new


def config_names(metafile: Optional[str] = None) -> List[str]:
    """Names of the models that have a config (the detectors and segmentors)."""
    return [name for name, m in models(metafile).items() if m.get('Config')]


def config_path(name: str, metafile: Optional[str] = None) -> str:
    """Absolute path of the config of ``name`` (metafile paths are relative to ``ROOT``)."""
    config = get(name, metafile).get('Config')
    if not config:
        raise ValueError(f'Model {name!r} of the zoo has no config (an ImageNet backbone)')
    return config if osp.isabs(config) else osp.join(ROOT, config)


def has_weights(name: str, metafile: Optional[str] = None) -> bool:
    """Whether trained weights of ``name`` exist (False for the configs-only rows)."""
    return bool(get(name, metafile).get('Weights'))


def weights_url(name: str, metafile: Optional[str] = None) -> str:
    """URL of the weights of ``name``, under ``$RAVLT_ZOO_URL_ROOT`` when that is set;
    ValueError for a config without trained weights."""
    url = get(name, metafile).get('Weights')
    if not url:
        raise ValueError(f'Model {name!r} of the zoo is a config without trained weights: '
                         f'no one has released any; train it or pass a checkpoint of your own')
    root = os.environ.get(URL_ROOT_ENV)
    if root and url.startswith(URL_ROOT + '/'):
        url = root.rstrip('/') + url[len(URL_ROOT):]
    return url


def metrics(name: str, metafile: Optional[str] = None) -> Dict[str, float]:
    """The paper's metrics of ``name`` ({'box AP': 49.8, 'mask AP': 44.6}, {'mIoU': ...})."""
    return {k: v for result in get(name, metafile).get('Results') or ()
            for k, v in result['Metrics'].items()}


def paper_figures(name: str, metafile: Optional[str] = None) -> Optional[dict]:
    """The paper's params (M), FLOPs (G) and the input size (H, W) its FLOPs are counted at;
    None for a config the paper does not report (the configs without trained weights)."""
    meta = get(name, metafile)['Metadata']
    if 'Parameters' not in meta:
        return None
    return dict(params=meta['Parameters'] / 1e6, flops=meta['FLOPs'] / 1e9,
                shape=size_of(meta['Input Size']))


def size_of(text: str) -> List[int]:
    """``[H, W]`` of a metafile size, written ``(H,W)`` as mmseg's metafiles write Crop Size
    (a string: openmim's ``mim search`` reads list values as text)."""
    found = re.fullmatch(r'\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*', str(text))
    if not found:
        raise ValueError(f'metafile size {text!r}: expected "(H,W)", e.g. "(800,1280)"')
    return [int(found.group(1)), int(found.group(2))]


def measured(name: str, metafile: Optional[str] = None) -> dict:
    """Our build's exact parameter count and FLOPs (modules only, and traced) of ``name``;
    the FLOPs are None where they were not counted (the configs without trained weights)."""
    found = get(name, metafile)['Metadata'].get('Measured')
    if not found:
        raise ValueError(f'Model {name!r} of the zoo has no measured figures')
    flops, traced = found.get('FLOPs'), found.get('FLOPs Traced')
    return dict(params=found['Parameters'], flops=flops and flops / 1e9,
                flops_traced=traced and traced / 1e9)


def name_of_config(config: str, metafile: Optional[str] = None) -> Optional[str]:
    """The zoo name of a config file, None for configs outside the zoo (the quick starts)."""
    target = osp.realpath(config)
    for name in config_names(metafile):
        if osp.realpath(config_path(name, metafile)) == target:
            return name
    return None


def variants(metafile: Optional[str] = None) -> List[str]:
    """Short names of the RAVLT variants ('t', 's', 'b', 'l'): those of the zoo's ImageNet
    backbones, in file order."""
    return [m['Metadata']['Variant'] for m in models(metafile).values()
            if m['Metadata'].get('Variant')]


def variant(name: str, metafile: Optional[str] = None) -> str:
    """The RAVLT variant ('t', 's', 'b', 'l') of the zoo model ``name``: an ImageNet backbone's
    own, or that of the backbone a detector or segmentor starts from.

    Args:
        name (str): A model of the zoo; ValueError if unknown.
        metafile (str, optional): Another metafile than configs/metafile.yml.
    """
    meta = get(name, metafile)['Metadata']
    return meta.get('Variant') or get(meta['Backbone'], metafile)['Metadata']['Variant']


def backbone_params(arch: str, metafile: Optional[str] = None) -> int:
    """Parameters of the dense RAVLT backbone of variant ``arch`` (incl. the output norms)."""
    return get(f'ravlt-{arch}_in1k', metafile)['Metadata']['Backbone Parameters']

