"""ravlt_dense: RAVLT backbones for mmdet 3.x and mmseg 1.x.

``RAVLT`` is registered in mmengine's root MODELS registry, which mmdet's and mmseg's registries
search as their parent: configs of either use ``custom_imports=dict(imports=['ravlt_dense'])``
(segmentation configs also import ``ravlt_dense.datasets`` for the label check).
"""
from .checkpoint import register_safe_globals
from .models import RAVLT
from .version import __version__

__all__ = ['RAVLT', '__version__']

register_safe_globals()
