"""ravlt_dense: RAVLT backbones for mmdet 3.x and mmseg 1.x.

Importing the package registers ``RAVLT`` in the MODELS registry of mmdet and of mmseg (each
where installed), so configs use ``custom_imports=dict(imports=['ravlt_dense'])``.
"""
import importlib

from .checkpoint import register_safe_globals
from .models import RAVLT

from .version import __version__
__all__ = ['RAVLT', '__version__']


def _register(module) -> list:
    registered = []
    for scope in ('mmdet', 'mmseg'):
        try:
            registry = importlib.import_module(f'{scope}.registry').MODELS
        except ImportError:
            continue
        if module.__name__ not in registry.module_dict:
            registry.register_module(module=module)
        registered.append(scope)
    return registered


REGISTERED_SCOPES = _register(RAVLT)
register_safe_globals()
