"""ravlt_dense: RAVLT backbones for mmdet 3.x and mmseg 1.x.

``RAVLT`` is registered in mmengine's root MODELS registry, which mmdet's and mmseg's registries
search as their parent: configs of either use ``custom_imports=dict(imports=['ravlt_dense'])``
(segmentation configs also import ``ravlt_dense.datasets`` for the label check).

Importing it checks the installed OpenMMLab packages first (either tested stack: OpenMMLab's
releases or the OneDL fork, see ``ravlt_dense.stack``).
"""
from .stack import check_dependencies, register_config_scopes

check_dependencies()

from .checkpoint import register_checkpoint_loaders, register_safe_globals  # noqa: E402
from .models import RAVLT  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ['RAVLT', '__version__']

register_safe_globals()
register_checkpoint_loaders()
register_config_scopes()
