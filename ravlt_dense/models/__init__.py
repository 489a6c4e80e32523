from .backbones import RAVLT
from .builder import build_model

__all__ = ['RAVLT', 'build_model']
