from .backbones import RAVLT

__all__ = ['RAVLT']
