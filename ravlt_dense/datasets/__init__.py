"""Data-pipeline additions for mmseg (importing registers them in mmseg's TRANSFORMS)."""
from .transforms import LoadCheckedAnnotations

__all__ = ['LoadCheckedAnnotations']
