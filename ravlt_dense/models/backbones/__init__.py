from .ravlt import RAVLT

__all__ = ['RAVLT']
