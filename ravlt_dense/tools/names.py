"""One way to name a model, for every tool, demo, inferencer and deployment tool.

A model is named by

* a config file (``configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py``; its weights, if
  any, given apart; a zoo config's file under the path it had before stands for the new one),
* a name of RAVLT's model zoo (``mask-rcnn_ravlt-s_fpn_amp-1x_coco``, configs/metafile.yml): its
  config and, unless other weights are given, the authors' weights; a name the zoo had before
  (configs/renamed.yml) stands for the model it names now,
* or a config of an installed OpenMMLab package as ``_base_`` lists name them
  (``mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py``), to compare
  RAVLT with the packages' own models.

:func:`resolve_model` reads the name once per command; what it returns (:class:`NamedModel`)
is passed on, never the name again.
"""
import importlib.util
import os.path as osp
from dataclasses import dataclass
from typing import Optional

from ravlt_dense import zoo

PACKAGE_SEPARATOR = '::'


@dataclass(frozen=True)
class NamedModel:
    """A model as a command line named it.

    Attributes:
        name (str): The name as given.
        config (str): Its config file.
        weights (str, optional): Its checkpoint (file, URL or zoo name): the one given, else the
            zoo's weights; None when there are none (a config file alone, or a zoo config that
            no one has released weights for).
        zoo_name (str, optional): Its name in RAVLT's zoo, where it has one.
        from_zoo (bool): Whether it was named by a zoo name (rather than by a config file).
    """
    name: str
    config: str
    weights: Optional[str] = None
    zoo_name: Optional[str] = None
    from_zoo: bool = False

    def checkpoint(self) -> str:
        """``weights``, or ValueError saying how to give them."""
        if self.weights:
            return self.weights
        if self.zoo_name:
            zoo.weights_url(self.zoo_name)  # raises: a config without released weights
        raise ValueError(f'{self.name} is a config: give its checkpoint (a file or URL) too')


def resolve_model(name: str, weights: Optional[str] = None) -> NamedModel:
    """The config (and weights) of a model ``name``: a config file, a zoo name or a
    ``package::path`` config; ``weights`` replaces the zoo's.

    Raises:
        FileNotFoundError: a config file, or a package's config, that does not exist.
        ValueError: an unknown zoo name (the message lists the zoo), a package that is not
            installed.
    """
    name = str(name)
    if PACKAGE_SEPARATOR in name:
        return NamedModel(name, package_config(name), weights)
    if osp.isfile(name) or name.endswith('.py'):
        # a missing file: FileNotFoundError, unless it is a zoo config's path from before
        config = name if osp.isfile(name) else renamed_config(name)
        return NamedModel(name, config, weights, zoo.name_of_config(config))
    current = zoo.current_name(name)  # an old zoo name: its model's name now (logged)
    config = zoo.config_path(current)  # ValueError naming the zoo's models
    if weights is None and zoo.has_weights(current):
        weights = zoo.weights_url(current)
    return NamedModel(name, config, weights, current, from_zoo=True)


def renamed_config(path: str) -> str:
    """The file of a zoo config given by the path it had before the configs took mmdet's and
    mmseg's names (its file name is an old zoo name), with the zoo's warning naming the new one;
    FileNotFoundError for any other missing path."""
    old = osp.splitext(osp.basename(path))[0]
    if old not in zoo.renamed():
        raise FileNotFoundError(f'config not found: {path}')
    return zoo.config_path(zoo.current_name(old))


def package_config(name: str) -> str:
    """The file of ``package::path``: a config that an installed OpenMMLab package ships in its
    ``.mim/configs`` (where mmengine's ``_base_`` finds it too)."""
    package, _, path = name.partition(PACKAGE_SEPARATOR)
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or spec.origin is None:
        raise ValueError(f"{name}: no installed package '{package}' to read it from "
                         '(package::path names a config of an installed OpenMMLab package, '
                         'e.g. mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py)')
    root = osp.join(osp.dirname(spec.origin), '.mim', 'configs')
    file = osp.join(root, path)
    if not osp.isfile(file):
        raise FileNotFoundError(f"{name}: {package} has no config '{path}' (looked in {root}; "
                                f"the names are those of {package}'s configs/)")
    return file
