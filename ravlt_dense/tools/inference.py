"""mmdet's and mmseg's inferencers for RAVLT models, and what the demos add to them.

* A model given by config + checkpoint, or by a zoo name (configs/metafile.yml) whose config and
  weights URL stand in for both, as mmdet's inferencers take their own model names (named as
  every tool names one: :mod:`ravlt_dense.tools.names`).
* Weights of ours or the authors' (mmdet 2.x / mmseg 0.x), by file, URL or zoo name, loaded by
  the loader of tools/test.py (``ravlt_dense.checkpoint.load_model_checkpoint``): converted on
  load and checked key by key.
* Class names from the checkpoint, else from the config's dataset (COCO's 80, ADE20K's 150, or a
  custom ``metainfo``), never a default of another dataset.
"""
import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmdet.apis import DetInferencer
from mmseg.apis import MMSegInferencer

from ravlt_dense import zoo
from ravlt_dense.checkpoint import load_model_checkpoint
from ravlt_dense.datasets.checks import dataset_metainfo
from ravlt_dense.tools.names import NamedModel, resolve_model


def default_device() -> str:
    """'cuda:0' when a GPU is there, else 'cpu' (mmdet's and mmseg's demos' default)."""
    import torch
    return 'cuda:0' if torch.cuda.is_available() else 'cpu'


def add_model_arguments(parser, example: str) -> None:
    """``MODEL INPUT... [--weights W]`` of a demo's command line (see resolve_demo_model)."""
    parser.add_argument('model', metavar='MODEL',
                        help=f'config file (e.g. {example}; then its CHECKPOINT: file or URL), '
                        'or a name of the model zoo (configs/metafile.yml)')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='image files and/or folders of images, after the CHECKPOINT (file '
                        'or URL) when MODEL is a config')
    parser.add_argument('--weights', help="checkpoint (file or URL) instead of the zoo's")


def resolve_demo_model(model: str, rest: Sequence[str], weights: Optional[str] = None,
                       need_inputs: bool = True) -> Tuple[NamedModel, List[str]]:
    """The model and the inputs of ``demo.py MODEL [CHECKPOINT] INPUT...``.

    ``MODEL`` is a config file, followed by its checkpoint, or a name of the model zoo, whose
    config and weights are used (``weights`` replaces a checkpoint in both cases). Raises
    FileNotFoundError for a missing config, ValueError for an unknown zoo name or missing
    arguments (inputs too, if ``need_inputs``); the checkpoint is checked where it is loaded.
    """
    rest = list(rest)
    named = resolve_model(model, weights)
    if named.from_zoo:
        named.checkpoint()  # ValueError: a zoo config without released weights
    elif named.weights is None:
        if not rest:
            raise ValueError(f'give the checkpoint of {model} before the images')
        named = dataclasses.replace(named, weights=rest.pop(0))
    if need_inputs and not rest:
        raise ValueError('no input images given')
    return named, rest


def config_dataset_meta(cfg) -> Optional[dict]:
    """Classes and palette the config's test set declares (metainfo, else its dataset type's);
    None when it names no classes.

    Args:
        cfg (Config): A detection or segmentation config (its ``default_scope`` picks the
            dataset registry).
    """
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    meta = dataset_metainfo(cfg, dataset)
    if not meta.get('classes'):
        return None
    return dict(classes=list(meta['classes']),
                palette=full_palette(meta['classes'], meta.get('palette')))


def full_palette(classes: Sequence[str], palette: Optional[Sequence] = None) -> List[list]:
    """``palette`` as a list of [R, G, B], or fixed random colours (seed 0) when it is missing
    or does not have one colour per class.

    Args:
        classes (Sequence[str]): The class names.
        palette (Sequence, optional): One (R, G, B) per class, or None.
    """
    if not palette or len(palette) != len(classes):
        palette = np.random.default_rng(0).integers(0, 256, (len(classes), 3)).tolist()
    return [list(c) for c in palette]


class ReleaseWeightsMixin:
    """Mixin for an mmengine inferencer (``class X(ReleaseWeightsMixin, DetInferencer)``).

    ``weights`` (a keyword argument) may be a file, an http(s) URL or a zoo name, ours or the
    authors' mmdet 2.x / mmseg 0.x checkpoint: it is loaded by :func:`load_model_checkpoint`
    (download, cache, conversion, clear errors) and refused with the names of the keys unless
    every key fits. mmengine's inferencer gets ``weights=None``, so that its own loader (which
    knows none of this) does not read the file; ``_load_weights_to_model``, the method mmengine
    lets subclasses override to load weights and meta, loads it instead.
    """

    def __init__(self, *args, weights: Optional[str] = None, **kwargs):
        self._release_weights = weights
        super().__init__(*args, weights=None, **kwargs)

    def _load_model_from_metafile(self, model: str):
        """A model name: one of RAVLT's zoo (config and weights from configs/metafile.yml),
        else one of the inferencer's own scope (mmdet's or mmseg's model names)."""
        model = zoo.current_name(model)  # an old zoo name: its model's name now
        if zoo.current_name(model) not in zoo.config_names():  # (an old zoo name too)
            return super()._load_model_from_metafile(model)
        from mmengine.config import Config
        from mmengine.utils import import_modules_from_strings
        named = resolve_model(model, self._release_weights)
        self._release_weights = named.checkpoint()
        cfg = Config.fromfile(named.config)
        if cfg.get('custom_imports'):  # mmseg's inferencer does not read them
            import_modules_from_strings(**cfg.custom_imports)
        return cfg, None

    def _load_weights_to_model(self, model, checkpoint, cfg):
        if self._release_weights is not None:
            loaded = load_model_checkpoint(model, self._release_weights,
                                           what='the model of its config')
            dataset_meta = loaded['meta'].get('dataset_meta') or config_dataset_meta(cfg)
            # the inferencer's own part: classes and palette into model.dataset_meta (it copies
            # the same, already checked, tensors once more)
            checkpoint = dict(state_dict=loaded['state_dict'],
                              meta=dict(dataset_meta=dataset_meta) if dataset_meta else {})
        super()._load_weights_to_model(model, checkpoint, cfg)


class RAVLTDetInferencer(ReleaseWeightsMixin, DetInferencer):
    """mmdet's ``DetInferencer`` taking RAVLT's zoo names and the release's checkpoints."""


class RAVLTSegInferencer(ReleaseWeightsMixin, MMSegInferencer):
    """mmseg's ``MMSegInferencer`` taking RAVLT's zoo names and the release's checkpoints,
    its drawings labelled with the model's classes.

    ``MMSegInferencer`` labels its drawings with the classes passed to it (Cityscapes' by
    default) whatever the checkpoint says: here the model's own classes and palette are used.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        meta = self.model.dataset_meta
        classes = list(meta['classes'])
        self.visualizer.set_dataset_meta(classes=classes,
                                         palette=full_palette(classes, meta.get('palette')))
